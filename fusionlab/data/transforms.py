"""Geometric transforms that move every field of a Sample together (images, depth, masks, boxes).

Random crops and flips for training, and the `crop`/`resize` fixes for partners whose sizes
disagree, all go through these, so boxes can never drift away from the pixels they describe.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from fusionlab.data.sample import Sample

MIN_BOX_FRACTION = 0.25  # a cropped box is kept while this much of its area remains


def crop_boxes(boxes: torch.Tensor, size: tuple[int, int], top: int, left: int, out: tuple[int, int]) -> torch.Tensor:
    """Re-express YOLO boxes of an image of `size` (H, W) in the window (top, left, out=(h, w))."""
    if boxes.numel() == 0:
        return boxes.reshape(0, 5)
    H, W = size
    h, w = out
    cls, cx, cy, bw, bh = boxes.unbind(1)
    x0, x1 = (cx - bw / 2) * W - left, (cx + bw / 2) * W - left
    y0, y1 = (cy - bh / 2) * H - top, (cy + bh / 2) * H - top
    cx0, cx1, cy0, cy1 = x0.clamp(0, w), x1.clamp(0, w), y0.clamp(0, h), y1.clamp(0, h)
    area = (x1 - x0) * (y1 - y0)
    kept_area = (cx1 - cx0) * (cy1 - cy0)
    keep = (cx1 - cx0 >= 1) & (cy1 - cy0 >= 1) & (kept_area >= MIN_BOX_FRACTION * area)
    new = torch.stack([cls, (cx0 + cx1) / 2 / w, (cy0 + cy1) / 2 / h, (cx1 - cx0) / w, (cy1 - cy0) / h], 1)
    return new[keep]


def _crop_tensor(x: torch.Tensor, top: int, left: int, h: int, w: int) -> torch.Tensor:
    """Crop [C,H,W]; parts of the window outside the image are zero (padding for small images)."""
    C, H, W = x.shape
    out = x.new_zeros((C, h, w))
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, H), min(left + w, W)
    if y1 > y0 and x1 > x0:
        out[:, y0 - top : y1 - top, x0 - left : x1 - left] = x[:, y0:y1, x0:x1]
    return out


def crop(sample: Sample, top: int, left: int, h: int, w: int) -> Sample:
    """Crop every field to the window; a window larger than the image is zero-padded."""
    size = sample.size
    return dataclasses.replace(
        sample,
        ir=_crop_tensor(sample.ir, top, left, h, w),
        vi=_crop_tensor(sample.vi, top, left, h, w),
        depth=None if sample.depth is None else _crop_tensor(sample.depth, top, left, h, w),
        instances=None if sample.instances is None else _crop_tensor(sample.instances, top, left, h, w),
        boxes=None if sample.boxes is None else crop_boxes(sample.boxes, size, top, left, (h, w)),
    )


def random_crop(sample: Sample, size: int, generator: torch.Generator | None = None) -> Sample:
    """A random `size` x `size` window (zero-padded when the image is smaller)."""
    H, W = sample.size
    top = int(torch.randint(0, max(H - size, 0) + 1, (1,), generator=generator))
    left = int(torch.randint(0, max(W - size, 0) + 1, (1,), generator=generator))
    return crop(sample, top, left, size, size)


def hflip(sample: Sample) -> Sample:
    """Mirror left-right; box centres move to 1 - cx."""
    boxes = sample.boxes
    if boxes is not None and boxes.numel():
        boxes = boxes.clone()
        boxes[:, 1] = 1.0 - boxes[:, 1]
    return dataclasses.replace(
        sample,
        ir=sample.ir.flip(-1),
        vi=sample.vi.flip(-1),
        depth=None if sample.depth is None else sample.depth.flip(-1),
        instances=None if sample.instances is None else sample.instances.flip(-1),
        boxes=boxes,
    )


def resize_to(x: torch.Tensor, size: tuple[int, int], *, nearest: bool = False) -> torch.Tensor:
    """Resize [C,H,W] to (H, W); depth and instance maps use nearest, so no depth or id is invented
    across edges (integer maps keep their dtype)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if nearest:
        return F.interpolate(x[None].float(), size=size, mode="nearest")[0].to(x.dtype)
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)
