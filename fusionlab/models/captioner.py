"""Depth-informed captions for IR/VIS pairs (LDNF III-C; TGIF Component II).

LDNF captions each image from the image *and* its predicted depth, then concatenates the IR
and VIS captions before the CLIP text encoder. Three captioners share one interface,
`caption(batch) -> list[{"caption_ir", "caption_vi", "caption"}]`:

- `depth-template` (default, offline, deterministic): reads the stage-1 depth nets' output and
  simple image evidence (warm blobs in IR by connected components, edge texture in VIS, dataset
  boxes, brightness for day/night) and writes sentences with near/mid/far and left/centre/right;
- `blip`: a transformers BLIP / BLIP-2 model (hub id or local folder, through the weights
  resolver), conditioned on depth by prompting with the depth summary or by appending it;
- `file`: the user's own captions (JSONL or CSV by sample id; with no path, the dataset's
  `captions.jsonl`).
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from fusionlab.config import Section
from fusionlab.errors import ConfigError, DataError

NUMBER_WORDS = {1: "a", 2: "two", 3: "three", 4: "four"}
PLURALS = {"person": "people", "people": "people", "bus": "buses", "pedestrian": "pedestrians"}


class CaptionerConfig(Section):
    """How captions are made (`model.captioner` in the stage config)."""

    kind: Literal["depth-template", "blip", "file"] = "depth-template"
    depth_ir: str | None = None  # stage-1 depth net folders (depth-template, blip)
    depth_vis: str | None = None
    near_m: float = Field(12.0, gt=0)  # closer than this: "near range"
    far_m: float = Field(30.0, gt=0)  # farther than this: "far range"
    warm_sigma: float = Field(2.0, gt=0)  # IR blobs: brighter than mean + warm_sigma * std
    min_blob_fraction: float = Field(0.001, gt=0, lt=1)  # smallest blob, as a fraction of the image
    max_objects: int = Field(2, gt=0)  # objects named per caption (nearest first), keeps CLIP's 77 tokens
    night_below: float = Field(0.25, gt=0, lt=1)  # VIS mean luminance under this reads as night
    separator: str = " "  # between the IR and the VIS caption
    # blip
    pretrained: str | None = None  # BLIP / BLIP-2 hub id or local folder
    depth_mode: Literal["prompt", "append"] = "append"
    max_new_tokens: int = Field(30, gt=0)
    # file
    path: str | None = None  # JSONL/CSV with id + caption (or caption_ir + caption_vi); null = dataset captions


def join_captions(ir: str, vi: str, separator: str = " ") -> str:
    """The caption CLIP encodes: the IR and VIS captions concatenated (LDNF III-C)."""
    parts = [p.strip() for p in (ir, vi) if p and p.strip()]
    return separator.join(p if p.endswith(".") else p + "." for p in parts)


def _record(ir: str, vi: str, separator: str) -> dict:
    return {"caption_ir": ir, "caption_vi": vi, "caption": join_captions(ir, vi, separator)}


# ---------------------------------------------------------------------------- words


def _count_phrase(n: int, noun: str) -> str:
    if n == 1:
        return ("an " if noun[0] in "aeiou" else "a ") + noun
    plural = " ".join(noun.split()[:-1] + [_plural(noun.split()[-1])])
    return f"{NUMBER_WORDS.get(n, 'several')} {plural}"


def _plural(word: str) -> str:
    if word in PLURALS:
        return PLURALS[word]
    return word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")


def range_word(metres: float, near_m: float, far_m: float) -> str:
    return "near" if metres < near_m else ("far" if metres > far_m else "mid")


def side_word(cx: float) -> str:
    """Horizontal position (0..1) -> left / centre / right thirds."""
    return "on the left" if cx < 1 / 3 else ("on the right" if cx > 2 / 3 else "in the centre")


def _group(objects: list[dict], limit: int) -> str:
    """'two warm people at near range on the left, a car at mid range on the right'."""
    ranked = sorted(objects, key=lambda o: o["depth"])
    groups = Counter((o["noun"], o["range"], o["side"]) for o in ranked)
    order = list(dict.fromkeys((o["noun"], o["range"], o["side"]) for o in ranked))
    text = ", ".join(f"{_count_phrase(groups[g], g[0])} at {g[1]} range {g[2]}" for g in order[:limit])
    rest = sum(groups[g] for g in order[limit:])
    return text + (f" and {NUMBER_WORDS.get(rest, str(rest)) if rest > 1 else 'one'} more" if rest else "")


# ---------------------------------------------------------------------------- image evidence


def warm_blobs(ir: np.ndarray, sigma: float, min_fraction: float) -> list[dict]:
    """Connected components of pixels brighter than mean + sigma*std: the warm targets of IR."""
    from scipy import ndimage

    thr = float(ir.mean() + sigma * ir.std())
    labels, n = ndimage.label(ir > thr)
    if n == 0:
        return []
    h, w = ir.shape
    out = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        mask = labels[sl] == k
        area = int(mask.sum())
        if area < min_fraction * h * w:
            continue
        ys, xs = np.nonzero(mask)
        out.append({"slice": sl, "mask": mask, "area": area, "cx": float(xs.mean() + sl[1].start) / w,
                    "height": sl[0].stop - sl[0].start, "width": sl[1].stop - sl[1].start})
    return out


def _box_slice(box: np.ndarray, h: int, w: int) -> tuple[slice, slice]:
    cx, cy, bw, bh = box
    x0, x1 = int(max(0, (cx - bw / 2) * w)), int(min(w, np.ceil((cx + bw / 2) * w)))
    y0, y1 = int(max(0, (cy - bh / 2) * h)), int(min(h, np.ceil((cy + bh / 2) * h)))
    return slice(y0, max(y1, y0 + 1)), slice(x0, max(x1, x0 + 1))


def _contrast(img: np.ndarray, sl: tuple[slice, slice]) -> float:
    """Mean inside a box minus the mean of a ring around it (signed)."""
    h, w = img.shape
    pad_y, pad_x = max(2, (sl[0].stop - sl[0].start) // 2), max(2, (sl[1].stop - sl[1].start) // 2)
    outer = (slice(max(0, sl[0].start - pad_y), min(h, sl[0].stop + pad_y)),
             slice(max(0, sl[1].start - pad_x), min(w, sl[1].stop + pad_x)))
    inner_sum, inner_n = img[sl].sum(), img[sl].size
    ring_n = img[outer].size - inner_n
    if ring_n <= 0:
        return 0.0
    return float(inner_sum / inner_n - (img[outer].sum() - inner_sum) / ring_n)


class DepthTemplateCaptioner:
    """Deterministic captions from the stage-1 depth nets plus image evidence; no weights needed."""

    def __init__(self, depth_ir: torch.nn.Module, depth_vis: torch.nn.Module, cfg: CaptionerConfig,
                 classes: list[str] | None = None):
        self.depth_ir, self.depth_vis = depth_ir.eval(), depth_vis.eval()
        self.cfg = cfg
        self.classes = list(classes or [])

    @torch.no_grad()
    def depth(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted metric depth of the IR and the VIS image ([B,1,H,W] each)."""
        device = next(self.depth_ir.parameters()).device
        return (self.depth_ir(batch["ir"].to(device)).float().cpu(),
                self.depth_vis(batch["vi"].to(device)).float().cpu())

    def _class(self, index: float) -> str:
        i = int(index)
        return self.classes[i] if 0 <= i < len(self.classes) else "object"

    def _range(self, depth: np.ndarray, sl, mask=None) -> tuple[str, float]:
        values = depth[sl][mask] if mask is not None else depth[sl]
        metres = float(np.median(values)) if values.size else float(np.median(depth))
        return range_word(metres, self.cfg.near_m, self.cfg.far_m), metres

    def _background(self, depth: np.ndarray) -> str:
        """Depth of the upper third (the background): 'distant background (about 80 m)'."""
        top = float(np.median(depth[: max(1, depth.shape[0] // 3)]))
        word = {"near": "close", "mid": "mid-range", "far": "distant"}[range_word(top, self.cfg.near_m, self.cfg.far_m)]
        return f"{word} background at {top:.0f} m"

    def caption_one(self, ir: np.ndarray, vi: np.ndarray, d_ir: np.ndarray, d_vi: np.ndarray,
                    boxes: np.ndarray) -> dict:
        """ir [H,W], vi [3,H,W] in [0,1]; depths [H,W] metres; boxes [N,5] (class, cx, cy, w, h)."""
        import kornia

        cfg = self.cfg
        h, w = ir.shape
        gray = 0.299 * vi[0] + 0.587 * vi[1] + 0.114 * vi[2]
        night = float(gray.mean()) < cfg.night_below
        time = "night" if night else "day"
        ir_objects, vi_objects = [], []
        covered = np.zeros((h, w), bool)
        for box in boxes:
            sl = _box_slice(box[1:], h, w)
            covered[sl] = True
            name, side = self._class(box[0]), side_word(float(box[1]))
            warm = _contrast(ir, sl) > 0.04
            seen = abs(_contrast(gray, sl)) > 0.04
            r_ir, m_ir = self._range(d_ir, sl)
            r_vi, m_vi = self._range(d_vi, sl)
            ir_objects.append({"noun": ("warm " if warm else "faint ") + name, "range": r_ir, "side": side, "depth": m_ir})
            vi_objects.append({"noun": name if seen else f"barely visible {name}", "range": r_vi, "side": side,
                               "depth": m_vi})
        for blob in warm_blobs(ir, cfg.warm_sigma, cfg.min_blob_fraction):
            if covered[blob["slice"]][blob["mask"]].mean() > 0.5:
                continue  # already described by a box
            shape = "upright" if blob["height"] > 1.5 * blob["width"] else ("wide" if blob["width"] > 1.5 * blob["height"] else "compact")
            r, m = self._range(d_ir, blob["slice"], blob["mask"])
            ir_objects.append({"noun": f"warm {shape} object", "range": r, "side": side_word(blob["cx"]), "depth": m})
        ir_parts = [_group(ir_objects, cfg.max_objects)] if ir_objects else ["no warm targets"]
        ir_parts += [self._background(d_ir), time]
        # VIS texture: Sobel edge strength and where it concentrates
        with torch.autocast("cpu", enabled=False):  # evidence in float32 under bf16-mixed too
            edges = kornia.filters.sobel(torch.from_numpy(gray)[None, None].float())[0, 0].numpy()
        strength = float(edges.mean())
        texture = "rich texture" if strength > 0.08 else ("moderate texture" if strength > 0.03 else "little texture")
        thirds = [edges[:, int(k * w / 3):int((k + 1) * w / 3)].mean() for k in range(3)]
        where = ["on the left", "in the centre", "on the right"][int(np.argmax(thirds))]
        vi_parts = [_group(vi_objects, cfg.max_objects)] if vi_objects else []
        vi_parts += [f"{texture} {where}", "dark night" if night else "bright daylight"]
        return _record("thermal image: " + "; ".join(ir_parts), "visible image: " + "; ".join(vi_parts), cfg.separator)

    def caption(self, batch: dict) -> list[dict]:
        d_ir, d_vi = self.depth(batch)
        boxes = batch.get("boxes")
        out = []
        for i in range(len(batch["id"])):
            own = boxes[boxes[:, 0] == i][:, 1:].numpy() if boxes is not None else np.zeros((0, 5), np.float32)
            out.append(self.caption_one(batch["ir"][i, 0].numpy(), batch["vi"][i].numpy(),
                                        d_ir[i, 0].numpy(), d_vi[i, 0].numpy(), own))
        return out

    def depth_summary(self, record: dict, modality: str) -> str:
        """The depth-bearing part of a template caption (objects with ranges), for BLIP."""
        text = record["caption_ir" if modality == "ir" else "caption_vi"]
        return text.split(": ", 1)[-1].split(";")[0]


# ---------------------------------------------------------------------------- BLIP


class BlipCaptioner:
    """transformers BLIP / BLIP-2 captions, conditioned on the depth-template summary."""

    def __init__(self, cfg: CaptionerConfig, template: DepthTemplateCaptioner, *, key: str = "model.captioner.pretrained"):
        from transformers import AutoConfig, AutoProcessor, Blip2ForConditionalGeneration, BlipForConditionalGeneration

        from fusionlab import weights

        if cfg.pretrained is None:
            raise ConfigError(f"'{key}' is required for the blip captioner: a hub id such as "
                              "Salesforce/blip-image-captioning-base or a local folder (or use kind: depth-template)")
        resolved = weights.resolve(cfg.pretrained, what="BLIP captioner", key=key)
        with weights.loading("BLIP captioner", key, cfg.pretrained):
            config = AutoConfig.from_pretrained(resolved)
            cls = Blip2ForConditionalGeneration if config.model_type == "blip-2" else BlipForConditionalGeneration
            self.model = cls.from_pretrained(resolved).eval().requires_grad_(False)
            self.processor = AutoProcessor.from_pretrained(resolved)
        self.is_blip2 = config.model_type == "blip-2"
        self.cfg, self.template = cfg, template

    def _prompt(self, summary: str, modality: str) -> str:
        what = "an infrared image" if modality == "ir" else "a photo"
        return f"Question: describe {what} with {summary}. Answer:" if self.is_blip2 else f"{what} with {summary},"

    @torch.no_grad()
    def _generate(self, images: torch.Tensor, prompts: list[str] | None) -> list[str]:
        """Captions for a batch; prompted generation runs one image at a time (no padded prompts)."""
        pixels = [(img.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8) for img in images]
        device = next(self.model.parameters()).device
        jobs = [(pixels, None)] if prompts is None else [([p], [t]) for p, t in zip(pixels, prompts, strict=True)]
        texts: list[str] = []
        for imgs, text in jobs:
            inputs = self.processor(images=imgs, text=text, return_tensors="pt")
            inputs = {k: v.to(device) for k, v in inputs.items()}
            ids = self.model.generate(**inputs, max_new_tokens=self.cfg.max_new_tokens)
            texts += [t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)]
        return texts

    def caption(self, batch: dict) -> list[dict]:
        records = self.template.caption(batch)
        images = {"ir": batch["ir"].expand(-1, 3, -1, -1), "vi": batch["vi"]}
        out = {}
        for modality in ("ir", "vi"):
            summaries = [self.template.depth_summary(r, modality) for r in records]
            if self.cfg.depth_mode == "prompt":
                out[modality] = self._generate(images[modality], [self._prompt(s, modality) for s in summaries])
            else:
                texts = self._generate(images[modality], None)
                out[modality] = [f"{t}; {s}" if t else s for t, s in zip(texts, summaries, strict=True)]
        return [_record(a, b, self.cfg.separator) for a, b in zip(out["ir"], out["vi"], strict=True)]


# ---------------------------------------------------------------------------- file


class FileCaptioner:
    """Captions the user wrote (or the dataset's own captions.jsonl when no path is given)."""

    def __init__(self, cfg: CaptionerConfig):
        self.cfg = cfg
        from fusionlab.data.captions_file import read_caption_rows

        self.table = read_caption_rows(cfg.path, missing_hint="check the config key model.captioner.path") \
            if cfg.path else None

    def caption(self, batch: dict) -> list[dict]:
        out = []
        for i, sample_id in enumerate(batch["id"]):
            if self.table is None:
                text = batch.get("caption", [None] * len(batch["id"]))[i]
                if not text:
                    raise DataError(f"sample '{sample_id}' has no caption in the dataset's captions.jsonl; "
                                    "set model.captioner.path to a captions file or use kind: depth-template")
                out.append({"caption_ir": "", "caption_vi": "", "caption": text})
                continue
            row = self.table.get(sample_id)
            if row is None:
                raise DataError(f"captions file '{self.cfg.path}' has no caption for sample '{sample_id}'; "
                                "add a row for it (captions are matched by file stem)")
            if "caption" in row and not ({"caption_ir", "caption_vi"} & set(row)):
                out.append({"caption_ir": "", "caption_vi": "", "caption": row["caption"]})
            else:
                ir, vi = row.get("caption_ir", ""), row.get("caption_vi", "")
                rec = _record(ir, vi, self.cfg.separator)
                out.append({**rec, "caption": row.get("caption", rec["caption"])})
        return out


def build_captioner(cfg: CaptionerConfig, *, classes: list[str] | None = None, load_depth=None):
    """The configured captioner; `load_depth(path)` loads a stage-1 depth net (injectable for tests)."""
    if cfg.kind == "file":
        return FileCaptioner(cfg)
    if not cfg.depth_ir or not cfg.depth_vis:
        raise ConfigError(f"model.captioner.kind '{cfg.kind}' needs the stage-1 depth nets: set "
                          "model.captioner.depth_ir and depth_vis (e.g. ${depth.outputs.depth_ir})")
    if load_depth is None:
        from fusionlab.models.depth import load_depth_estimator as load_depth
    template = DepthTemplateCaptioner(load_depth(cfg.depth_ir), load_depth(cfg.depth_vis), cfg, classes)
    return template if cfg.kind == "depth-template" else BlipCaptioner(cfg, template)
