"""Fusion metrics as torchmetrics `Metric`s (batched, DDP-reducible) and a per-image function.

`FusionMetrics` computes any subset of the metric set at once (sharing intermediate results) and
keeps a sum, a sum of squares and a count per metric (`MetricStats`), so its state reduces across
DDP ranks with a plain sum and it can report mean and std. `fusionlab.metrics.evaluate` (stage 4
and `fusionlab eval`) accumulates its tables in `MetricStats`.

Inputs are tensors [B, C, H, W] (C = 1 gray or 3 RGB; floats in 0..1, the fusionlab convention,
or uint8) or, for images of mixed sizes, lists of [C, H, W] tensors.
"""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric

from fusionlab.errors import DataError
from fusionlab.metrics.functional import (
    LOWER_IS_BETTER,
    check_convention,
    check_metrics,
    fusion_metrics,
)
from fusionlab.metrics.gray import to_gray255


def _same_size(ir, vi, fused, where: str = "") -> None:
    shapes = [tuple(t.shape[-2:]) for t in (ir, vi, fused)]
    if len(set(shapes)) != 1:
        raise DataError(
            f"image sizes differ{where}: ir {shapes[0]}, vi {shapes[1]}, fused {shapes[2]} (H, W); "
            "metrics compare pixel by pixel, so resize or crop the fused image to the sources' size"
        )


def batch_metric_values(ir, vi, fused, convention="cddfuse", metrics=None, value_range=None) -> dict[str, torch.Tensor]:
    """Per-image values {name: [B] float64} of a batch, or of a list of mixed-size images."""
    names = check_metrics(metrics)
    if isinstance(fused, (list, tuple)):
        if not (len(ir) == len(vi) == len(fused)):
            raise DataError(f"got {len(ir)} ir, {len(vi)} vi and {len(fused)} fused images; they must pair up")
        rows = [
            batch_metric_values(a, b, f, convention, names, value_range) for a, b, f in zip(ir, vi, fused, strict=True)
        ]
        return {n: torch.cat([r[n] for r in rows]) for n in names}
    a, b, f = (to_gray255(t, value_range) for t in (ir, vi, fused))
    _same_size(a, b, f)
    if not (a.shape[0] == b.shape[0] == f.shape[0]):
        raise DataError(f"batch sizes differ: ir {a.shape[0]}, vi {b.shape[0]}, fused {f.shape[0]}")
    return fusion_metrics(f, a, b, convention, names)


def compute_fusion_metrics(
    ir, vi, fused, convention: str = "cddfuse", metrics=None, value_range=None
) -> dict[str, float]:
    """Metrics of ONE image triple (any size) as plain floats.

    ir, vi, fused: numpy arrays or tensors, gray [H,W] or RGB ([H,W,3] numpy / [3,H,W] tensor);
    uint8 are 0..255, floats are 0..`value_range` (default 1.0; pass 255 for float 0..255 arrays).
    """
    values = batch_metric_values(ir, vi, fused, check_convention(convention), metrics, value_range)
    return {k: float(v[0]) for k, v in values.items()}


class MetricStats(Metric):
    """Mean, std and count of named per-image values over every image seen, across DDP ranks.

    `update({name: [B] values})`; the state is a sum, a sum of squares and a count per name, so it
    reduces across ranks with a plain sum. Non-finite values (e.g. SCD of a fused image equal to a
    source, 0/0) are counted apart and left out of the mean and std, so one bad image does not
    turn a whole column into NaN; `summary()` reports how many there were.
    """

    is_differentiable = False
    higher_is_better = None  # mixed: see `lower_is_better`
    full_state_update = False

    def __init__(self, names, lower_is_better=LOWER_IS_BETTER, **kwargs):
        super().__init__(**kwargs)
        self.names = tuple(names)
        self.lower_is_better = frozenset(n for n in self.names if n in lower_is_better)
        m = len(self.names)
        for state in ("total", "total_sq", "count", "nonfinite"):
            self.add_state(state, torch.zeros(m, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: dict) -> None:
        stacked = torch.stack([torch.as_tensor(values[n], dtype=torch.float64).reshape(-1) for n in self.names],
                              dim=1).to(self.total.device)  # [B, M]
        finite = torch.isfinite(stacked)
        kept = torch.where(finite, stacked, torch.zeros_like(stacked))
        self.total += kept.sum(0)
        self.total_sq += kept.square().sum(0)
        self.count += finite.sum(0)
        self.nonfinite += (~finite).sum(0)

    def compute(self) -> dict[str, torch.Tensor]:
        mean = self.total / self.count
        return {n: mean[i] for i, n in enumerate(self.names)}

    def summary(self) -> dict:
        """{name: {"mean", "std" (population), "n", "nonfinite", "lower_is_better"}}, reduced over ranks."""
        out: dict = {}
        with self.sync_context(should_sync=self.sync_on_compute):
            for i, name in enumerate(self.names):
                n = float(self.count[i])
                mean = float(self.total[i]) / n if n else math.nan
                var = float(self.total_sq[i]) / n - mean * mean if n else math.nan
                out[name] = {"mean": mean, "std": math.sqrt(max(var, 0.0)) if n else math.nan, "n": int(n),
                             "nonfinite": int(self.nonfinite[i]), "lower_is_better": name in self.lower_is_better}
        return out


class FusionMetrics(MetricStats):
    """Mean (and std) of several fusion metrics over all images seen, across DDP ranks.

    update(ir, vi, fused) takes batches [B,C,H,W] or lists of [C,H,W]; compute() returns
    {name: mean}; summary() returns {"convention": ..., name: {"mean", "std", "n", ...}}.
    `convention` is kept as an attribute and in summary(), so logged numbers say which
    evaluator they follow.
    """

    def __init__(self, metrics=None, convention: str = "cddfuse", value_range=None, **kwargs):
        super().__init__(check_metrics(metrics), **kwargs)
        self.convention = check_convention(convention)
        self.value_range = value_range

    def update(self, ir, vi, fused) -> None:
        super().update(batch_metric_values(ir, vi, fused, self.convention, self.names, self.value_range))

    def summary(self) -> dict:
        return {"convention": self.convention, **super().summary()}
