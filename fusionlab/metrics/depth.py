"""Monocular depth metrics (Eigen et al. protocol) as a DDP-reducible torchmetrics `Metric`.

Each metric is computed per image over its valid pixels and then averaged over images, which is
how KITTI/NYU tables are produced. Valid = target > min_depth, target < max_depth (if given), and
the optional boolean mask; predictions are clamped into [min_depth, max_depth] first, so a zero
or negative prediction cannot produce inf in the log metrics.

SiLog is the KITTI benchmark's 100 * sqrt(mean(d^2) - mean(d)^2) with d = ln(pred) - ln(target).
The LDNF paper's SiLog *loss* (its Eq. 1) is mean(d^2) - mean(d)^2, i.e. (SiLog / 100)^2.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from fusionlab.errors import DataError

DEPTH_METRICS = ("AbsRel", "SqRel", "RMSE", "RMSElog", "delta1", "delta2", "delta3", "SiLog")
DEPTH_LOWER_IS_BETTER = frozenset({"AbsRel", "SqRel", "RMSE", "RMSElog", "SiLog"})


def depth_metrics_per_image(pred, target, mask=None, min_depth: float = 1e-3, max_depth: float | None = None):
    """{name: [B] float64} for pred/target [B,1,H,W] or [B,H,W] in metres, plus [B] valid counts.

    Images without a single valid pixel get NaN values and a count of 0.
    """
    if pred.shape != target.shape:
        raise DataError(f"depth prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    p = pred.detach().double().flatten(1)
    t = target.detach().double().flatten(1)
    valid = t > min_depth
    if max_depth is not None:
        valid &= t < max_depth
    if mask is not None:
        valid &= mask.detach().reshape(p.shape).bool()
    p = p.clamp(min=min_depth, max=max_depth) if max_depth is not None else p.clamp(min=min_depth)
    t = torch.where(valid, t, torch.ones_like(t))  # placeholders keep logs/divisions finite
    p = torch.where(valid, p, torch.ones_like(p))
    n = valid.sum(1).double()

    def mean(x):
        return torch.where(valid, x, 0.0).sum(1) / n

    diff = p - t
    d = torch.log(p) - torch.log(t)
    ratio = torch.maximum(p / t, t / p)
    out = {
        "AbsRel": mean(diff.abs() / t),
        "SqRel": mean(diff.square() / t),
        "RMSE": mean(diff.square()).sqrt(),
        "RMSElog": mean(d.square()).sqrt(),
        "delta1": mean((ratio < 1.25).double()),
        "delta2": mean((ratio < 1.25**2).double()),
        "delta3": mean((ratio < 1.25**3).double()),
        "SiLog": 100 * (mean(d.square()) - mean(d).square()).clamp_min(0).sqrt(),
    }
    return out, n


class DepthMetrics(Metric):
    """AbsRel, SqRel, RMSE, RMSElog, delta<1.25^k (k=1,2,3) and SiLog, averaged over images.

    update(pred, target, mask=None) with depth in metres, 0 (or <= min_depth) = no measurement.
    compute() -> {name: value}. Images with no valid pixel are skipped.
    """

    is_differentiable = False
    higher_is_better = None  # deltas up, errors down: see DEPTH_LOWER_IS_BETTER
    full_state_update = False

    def __init__(self, min_depth: float = 1e-3, max_depth: float | None = None, **kwargs):
        super().__init__(**kwargs)
        self.min_depth = float(min_depth)
        self.max_depth = None if max_depth is None else float(max_depth)
        self.add_state("total", torch.zeros(len(DEPTH_METRICS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        values, n = depth_metrics_per_image(pred, target, mask, self.min_depth, self.max_depth)
        keep = n > 0
        stacked = torch.stack([values[k] for k in DEPTH_METRICS], dim=1)[keep]
        self.total += stacked.sum(0).to(self.total.device)
        self.images += float(keep.sum())

    def compute(self) -> dict[str, torch.Tensor]:
        mean = self.total / self.images
        return {k: mean[i] for i, k in enumerate(DEPTH_METRICS)}
