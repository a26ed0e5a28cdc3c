"""Depth metrics with valid masks, and detection metrics through ultralytics' AP code."""

from __future__ import annotations

import math

import pytest
import torch

from fusionlab.errors import DataError
from fusionlab.metrics import DepthMetrics, detection_metrics, yolo_to_xyxy


def _depth(seed=0):
    g = torch.Generator().manual_seed(seed)
    return 1 + 20 * torch.rand(2, 1, 16, 16, generator=g)


def test_depth_perfect_and_scaled_predictions():
    target = _depth()
    m = DepthMetrics()
    m.update(target.clone(), target)
    r = m.compute()
    assert r["AbsRel"].item() == 0 and r["RMSE"].item() == 0 and r["SiLog"].item() == pytest.approx(0, abs=1e-6)
    assert r["delta1"].item() == 1.0

    m = DepthMetrics()
    m.update(2 * target, target)  # a global scale error
    r = m.compute()
    assert r["AbsRel"].item() == pytest.approx(1.0)
    assert r["RMSElog"].item() == pytest.approx(math.log(2))
    assert r["SiLog"].item() == pytest.approx(0.0, abs=1e-5)  # scale-invariant
    assert r["delta1"].item() == 0.0 and r["delta3"].item() == 0.0  # ratio 2 > 1.25^3 = 1.95
    assert r["SqRel"].item() == pytest.approx(target.mean().item(), rel=1e-6)  # (2t - t)^2 / t = t


def test_depth_ignores_invalid_pixels_and_empty_images():
    target = _depth(1)
    pred = target.clone()
    target[0, :, :8] = 0  # no measurement
    pred[0, :, :8] = 999  # garbage where there is no ground truth
    mask = torch.ones_like(target, dtype=torch.bool)
    mask[1, :, :, :4] = False
    pred[1, :, :, :4] = -5
    target_empty = torch.zeros(1, 1, 16, 16)
    m = DepthMetrics()
    m.update(pred, target, mask)
    m.update(torch.ones(1, 1, 16, 16), target_empty)  # no valid pixel: skipped, not NaN
    r = m.compute()
    assert r["AbsRel"].item() == 0 and r["delta1"].item() == 1
    assert m.images.item() == 2
    with pytest.raises(DataError, match="differ in shape"):
        m.update(torch.ones(1, 1, 8, 8), target_empty)


def test_yolo_to_xyxy():
    out = yolo_to_xyxy(torch.tensor([[2.0, 0.5, 0.5, 0.2, 0.4]]), width=100, height=50)
    assert out[0].tolist() == pytest.approx([2, 40, 15, 60, 35])


def test_detection_perfect_partial_and_empty():
    targets = [torch.tensor([[0, 10, 10, 50, 50], [1, 60, 60, 90, 100.0]]), torch.tensor([[0, 5, 5, 25, 45.0]])]
    perfect = [torch.cat([t[:, 1:], torch.ones(len(t), 1), t[:, :1]], 1) for t in targets]
    r = detection_metrics(perfect, targets, class_names=["car", "person"])
    assert r["mAP50"] > 0.99 and r["mAP50-95"] > 0.99
    assert r["precision"] == pytest.approx(1.0) and r["recall"] == pytest.approx(1.0)
    assert set(k for k in r if k.startswith("AP50/")) == {"AP50/car", "AP50/person"}

    # shifted boxes: IoU ~0.67 counts at 0.5 but not at 0.75+; a confident false positive of class 1
    shifted = [p.clone() for p in perfect]
    shifted[0][0, :4] += torch.tensor([8.0, 0, 8, 0])
    shifted[1] = torch.cat([shifted[1], torch.tensor([[100, 100, 120, 120, 0.99, 1.0]])])
    r2 = detection_metrics(shifted, targets, class_names=["car", "person"])
    assert r2["mAP50"] > 0.9 and r2["mAP50-95"] < r["mAP50-95"] - 0.1
    assert r2["AP50-95/car"] < r2["AP50/car"]

    empty = detection_metrics([torch.zeros(0, 6), torch.zeros(0, 6)], targets)
    assert empty["mAP50"] == 0.0 and empty["recall"] == 0.0
    with pytest.raises(DataError, match=r"\[N, 6\]"):
        detection_metrics([torch.zeros(2, 5)], [targets[0]])
