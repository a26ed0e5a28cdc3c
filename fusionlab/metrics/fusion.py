"""Fusion metrics as torchmetrics `Metric`s (batched, DDP-reducible) and a per-image function.

`FusionMetrics` computes any subset of the metric set at once (sharing intermediate results) and
keeps a sum, a sum of squares and a count per metric, so its state reduces across DDP ranks with
a plain sum and it can report mean and std. `EN()`, `VIF()`, ... are single-metric versions.

Inputs are tensors [B, C, H, W] (C = 1 gray or 3 RGB; floats in 0..1, the fusionlab convention,
or uint8) or, for images of mixed sizes, lists of [C, H, W] tensors.
"""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric

from fusionlab.errors import DataError
from fusionlab.metrics.functional import (
    ALL_METRICS,
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


class FusionMetrics(Metric):
    """Mean (and std) of several fusion metrics over all images seen, across DDP ranks.

    update(ir, vi, fused) takes batches [B,C,H,W] or lists of [C,H,W]; compute() returns
    {name: mean}; summary() returns {name: {"mean", "std", "n"}}. `convention` is kept as an
    attribute and in summary(), so logged numbers say which evaluator they follow.
    """

    is_differentiable = False
    higher_is_better = None  # mixed: see LOWER_IS_BETTER
    full_state_update = False

    def __init__(self, metrics=None, convention: str = "cddfuse", value_range=None, **kwargs):
        super().__init__(**kwargs)
        self.names = check_metrics(metrics)
        self.convention = check_convention(convention)
        self.value_range = value_range
        m = len(self.names)
        self.add_state("total", torch.zeros(m, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total_sq", torch.zeros(m, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, ir, vi, fused) -> None:
        values = batch_metric_values(ir, vi, fused, self.convention, self.names, self.value_range)
        stacked = torch.stack([values[n] for n in self.names], dim=1).to(self.total.device)  # [B, M]
        self.total += stacked.sum(0)
        self.total_sq += stacked.square().sum(0)
        self.count += stacked.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:
        mean = self.total / self.count
        return {n: mean[i] for i, n in enumerate(self.names)}

    def summary(self) -> dict:
        """{"convention": ..., name: {"mean", "std" (population), "n", "lower_is_better"}}."""
        n = float(self.count)
        out: dict = {"convention": self.convention}
        for i, name in enumerate(self.names):
            mean = float(self.total[i]) / n if n else math.nan
            var = float(self.total_sq[i]) / n - mean * mean if n else math.nan
            out[name] = {
                "mean": mean,
                "std": math.sqrt(max(var, 0.0)) if n else math.nan,
                "n": int(n),
                "lower_is_better": name in LOWER_IS_BETTER,
            }
        return out


class _SingleFusionMetric(Metric):
    """One fusion metric averaged over images (a thin wrapper so it composes in MetricCollection)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    metric_name = ""

    def __init__(self, convention: str = "cddfuse", value_range=None, **kwargs):
        super().__init__(**kwargs)
        self.convention = check_convention(convention)
        self.value_range = value_range
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, ir, vi, fused) -> None:
        v = batch_metric_values(ir, vi, fused, self.convention, [self.metric_name], self.value_range)[self.metric_name]
        self.total += v.sum().to(self.total.device)
        self.count += v.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count


def _single(name: str, doc: str) -> type:
    return type(
        name,
        (_SingleFusionMetric,),
        {"metric_name": name, "higher_is_better": name not in LOWER_IS_BETTER, "__doc__": doc, "__module__": __name__},
    )


EN = _single("EN", "Entropy (bits) of the fused image's 256-bin histogram.")
SD = _single("SD", "Standard deviation of the fused image.")
SF = _single("SF", "Spatial frequency of the fused image.")
AG = _single("AG", "Average gradient of the fused image.")
MI = _single("MI", "MI(F,IR) + MI(F,VIS); nats (cddfuse) or bits (matlab).")
SCD = _single("SCD", "Sum of the correlations of differences.")
VIF = _single("VIF", "Sheikh-Bovik pixel VIF, IR->F plus VIS->F (not Han's VIFF).")
Qabf = _single("Qabf", "Xydeas-Petrovic gradient-based edge preservation.")
SSIM = _single("SSIM", "SSIM(F,IR) + SSIM(F,VIS) with data_range=2 (cddfuse) or the mean with 255 (matlab).")
SSIM255 = _single("SSIM255", "SSIM sum with the correct data_range=255.")
CC = _single("CC", "Mean Pearson correlation of F with IR and VIS.")
PSNR = _single("PSNR", "10 log10(max(F)^2 / MSE).")
MSE = _single("MSE", "Mean of MSE(F,IR) and MSE(F,VIS); lower is better.")
Nabf = _single("Nabf", "Petrovic-Xydeas fusion artifacts (Kumar's modification); lower is better.")

METRIC_CLASSES = {name: globals()[name] for name in ALL_METRICS}
