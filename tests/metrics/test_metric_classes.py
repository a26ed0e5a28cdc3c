"""torchmetrics wrappers: batching, mixed sizes, DDP-style state merging, per-image function."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fusionlab.errors import DataError
from fusionlab.metrics import (
    EN,
    METRIC_CLASSES,
    MSE,
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


def test_single_metric_classes():
    ir, vi, fused = _batch(4)
    assert set(METRIC_CLASSES) == set(FusionMetrics().names)
    en = EN()
    en.update(ir, vi, fused)
    full = FusionMetrics(metrics=["EN"])
    full.update(ir, vi, fused)
    assert en.compute().item() == pytest.approx(full.compute()["EN"].item())
    assert EN.higher_is_better is True and MSE.higher_is_better is False


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
