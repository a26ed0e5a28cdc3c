import math

import pytest
import torch

from fusionlab.losses.silog import silog_loss


def test_silog_matches_hand_computation():
    pred = torch.tensor([1.0, 2.0, 4.0]).view(1, 1, 1, 3)
    gt = torch.tensor([2.0, 2.0, 1.0]).view(1, 1, 1, 3)
    d = [math.log(2.0), 0.0, math.log(0.25)]  # log y - log ŷ
    mean_sq = sum(v * v for v in d) / 3
    mean = sum(d) / 3
    assert silog_loss(pred, gt, lam=1.0).item() == pytest.approx(mean_sq - mean**2, rel=1e-5)
    assert silog_loss(pred, gt, lam=0.5).item() == pytest.approx(mean_sq - 0.5 * mean**2, rel=1e-5)
    assert silog_loss(pred, gt, lam=0.0).item() == pytest.approx(mean_sq, rel=1e-5)


def test_silog_ignores_invalid_pixels_and_averages_images():
    pred = torch.tensor([[1.0, 2.0, 7.0], [3.0, 3.0, 3.0]]).view(2, 1, 1, 3)
    gt = torch.tensor([[2.0, 2.0, 0.0], [1.0, 3.0, 9.0]]).view(2, 1, 1, 3)  # 0 = no measurement
    d0 = [math.log(2.0), 0.0]
    d1 = [math.log(1 / 3), 0.0, math.log(3.0)]
    per = [sum(v * v for v in d) / len(d) - (sum(d) / len(d)) ** 2 for d in (d0, d1)]
    assert silog_loss(pred, gt).item() == pytest.approx(sum(per) / 2, rel=1e-5)


def test_silog_with_lambda_one_is_scale_invariant():
    torch.manual_seed(0)
    gt = torch.rand(3, 1, 8, 8) * 50 + 1
    pred = torch.rand(3, 1, 8, 8) * 50 + 1
    base = silog_loss(pred, gt, lam=1.0)
    for scale in (0.1, 3.7, 42.0):
        assert silog_loss(pred * scale, gt, lam=1.0).item() == pytest.approx(base.item(), rel=1e-4, abs=1e-6)
    # a perfect prediction up to a global scale costs nothing with λ = 1 ...
    assert silog_loss(gt * 5.0, gt, lam=1.0).item() == pytest.approx(0.0, abs=1e-6)
    # ... but λ < 1 penalises the scale error, which is why training defaults to 0.85
    assert silog_loss(gt * 5.0, gt, lam=0.85).item() > 0.1 * math.log(5.0) ** 2


def test_silog_is_differentiable_and_float32_under_bf16():
    pred = (torch.rand(2, 1, 4, 4) + 0.5).to(torch.bfloat16).requires_grad_(True)
    gt = torch.rand(2, 1, 4, 4) + 0.5
    loss = silog_loss(pred, gt, lam=0.85)
    loss.backward()
    assert loss.dtype == torch.float32
    assert torch.isfinite(pred.grad.float()).all() and pred.grad.abs().sum() > 0
