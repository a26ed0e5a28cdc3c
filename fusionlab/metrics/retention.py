"""Object contrast retention: how much of each object's contrast the fused image keeps from the
modality that sees it, split by which modality that is (`fusionlab.metrics.visibility`).

Per object k, on gray images 0..255 (BT.601, as every fusion metric here):
- region O_k: its instance-mask pixels where a mask exists, else its box;
- surround S_k: the ring of pixels within r_k of O_k (chessboard distance) that belong to no
  object, with r_k = max(MIN_RING, ceil(RING_FRACTION * sqrt(box width * box height)));
- contrast c(I) = |mean_O(I) - mean_S(I)|;
- reference c_ref: c(IR) for IR-only objects, c(VIS) for VIS-only ones, max(c(IR), c(VIS)) for
  objects both see (the fused image should keep the better view), for objects neither sees and
  where visibility is unknown;
- retention = c(fused) / c_ref; the object is kept when retention >= KEEP_THRESHOLD.
Objects whose c_ref is below MIN_SOURCE_CONTRAST (no contrast worth keeping) or with no pixel in
O or S are excluded and counted. The mean is over retentions capped at RETENTION_CAP, so an
object that fusion happens to over-brighten cannot outweigh the others.
Full definition and rationale: docs/metrics.md, "Object contrast retention".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from fusionlab.errors import DataError
from fusionlab.metrics.gray import to_gray255
from fusionlab.metrics.visibility import GROUPS, group_of

KEEP_THRESHOLD = 0.5
MIN_SOURCE_CONTRAST = 3.0  # gray levels: below this the source barely shows the object
RING_FRACTION = 0.25
MIN_RING = 2  # pixels; at least the reach of the IR optics' blur
RETENTION_CAP = 2.0
_CODES = {"both": 0, "ir_only": 1, "vis_only": 2, "neither": 3, None: 4}  # 4 = unknown


def _gray(x) -> torch.Tensor:
    """[B,H,W] gray 0..255 as given (what to_gray255 returns), or images converted by to_gray255."""
    if isinstance(x, torch.Tensor) and x.ndim == 3 and x.dtype == torch.float64:
        return x
    return to_gray255(x)


def ring_width(box_w: float, box_h: float) -> int:
    return max(MIN_RING, math.ceil(RING_FRACTION * math.sqrt(max(box_w, 0.0) * max(box_h, 0.0))))


def object_contrasts(images: list[torch.Tensor], instances: torch.Tensor | None = None,
                     boxes: torch.Tensor | None = None, n_objects: int | None = None) -> torch.Tensor:
    """|mean(object) - mean(surround)| of every object in each gray [H,W] image: [len(images), N].

    instances: [H,W] ids (k+1 = object k); boxes: [N,4] (x1, y1, x2, y2) in pixels, used where no
    mask is given. N = n_objects, or the number of boxes / the largest id. NaN where an object has
    no pixel (e.g. its id is absent from the mask) or no surround (it fills its neighbourhood).
    """
    H, W = images[0].shape
    if instances is not None:
        instances = torch.as_tensor(instances).reshape(H, W).long()
        n = n_objects if n_objects is not None else int(instances.max()) if instances.numel() else 0
        occupied = instances > 0
    elif boxes is not None:
        boxes = torch.as_tensor(boxes).double().reshape(-1, 4)
        n = n_objects if n_objects is not None else boxes.shape[0]
        pix = _box_pixels(boxes, H, W)
        occupied = torch.zeros(H, W, dtype=torch.bool)
        for k in range(pix.shape[0]):
            y0, y1, x0, x1 = pix[k].tolist()
            occupied[y0:y1, x0:x1] = True
    else:
        raise DataError("object contrast needs an instance mask or boxes for the image")
    out = torch.full((len(images), n), float("nan"), dtype=torch.float64)
    for k in range(n):
        if instances is not None:
            inside_full = instances == k + 1
            if not inside_full.any():
                continue
            ys, xs = torch.nonzero(inside_full, as_tuple=True)
            y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        else:
            if k >= boxes.shape[0]:
                continue
            y0, y1, x0, x1 = pix[k].tolist()
            if y1 <= y0 or x1 <= x0:
                continue
        r = ring_width(x1 - x0, y1 - y0)
        wy0, wy1, wx0, wx1 = max(y0 - r, 0), min(y1 + r, H), max(x0 - r, 0), min(x1 + r, W)
        if instances is not None:
            inside = inside_full[wy0:wy1, wx0:wx1]
        else:
            inside = torch.zeros(wy1 - wy0, wx1 - wx0, dtype=torch.bool)
            inside[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0] = True
        grown = F.max_pool2d(inside[None, None].double(), 2 * r + 1, stride=1, padding=r)[0, 0] > 0
        ring = grown & ~occupied[wy0:wy1, wx0:wx1]
        if not ring.any():
            continue
        for i, img in enumerate(images):
            window = img[wy0:wy1, wx0:wx1].double()
            out[i, k] = (window[inside].mean() - window[ring].mean()).abs()
    return out


def _box_pixels(boxes: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Pixel rows/cols [N,4] (y0, y1, x0, x1) covered by float boxes (x1, y1, x2, y2), clipped."""
    x0 = boxes[:, 0].floor().clamp(0, W)
    x1 = boxes[:, 2].ceil().clamp(0, W)
    y0 = boxes[:, 1].floor().clamp(0, H)
    y1 = boxes[:, 3].ceil().clamp(0, H)
    return torch.stack([y0, y1, x0, x1], 1).long()


