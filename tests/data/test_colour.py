"""The colour path `fuse` uses: fuse on Y, re-attach the visible chroma (`restore_colour`)."""

import kornia
import torch

from fusionlab.data.colour import rgb_to_y, to_gray
from fusionlab.models.fusion.base import restore_colour


def test_identity_on_y_returns_the_visible_image():
    torch.manual_seed(0)
    vi = torch.rand(2, 3, 16, 20)
    out = restore_colour(rgb_to_y(vi), vi)  # a net that returns the visible Y unchanged
    assert (out - vi).abs().max() <= 1 / 255


def test_identity_on_y_of_8bit_synthetic_scene(synthetic):
    from fusionlab.data.datasets import open_dataset

    s = open_dataset(synthetic)[0]
    out = restore_colour(rgb_to_y(s.vi[None]), s.vi[None])
    assert (out[0] - s.vi).abs().max() <= 1 / 255


def test_fused_y_carries_the_infrared_and_keeps_chroma():
    vi = torch.rand(1, 3, 8, 8)
    ir = torch.rand(1, 1, 8, 8)
    out = restore_colour(ir, vi)  # a net that returns the IR image as the fused Y
    ycbcr, vi_ycbcr = kornia.color.rgb_to_ycbcr(out), kornia.color.rgb_to_ycbcr(vi)
    inside = (out > 0.01).all(1, keepdim=True) & (out < 0.99).all(1, keepdim=True)  # no gamut clipping
    assert inside.float().mean() > 0.3
    assert torch.allclose(ycbcr[:, :1][inside], ir[inside], atol=1e-4)
    both = inside.expand(-1, 2, -1, -1)
    assert torch.allclose(ycbcr[:, 1:][both], vi_ycbcr[:, 1:][both], atol=1e-4)


def test_luma_matches_kornia_and_gray_passes_through():
    x = torch.rand(1, 3, 5, 7)
    assert torch.allclose(rgb_to_y(x), kornia.color.rgb_to_ycbcr(x)[:, :1], atol=1e-6)
    assert to_gray(x).shape == (1, 1, 5, 7)
    gray = x[:, :1]
    assert to_gray(gray) is gray
