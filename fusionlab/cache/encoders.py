"""What goes into the cache and how it is encoded: the caption text.

A *source* is the JSON-able description of an entry's input, stored in the index. It is hashed
into the entry key, and it is all `fusionlab cache verify --repair` needs to recompute an entry.
"""

from __future__ import annotations

from pathlib import Path

import torch

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
    """The encode function matching a cache's kind, for repairs."""
    kind = read_index(Path(cache_dir))["kind"]
    if kind != "text":
        raise PipelineError(f"embedding cache '{cache_dir}' is of kind '{kind}', which fusionlab no longer builds; "
                            "delete it (stage 3 caches caption text only)")
    return text_encode_fn(encoder_for(cache_dir))
