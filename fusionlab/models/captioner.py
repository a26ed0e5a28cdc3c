"""Captions for IR/VIS pairs from what a deployed system has (LDNF III-C; TGIF's detection map).

LDNF captions each image from the image *and* its predicted depth, then concatenates the IR
and VIS captions before the CLIP text encoder; TGIF adds a detector's output (category and
position of objects). A captioner reads exactly that: `deployed_inputs(batch)` keeps the sample
id and the two images and drops everything else a dataset may carry (ground-truth boxes, depth,
scene descriptions, the dataset's own captions), so no label can reach the text. Depth comes from
the stage-1 nets, objects from an optional configured detector. Three captioners share one
interface, `caption(inputs) -> list[{"caption_ir", "caption_vi", "caption"}]`:

- `depth-template` (default, offline, deterministic, no weights): rules over the predicted depth,
  warm blobs in IR (connected components), the detector's boxes, edge texture and brightness;
  writes sentences with near/mid/far and left/centre/right. A stand-in for LDNF's learned
  captioner [22], not that network;
- `blip`: a transformers BLIP / BLIP-2 model (hub id or local folder, through the weights
  resolver), conditioned on the template's depth/object summary by prompting or by appending it;
- `file`: the user's own captions (JSONL or CSV by sample id), e.g. Text2Pixels' human prompts.
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


DEPLOYED_INPUTS = ("id", "ir", "vi")  # all a captioner may read of a batch


def deployed_inputs(batch: dict) -> dict:
    """The part of a batch a deployed system has: the sample id and the IR and VIS images."""
    return {k: batch[k] for k in DEPLOYED_INPUTS}


class CaptionerConfig(Section):
    """How captions are made (`model.captioner` in the stage config)."""

    kind: Literal["depth-template", "blip", "file"] = "depth-template"
    depth_ir: str | None = None  # stage-1 depth net folders; null = captions without depth words
    depth_vis: str | None = None
    detector: str | None = None  # detector whose predictions name objects (TGIF's detection map): a
    #                              fusionlab detector/ folder or an imported release (yolov8n); null = none
    detector_conf: float = Field(0.25, gt=0, lt=1)  # keep detections at least this confident
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
    path: str | None = None  # JSONL/CSV with id + caption (or caption_ir + caption_vi)


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
    """'two warm people at near range on the left, a car on the right' (range only with depth)."""
    ranked = sorted(objects, key=lambda o: o["order"])
    groups = Counter((o["noun"], o["range"], o["side"]) for o in ranked)
    order = list(dict.fromkeys((o["noun"], o["range"], o["side"]) for o in ranked))
    text = ", ".join(f"{_count_phrase(groups[g], g[0])}{f' at {g[1]} range' if g[1] else ''} {g[2]}"
                     for g in order[:limit])
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


def _normalised_boxes(dets: torch.Tensor, h: int, w: int) -> np.ndarray:
    """Detector output [n,6] (x1, y1, x2, y2, conf, class) in pixels -> [n,5] (class, cx, cy, w, h) in 0..1."""
    d = dets.float().cpu().numpy()
    if not len(d):
        return np.zeros((0, 5), np.float32)
    cx, cy = (d[:, 0] + d[:, 2]) / 2 / w, (d[:, 1] + d[:, 3]) / 2 / h
    bw, bh = (d[:, 2] - d[:, 0]) / w, (d[:, 3] - d[:, 1]) / h
    return np.stack([d[:, 5], cx, cy, bw, bh], axis=1).astype(np.float32)


class DepthTemplateCaptioner:
    """Deterministic captions from predicted depth, a detector's boxes and image evidence; no weights.

    `depth_ir` / `depth_vis` (stage-1 nets) and `detector` (ultralytics DetectionModel) are
    optional: without depth the sentences carry no ranges, without a detector only warm blobs
    name objects.
    """

    def __init__(self, depth_ir: torch.nn.Module | None, depth_vis: torch.nn.Module | None, cfg: CaptionerConfig,
                 detector: torch.nn.Module | None = None):
        self.depth_ir = depth_ir.eval() if depth_ir is not None else None
        self.depth_vis = depth_vis.eval() if depth_vis is not None else None
        self.detector = detector.eval() if detector is not None else None
        self.cfg = cfg
        self.names = [str(detector.names[i]) for i in sorted(detector.names)] if detector is not None else []

    @torch.no_grad()
    def depth(self, inputs: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Predicted metric depth of the IR and the VIS image ([B,1,H,W] each), or (None, None)."""
        if self.depth_ir is None or self.depth_vis is None:
            return None, None
        device = next(self.depth_ir.parameters()).device
        return (self.depth_ir(inputs["ir"].to(device)).float().cpu(),
                self.depth_vis(inputs["vi"].to(device)).float().cpu())

    @torch.no_grad()
    def detections(self, inputs: dict) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The detector's boxes on each IR and each VIS image ([n,5] class, cx, cy, w, h; empty without one)."""
        n = len(inputs["id"])
        if self.detector is None:
            empty = [np.zeros((0, 5), np.float32)] * n
            return empty, empty
        from fusionlab.models.detector import DetectorConfig, predict

        device = next(self.detector.parameters()).device
        cfg = DetectorConfig(conf=self.cfg.detector_conf)
        out = []
        for key in ("ir", "vi"):
            images = inputs[key].to(device).float()
            h, w = images.shape[-2:]
            out.append([_normalised_boxes(d, h, w) for d in predict(self.detector, images, cfg)])
        return out[0], out[1]

    def _class(self, index: float) -> str:
        i = int(index)
        return self.names[i] if 0 <= i < len(self.names) else "object"

    def _range(self, depth: np.ndarray | None, sl, mask=None) -> tuple[str | None, float]:
        if depth is None:
            return None, 0.0
        values = depth[sl][mask] if mask is not None else depth[sl]
        metres = float(np.median(values)) if values.size else float(np.median(depth))
        return range_word(metres, self.cfg.near_m, self.cfg.far_m), metres

    def _background(self, depth: np.ndarray) -> str:
        """Depth of the upper third (the background): 'distant background (about 80 m)'."""
        top = float(np.median(depth[: max(1, depth.shape[0] // 3)]))
        word = {"near": "close", "mid": "mid-range", "far": "distant"}[range_word(top, self.cfg.near_m, self.cfg.far_m)]
        return f"{word} background at {top:.0f} m"

    def _objects(self, boxes: np.ndarray, image: np.ndarray, depth: np.ndarray | None, ir: bool,
                 covered: np.ndarray) -> list[dict]:
        h, w = image.shape
        objects = []
        for box in boxes:
            sl = _box_slice(box[1:], h, w)
            covered[sl] = True
            name = self._class(box[0])
            if ir:
                noun = ("warm " if _contrast(image, sl) > 0.04 else "faint ") + name
            else:
                noun = name if abs(_contrast(image, sl)) > 0.04 else f"barely visible {name}"
            word, metres = self._range(depth, sl)
            objects.append({"noun": noun, "range": word, "side": side_word(float(box[1])),
                            "order": metres if depth is not None else -float(box[3] * box[4])})
        return objects

    def caption_one(self, ir: np.ndarray, vi: np.ndarray, d_ir: np.ndarray | None, d_vi: np.ndarray | None,
                    ir_boxes: np.ndarray, vi_boxes: np.ndarray) -> dict:
        """ir [H,W], vi [3,H,W] in [0,1]; depths [H,W] metres or None; boxes [N,5] (class, cx, cy, w, h)
        predicted by the detector on the IR and on the VIS image."""
        import kornia

        from fusionlab.data.colour import rgb_to_y

        cfg = self.cfg
        h, w = ir.shape
        gray = rgb_to_y(torch.from_numpy(vi)[None])[0, 0].numpy()
        night = float(gray.mean()) < cfg.night_below
        covered = np.zeros((h, w), bool)
        ir_objects = self._objects(ir_boxes, ir, d_ir, True, covered)
        vi_objects = self._objects(vi_boxes, gray, d_vi, False, np.zeros((h, w), bool))
        for blob in warm_blobs(ir, cfg.warm_sigma, cfg.min_blob_fraction):
            if covered[blob["slice"]][blob["mask"]].mean() > 0.5:
                continue  # already described by a detection
            shape = "upright" if blob["height"] > 1.5 * blob["width"] else ("wide" if blob["width"] > 1.5 * blob["height"] else "compact")
            word, metres = self._range(d_ir, blob["slice"], blob["mask"])
            ir_objects.append({"noun": f"warm {shape} object", "range": word, "side": side_word(blob["cx"]),
                               "order": metres if d_ir is not None else -blob["area"] / (h * w)})
        ir_parts = [_group(ir_objects, cfg.max_objects)] if ir_objects else ["no warm targets"]
        ir_parts += ([self._background(d_ir)] if d_ir is not None else []) + ["night" if night else "day"]
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
        inputs = deployed_inputs(batch)
        d_ir, d_vi = self.depth(inputs)
        ir_boxes, vi_boxes = self.detections(inputs)
        return [self.caption_one(inputs["ir"][i, 0].numpy(), inputs["vi"][i].numpy(),
                                 None if d_ir is None else d_ir[i, 0].numpy(), None if d_vi is None else d_vi[i, 0].numpy(),
                                 ir_boxes[i], vi_boxes[i])
                for i in range(len(inputs["id"]))]

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
        inputs = deployed_inputs(batch)
        records = self.template.caption(inputs)
        images = {"ir": inputs["ir"].expand(-1, 3, -1, -1), "vi": inputs["vi"]}
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
    """Captions the user wrote, read by sample id from `path` (never from the dataset's own labels)."""

    def __init__(self, cfg: CaptionerConfig):
        self.cfg = cfg
        from fusionlab.data.captions_file import read_caption_rows

        if not cfg.path:
            raise ConfigError("model.captioner.kind 'file' needs model.captioner.path: a JSONL/CSV of captions "
                              "written for this data (a dataset's captions.jsonl may be ground truth: the synthetic "
                              "scenes write theirs from the scene description)")
        self.table = read_caption_rows(cfg.path, missing_hint="check the config key model.captioner.path")

    def caption(self, batch: dict) -> list[dict]:
        out = []
        for sample_id in batch["id"]:  # the id is all it reads
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


def load_caption_detector(spec: str, key: str = "model.captioner.detector"):
    """The detector whose predictions name objects: a fusionlab detector/ folder or an imported release."""
    from fusionlab import weights
    from fusionlab.models.detector import load_detector
    from fusionlab.models.yolo_import import refuse_pickle

    path = weights.ultralytics_source(spec).resolve(what="caption detector", key=key)
    refuse_pickle(path, key)
    return load_detector(path)


def build_captioner(cfg: CaptionerConfig, *, load_depth=None, load_detector=None):
    """The configured captioner; `load_depth(path)` / `load_detector(spec)` are injectable for tests."""
    if cfg.kind == "file":
        return FileCaptioner(cfg)
    if bool(cfg.depth_ir) != bool(cfg.depth_vis):
        raise ConfigError("model.captioner: set both depth_ir and depth_vis (the stage-1 nets, e.g. "
                          "${depth.outputs.depth_ir}) or neither (captions without depth words)")
    if load_depth is None:
        from fusionlab.models.depth import load_depth_estimator as load_depth
    depth = (load_depth(cfg.depth_ir), load_depth(cfg.depth_vis)) if cfg.depth_ir else (None, None)
    detector = (load_detector or load_caption_detector)(cfg.detector) if cfg.detector else None
    template = DepthTemplateCaptioner(*depth, cfg, detector)
    return template if cfg.kind == "depth-template" else BlipCaptioner(cfg, template)