def reference_contrast(c_ir: torch.Tensor, c_vi: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The contrast of the modality that sees each object (see the module docstring)."""
    best = torch.maximum(c_ir, c_vi)
    return torch.where(codes == _CODES["ir_only"], c_ir, torch.where(codes == _CODES["vis_only"], c_vi, best))


class ContrastRetention(Metric):
    """Object contrast retention of fused images, pooled over all objects seen (DDP: concatenated).

    update(fused, ir, vi, *, instances=None, boxes=None, visibility=None) per batch:
      fused, ir, vi: gray [B,H,W] 0..255 (as `to_gray255` returns) or images [B,C,H,W]
        (floats 0..1 or uint8, converted by `to_gray255`);
      instances: [B,1,H,W] / [B,H,W] instance maps, or a list with None where an image has none;
      boxes: [M,6] (batch_index, class, cx, cy, w, h) normalised, the batch format of
        `collate_samples`; used for images without a mask;
      visibility: per image a list of `{"ir", "vi"}` per object (label-row order) or None.
    compute() -> {"retention/<group>/mean", ".../kept", ".../n", ".../excluded"} for `all` and,
    when any object's visibility was known, `ir_only`, `vis_only`, `both`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("c_fused", "c_ir", "c_vi", "code"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, fused, ir, vi, *, instances=None, boxes=None, visibility=None) -> None:
        f, a, b = (_gray(x).cpu() for x in (fused, ir, vi))  # a few small windows per image: CPU work
        if not (f.shape == a.shape == b.shape):
            raise DataError(f"fused {tuple(f.shape)}, ir {tuple(a.shape)} and vi {tuple(b.shape)} differ in shape")
        B, H, W = f.shape
        for i in range(B):
            mask = None if instances is None or instances[i] is None else torch.as_tensor(instances[i]).cpu()
            seen = None if visibility is None else visibility[i]
            rows = None
            if boxes is not None:
                rows = torch.as_tensor(boxes).detach().cpu().reshape(-1, 6)
                rows = rows[rows[:, 0] == i, 2:6].double()
            n = len(seen) if seen is not None else None
            if mask is not None:
                if n is None:  # every label row counts, also one whose mask pixels were cropped away
                    n = max(int(torch.as_tensor(mask).max()) if mask.numel() else 0, 0 if rows is None else len(rows))
                c = object_contrasts([f[i], a[i], b[i]], instances=mask, n_objects=n)
            elif rows is not None:
                if n is not None and n != rows.shape[0]:
                    raise DataError(f"image {i} has {rows.shape[0]} boxes but visibility for {n} objects")
                xyxy = torch.stack([(rows[:, 0] - rows[:, 2] / 2) * W, (rows[:, 1] - rows[:, 3] / 2) * H,
                                    (rows[:, 0] + rows[:, 2] / 2) * W, (rows[:, 1] + rows[:, 3] / 2) * H], 1)
                c = object_contrasts([f[i], a[i], b[i]], boxes=xyxy)
            else:
                raise DataError("object contrast retention needs instance masks or boxes (the dataset has neither)")
            codes = torch.tensor([_CODES[group_of(seen[k]) if seen is not None else None] for k in range(c.shape[1])],
                                 dtype=torch.long)
            self.c_fused.append(c[0].to(self.device))  # states live on the metric's device (DDP sync)
            self.c_ir.append(c[1].to(self.device))
            self.c_vi.append(c[2].to(self.device))
            self.code.append(codes.to(self.device))

    def _cat(self, name: str, dtype) -> torch.Tensor:
        x = getattr(self, name)
        if isinstance(x, torch.Tensor):
            return x.cpu()
        return torch.cat(x).cpu() if x else torch.zeros(0, dtype=dtype)

    def per_object(self) -> dict[str, torch.Tensor]:
        """Every object's contrasts, group code, reference contrast and retention (NaN if excluded)."""
        c_f, c_ir, c_vi = (self._cat(n, torch.float64) for n in ("c_fused", "c_ir", "c_vi"))
        code = self._cat("code", torch.long)
        ref = reference_contrast(c_ir, c_vi, code)
        valid = torch.isfinite(c_f) & torch.isfinite(ref) & (ref >= MIN_SOURCE_CONTRAST)
        ratio = torch.where(valid, c_f / ref.clamp_min(MIN_SOURCE_CONTRAST), torch.nan)
        return {"c_fused": c_f, "c_ir": c_ir, "c_vi": c_vi, "code": code, "reference": ref, "retention": ratio}

    def compute(self) -> dict[str, float]:
        rows = self.per_object()
        code, ratio = rows["code"], rows["retention"]
        groups = GROUPS if bool((code != _CODES[None]).any()) else ("all",)
        out: dict[str, float] = {}
        for group in groups:
            member = torch.ones_like(code, dtype=torch.bool) if group == "all" else code == _CODES[group]
            scored = member & torch.isfinite(ratio)
            n = int(scored.sum())
            r = ratio[scored]
            out[f"retention/{group}/mean"] = float(r.clamp(max=RETENTION_CAP).mean()) if n else float("nan")
            out[f"retention/{group}/kept"] = float((r >= KEEP_THRESHOLD).double().mean()) if n else float("nan")
            out[f"retention/{group}/n"] = n
            out[f"retention/{group}/excluded"] = int(member.sum()) - n
        return out
