"""Robust per-image contrast normalisation (percentile stretch) of fusion inputs.

Thermal frames and night-time visible frames often use a narrow band of the intensity range.
Stretching each source between its low and high percentiles before fusing lets the fused image
use the full range, which is what the contrast-driven metrics (EN, SD, VIF) and a viewer reward.
The percentiles are estimated on a fixed-size nearest-neighbour resample (a regular subsample),
so they are cheap at any size, trace to a static ONNX graph, and can be computed once on a whole
image and reused for its tiles.
"""

from __future__ import annotations

import torch

SAMPLE_SIDE = 160  # percentiles are estimated on a SAMPLE_SIDE x SAMPLE_SIDE regular subsample


def robust_range(x: torch.Tensor, q: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (low, high) percentiles q and 1-q of [B,1,H,W] -> two [B,1,1,1] tensors."""
    import torch.nn.functional as F

    sample = F.interpolate(x.float(), size=(SAMPLE_SIDE, SAMPLE_SIDE), mode="nearest")
    values = sample.flatten(1).sort(dim=1).values
    n = SAMPLE_SIDE * SAMPLE_SIDE
    lo = values[:, round(q * (n - 1))]
    hi = values[:, round((1 - q) * (n - 1))]
    return lo.view(-1, 1, 1, 1).to(x.dtype), hi.view(-1, 1, 1, 1).to(x.dtype)


def stretch(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, min_span: float = 0.05) -> torch.Tensor:
    """Map [lo, hi] to [0, 1] linearly and clip; a nearly flat image (span < min_span) is
    stretched at most 1/min_span-fold so noise is not blown up."""
    span = (hi - lo).clamp_min(min_span)
    return ((x - lo) / span).clamp(0.0, 1.0)


def stretch_pair(ir: torch.Tensor, vi_y: torch.Tensor, q: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Both single-channel sources stretched by their own percentiles (q = 0 leaves them as is)."""
    if q <= 0:
        return ir, vi_y
    return stretch(ir, *robust_range(ir, q)), stretch(vi_y, *robust_range(vi_y, q))
