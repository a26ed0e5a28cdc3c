import torch

from fusionlab.data.colour import fuse_native_rgb, fuse_on_y, rgb_to_ycbcr, to_gray, ycbcr_to_rgb


def test_identity_on_y_returns_the_visible_image():
    torch.manual_seed(0)
    vi = torch.rand(2, 3, 16, 20)
    ir = torch.rand(2, 1, 16, 20)
    calls = []

    def keep_visible_y(ir_y, vi_y):
        calls.append((ir_y.shape, vi_y.shape))
        return vi_y

    out = fuse_on_y(keep_visible_y, ir, vi)
    assert calls == [((2, 1, 16, 20), (2, 1, 16, 20))]
    assert (out - vi).abs().max() <= 1 / 255


def test_identity_on_y_of_8bit_synthetic_scene(synthetic):
    from fusionlab.data.datasets import open_dataset

    s = open_dataset(synthetic)[0]
    out = fuse_on_y(lambda ir, y: y, s.ir[None], s.vi[None])
    assert (out[0] - s.vi).abs().max() <= 1 / 255


def test_fused_y_carries_the_infrared_and_keeps_chroma():
    vi = torch.rand(1, 3, 8, 8)
    ir = torch.rand(1, 1, 8, 8)
    out = fuse_on_y(lambda ir_y, vi_y: ir_y, ir, vi)
    y, cbcr = rgb_to_ycbcr(out)[:, :1], rgb_to_ycbcr(vi)[:, 1:]
    inside = (out > 0.01).all(1, keepdim=True) & (out < 0.99).all(1, keepdim=True)  # no gamut clipping
    assert torch.allclose(y[inside], ir[inside], atol=1e-4)
    assert torch.allclose(
        rgb_to_ycbcr(out)[:, 1:][inside.expand(-1, 2, -1, -1)], cbcr[inside.expand(-1, 2, -1, -1)], atol=1e-4
    )


def test_round_trip_and_rgb_path():
    x = torch.rand(1, 3, 5, 7)
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, atol=1e-5)
    assert to_gray(x).shape == (1, 1, 5, 7) and to_gray(x[:, :1]) is not None
    out = fuse_native_rgb(lambda ir, vi: vi * 2 - 0.5, torch.rand(1, 1, 5, 7), x)
    assert out.shape == (1, 3, 5, 7) and out.min() >= 0 and out.max() <= 1
    try:
        fuse_native_rgb(lambda ir, vi: ir, torch.rand(1, 1, 5, 7), x)
    except ValueError as exc:
        assert "fuse_on_y" in str(exc)
    else:
        raise AssertionError("a 1-channel output must be refused by fuse_native_rgb")
