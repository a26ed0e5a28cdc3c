"""`baseline`: starts at the contrast-stretched max of the sources, trains, and its loss falls."""

import pytest
import torch

from fusionlab.losses import ContentLoss
from fusionlab.models.fusion import build_fusion_model
from fusionlab.models.fusion.contrast import robust_range, stretch, stretch_pair


def test_robust_range_and_stretch_by_hand():
    x = torch.linspace(0.2, 0.6, 160 * 160).reshape(1, 1, 160, 160)  # evenly spread values
    lo, hi = robust_range(x, 0.0)
    assert lo.item() == pytest.approx(0.2) and hi.item() == pytest.approx(0.6)
    lo, hi = robust_range(x, 0.1)  # 10th / 90th percentile of a uniform ramp
    assert lo.item() == pytest.approx(0.24, abs=1e-4) and hi.item() == pytest.approx(0.56, abs=1e-4)
    y = stretch(torch.tensor([0.1, 0.24, 0.4, 0.56, 0.9]), lo, hi)
    assert torch.allclose(y.flatten(), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]), atol=1e-4)
    flat = stretch(torch.full((1, 1, 4, 4), 0.5), torch.tensor(0.5), torch.tensor(0.5))
    assert torch.all(flat == 0)  # no division by zero on a flat image


def test_fresh_baseline_is_the_max_of_the_stretched_sources():
    torch.manual_seed(0)
    net = build_fusion_model({"name": "baseline", "width": 4, "depth": 1})
    ir, vi = torch.rand(2, 1, 24, 24) * 0.5, torch.rand(2, 3, 24, 24) * 0.3 + 0.2
    ir_s, y_s = stretch_pair(ir, net.luma(vi), net.stretch)
    assert torch.allclose(net(ir, vi), torch.maximum(ir_s, y_s).clamp(1e-3, 1 - 1e-3), atol=1e-5)
    plain = build_fusion_model({"name": "baseline", "width": 4, "depth": 1, "stretch": 0.0})
    assert torch.allclose(plain(ir, vi), torch.maximum(ir, plain.luma(vi)), atol=1e-3)


def test_stats_from_the_whole_image_are_used_for_a_tile():
    torch.manual_seed(0)
    net = build_fusion_model({"name": "baseline", "width": 4, "depth": 1})
    ir, vi = torch.rand(1, 1, 40, 40), torch.rand(1, 3, 40, 40)
    ir[..., :20, :] *= 0.3  # the top half is dim: a tile of it alone would be stretched more
    stats = net.image_stats(ir, vi)
    whole = net(ir, vi)
    tile = net(ir[..., :20, :], vi[..., :20, :], stats=stats)
    assert torch.allclose(tile[..., 1:-1, 1:-1], whole[..., 1:19, 1:-1], atol=1e-5)
    assert not torch.allclose(net(ir[..., :20, :], vi[..., :20, :]), whole[..., :20, :], atol=1e-2)


def test_baseline_trains_and_its_loss_falls():
    torch.manual_seed(0)
    # without the residual prior the net starts far from the target, so learning must do the work
    net = build_fusion_model({"name": "baseline", "width": 8, "depth": 2, "residual": False})
    loss_fn = ContentLoss()
    yy, xx = torch.meshgrid(torch.linspace(0, 6, 48), torch.linspace(0, 6, 48), indexing="ij")
    ir = (0.3 + 0.2 * torch.sin(2 * xx)).expand(4, 1, 48, 48).clone()
    vi = (0.5 + 0.3 * torch.cos(3 * yy)).expand(4, 3, 48, 48).clone()
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    losses = []
    for _ in range(40):
        total, _ = loss_fn(net(ir, vi), ir, net.luma(vi))
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(total.item())
    assert losses[-1] < 0.7 * losses[0], losses[::8]
