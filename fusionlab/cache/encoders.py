"""What goes into the cache and how it is encoded: caption text and, on request, the images.

A *source* is the JSON-able description of an entry's input, stored in the index. It is hashed
into the entry key, and it is all `fusionlab cache verify --repair` needs to recompute an entry.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from fusionlab.artifacts import sha256_file
from fusionlab.cache.build import EncodeFn
from fusionlab.cache.store import read_index
from fusionlab.errors import PipelineError

TEXT_FIELDS = ("pooled", "tokens", "mask")


def text_sources(captions: dict[str, str]) -> dict[str, dict]:
    return {sample_id: {"text": text} for sample_id, text in captions.items()}


def text_encode_fn(encoder) -> EncodeFn:
    """pooled [B,D], tokens [B,L,W] and mask [B,L] for a batch of caption sources."""

    def encode(sources: list[dict]) -> dict[str, torch.Tensor]:
        return dict(zip(TEXT_FIELDS, encoder.encode_text([s["text"] for s in sources]), strict=True))

    return encode


def image_sources(paths: dict[str, tuple[str, str]]) -> dict[str, dict]:
    """id -> {ir, vi, sha256}; the content hash makes an edited image a stale entry."""
    out = {}
    for sample_id, (ir, vi) in paths.items():
        out[sample_id] = {"ir": str(Path(ir).resolve()), "vi": str(Path(vi).resolve()),
                          "sha256": hashlib.sha256((sha256_file(ir) + sha256_file(vi)).encode()).hexdigest()}
    return out


def image_encode_fn(encoder) -> EncodeFn:
    """CLIP image features of the IR and the VIS image of each source ([B,D] each)."""
    from fusionlab.data.io import read_ir, read_vi

    def encode(sources: list[dict]) -> dict[str, torch.Tensor]:
        irs = [torch.from_numpy(read_ir(s["ir"])[0])[None] for s in sources]
        vis = [torch.from_numpy(read_vi(s["vi"])[0]).permute(2, 0, 1) for s in sources]
        out = {}
        for name, images in (("ir", irs), ("vi", vis)):
            feats: list[torch.Tensor | None] = [None] * len(images)
            by_size: dict[tuple, list[int]] = {}
            for j, img in enumerate(images):  # one encoder call per image size
                by_size.setdefault(tuple(img.shape), []).append(j)
            for rows in by_size.values():
                with torch.no_grad():
                    batch = torch.stack([images[j] for j in rows]).to(encoder.mean.device)
                    for j, f in zip(rows, encoder.encode_image(batch), strict=True):
                        feats[j] = f
            out[name] = torch.stack(feats)
        return out

    return encode


def encoder_for(cache_dir: str | Path):
    """Load the CLIP model recorded in a cache's index (`extra.clip`, relative to the cache folder)
    and check it is the one that built the cache."""
    from fusionlab.models.text import ClipEncoder

    cache_dir = Path(cache_dir)
    index = read_index(cache_dir)
    rel = index.get("extra", {}).get("clip")
    if not rel:
        raise PipelineError(f"embedding cache '{cache_dir}' does not record its CLIP model; rerun stage 3 to rebuild it")
    clip_dir = (cache_dir / rel).resolve()
    encoder = ClipEncoder.from_config(clip_dir)
    if encoder.fingerprint() != index["encoder"]:
        raise PipelineError(f"the CLIP model in '{clip_dir}' is not the one that built '{cache_dir}'; "
                            "rerun stage 3 to rebuild the cache")
    return encoder


def encode_fn_for(cache_dir: str | Path) -> EncodeFn:
    """The encode function matching a cache's kind (text or image), for repairs."""
    kind = read_index(Path(cache_dir))["kind"]
    encoder = encoder_for(cache_dir)
    return text_encode_fn(encoder) if kind == "text" else image_encode_fn(encoder)
