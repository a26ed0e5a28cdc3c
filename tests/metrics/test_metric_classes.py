"""torchmetrics wrappers: batching, mixed sizes, DDP-style state merging, per-image function."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fusionlab.errors import DataError
from fusionlab.metrics import (
    FusionMetrics,
    compute_fusion_metrics,
    fusion_metrics,
    to_gray255,
)


def _batch(seed, n=3, h=48, w=56):
    g = torch.Generator().manual_seed(seed)
    ir = torch.rand(n, 1, h, w, generator=g)
    vi = torch.rand(n, 3, h, w, generator=g)
    fused = (ir + vi.mean(1, keepdim=True)) / 2
    return ir, vi, fused


def test_fusion_metrics_mean_and_std_match_per_image_values():
    ir, vi, fused = _batch(0)
    metric = FusionMetrics(metrics=["EN", "VIF", "MSE"])
    metric.update(ir, vi, fused)
    per_image = fusion_metrics(to_gray255(fused), to_gray255(ir), to_gray255(vi), metrics=["EN", "VIF", "MSE"])
    result = metric.compute()
    summary = metric.summary()
    assert summary["convention"] == "cddfuse"
    for name, values in per_image.items():
        assert result[name].item() == pytest.approx(values.mean().item(), rel=1e-12)
        assert summary[name]["std"] == pytest.approx(values.std(correction=0).item(), rel=1e-6)
        assert summary[name]["n"] == 3
    assert summary["MSE"]["lower_is_better"] and not summary["EN"]["lower_is_better"]


def test_mixed_sizes_as_lists():
    a = _batch(1, n=1, h=48, w=56)
    b = _batch(2, n=1, h=60, w=44)
    metric = FusionMetrics(metrics=["SF", "Qabf"])
    metric.update([a[0][0], b[0][0]], [a[1][0], b[1][0]], [a[2][0], b[2][0]])
    singles = [compute_fusion_metrics(x[0][0], x[1][0], x[2][0], metrics=["SF", "Qabf"]) for x in (a, b)]
    for name in ("SF", "Qabf"):
        assert metric.compute()[name].item() == pytest.approx((singles[0][name] + singles[1][name]) / 2, rel=1e-12)
    with pytest.raises(DataError, match="sizes differ"):
        metric.update(a[0], a[1], b[2])


def test_state_merges_like_ddp_reduction():
    ir, vi, fused = _batch(3, n=4)
    whole = FusionMetrics(metrics=["MI", "SSIM", "Nabf"])
    whole.update(ir, vi, fused)
    rank0, rank1 = FusionMetrics(metrics=["MI", "SSIM", "Nabf"]), FusionMetrics(metrics=["MI", "SSIM", "Nabf"])
    rank0.update(ir[:1], vi[:1], fused[:1])
    rank1.update(ir[1:], vi[1:], fused[1:])
    rank0.merge_state(rank1)  # the same sum that torch.distributed all_reduce performs
    for name, value in whole.compute().items():
        assert rank0.compute()[name].item() == pytest.approx(value.item(), rel=1e-12)


def test_metric_stats_leave_non_finite_values_out_and_count_them():
    from fusionlab.metrics import MetricStats

    stats = MetricStats(["SCD", "MSE"])
    stats.update({"SCD": torch.tensor([1.0, float("nan"), 3.0]), "MSE": torch.tensor([2.0, 4.0, 6.0])})
    summary = stats.summary()
    assert summary["SCD"] == {"mean": 2.0, "std": 1.0, "n": 2, "nonfinite": 1, "lower_is_better": False}
    assert summary["MSE"]["mean"] == 4.0 and summary["MSE"]["n"] == 3 and summary["MSE"]["lower_is_better"]
    assert stats.compute()["SCD"].item() == 2.0


def test_compute_fusion_metrics_on_uint8_arrays():
    rng = np.random.default_rng(0)
    ir = rng.integers(0, 256, (48, 50), dtype=np.uint8)
    vi = rng.integers(0, 256, (48, 50, 3), dtype=np.uint8)
    out = compute_fusion_metrics(ir, vi, ir, metrics=None)
    assert len(out) == 14 and all(isinstance(v, float) for v in out.values())
    assert out["Nabf"] == 0.0
    bits = compute_fusion_metrics(ir, vi, ir, convention="matlab", metrics=["MI"])["MI"]
    assert bits == pytest.approx(out["MI"] / math.log(2))
    # the same images as float 0..255 arrays give the same numbers
    again = compute_fusion_metrics(ir.astype(np.float32), vi.astype(np.float32), ir.astype(np.float32), value_range=255)
    assert again == pytest.approx(out, nan_ok=True)
    assert math.isnan(out["SCD"])  # corr(F - IR, VI) with F == IR is 0/0, NaN as in the reference
