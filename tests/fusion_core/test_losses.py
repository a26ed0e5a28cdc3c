"""The basic fusion losses against hand-computed small examples."""

import pytest
import torch

from fusionlab.losses import ContentLoss, dual_ssim_loss, max_gradient_loss, max_intensity_loss, sobel_magnitude


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)[None, None]


def test_max_intensity_loss_by_hand():
    ir = t([[0.2, 0.8], [0.5, 0.0]])
    vi = t([[0.6, 0.1], [0.5, 0.4]])
    fused = t([[0.6, 0.6], [0.2, 0.4]])
    # max = [[.6,.8],[.5,.4]] -> |diff| = [0, .2, .3, 0] -> mean .125
    assert max_intensity_loss(fused, ir, vi).item() == pytest.approx(0.125)


def test_sobel_magnitude_of_a_step_by_hand():
    # vertical step 0 | 1 between columns 1 and 2 of a 3x4 image; replicated borders
    x = t([[0, 0, 1, 1]] * 3)
    g = sobel_magnitude(x)[0, 0]
    # unnormalised Sobel Gx at columns 1 and 2 = (1+2+1) * (1 - 0) = 4, Gy = 0; elsewhere 0
    assert torch.allclose(g, t([[0, 4, 4, 0]] * 3)[0, 0])


def test_max_gradient_loss_by_hand():
    step = t([[0, 0, 1, 1]] * 3)
    flat = torch.zeros_like(step)
    # target = max(|grad step|, 0) = [0,4,4,0] per row; fused flat -> mean |0 - target| = 8/4 = 2
    assert max_gradient_loss(flat, step, flat).item() == pytest.approx(2.0)
    assert max_gradient_loss(step, flat, step).item() == pytest.approx(0.0)
    # gain 1.5: |4 - 6| at the two edge columns -> mean 1.0
    assert max_gradient_loss(step, step, flat, gain=1.5).item() == pytest.approx(1.0)


def test_dual_ssim_loss_is_zero_for_identical_and_weights_sources():
    torch.manual_seed(0)
    a, b = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    assert dual_ssim_loss(a, a, a).item() == pytest.approx(0.0, abs=1e-5)
    only_ir = dual_ssim_loss(a, a, b, ir_weight=1.0).item()
    only_vi = dual_ssim_loss(a, a, b, ir_weight=0.0).item()
    assert only_ir == pytest.approx(0.0, abs=1e-5) and only_vi > 0.5
    assert dual_ssim_loss(a, a, b).item() == pytest.approx(0.5 * only_vi, rel=1e-5)


def test_content_loss_is_weighted_sum_of_parts():
    torch.manual_seed(1)
    f, a, b = (torch.rand(2, 1, 12, 12) for _ in range(3))
    total, parts = ContentLoss(w_int=2.0, w_grad=0.5, w_ssim=3.0)(f, a, b)
    assert set(parts) == {"int", "grad", "ssim"}
    assert total.item() == pytest.approx(float(2.0 * parts["int"] + 0.5 * parts["grad"] + 3.0 * parts["ssim"]), rel=1e-6)
