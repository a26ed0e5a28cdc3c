"""FusionNet contract: registry, build errors, save/load round trip, padding, colour path."""

import pytest
import torch

from fusionlab.errors import ConfigError, PipelineError
from fusionlab.models.fusion import (
    FusionNet,
    build_fusion_model,
    fuse_rgb,
    load_fusion_model,
    pad_multiple,
    register_fusion_model,
    rgb_to_y,
    save_fusion_model,
    unpad,
)


@register_fusion_model("_test_rgb_down4")
class RgbDown4(FusionNet):
    """A native-RGB net that only works on multiples of 4 (it downsamples twice)."""

    out_channels = 3
    multiple = 4

    def __init__(self, ch: int = 3):
        super().__init__()
        self.down = torch.nn.Conv2d(4, ch, 4, stride=4)
        self.up = torch.nn.ConvTranspose2d(ch, 3, 4, stride=4)

    def forward(self, ir, vi, text=None):
        assert ir.shape[-1] % 4 == 0 and ir.shape[-2] % 4 == 0
        return torch.sigmoid(self.up(self.down(torch.cat([ir, vi], 1))))


def test_build_unknown_name_suggests_the_closest():
    with pytest.raises(ConfigError, match="Did you mean 'baseline'"):
        build_fusion_model({"name": "baselin"})
    with pytest.raises(ConfigError, match="bad arguments"):
        build_fusion_model({"name": "baseline", "widht": 3})
    with pytest.raises(ConfigError, match="'name'"):
        build_fusion_model({"width": 3})


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    net = build_fusion_model({"name": "baseline", "width": 6, "depth": 2})
    with torch.no_grad():
        net.head.weight.normal_()
    path = save_fusion_model(tmp_path / "fusion", net, extra={"note": "x"})
    loaded = load_fusion_model(path)
    assert loaded.config == {"name": "baseline", "width": 6, "depth": 2}
    assert not loaded.training
    ir, vi = torch.rand(1, 1, 9, 11), torch.rand(1, 3, 9, 11)
    assert torch.equal(net.eval()(ir, vi), loaded(ir, vi))


def test_load_errors_name_the_folder(tmp_path):
    with pytest.raises(PipelineError, match="does not exist"):
        load_fusion_model(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(PipelineError, match="config.json"):
        load_fusion_model(tmp_path / "half")


def test_pad_multiple_and_unpad():
    x = torch.arange(35.0).reshape(1, 1, 5, 7)
    p, size = pad_multiple(x, 4)
    assert p.shape[-2:] == (8, 8) and size == (5, 7)
    assert torch.equal(unpad(p, size), x)
    tiny, _ = pad_multiple(torch.ones(1, 1, 1, 2), 8)  # too small to reflect: replicate
    assert tiny.shape[-2:] == (8, 8) and torch.all(tiny == 1)


def test_fuse_rgb_keeps_odd_sizes_for_rgb_and_y_nets():
    torch.manual_seed(0)
    ir, vi = torch.rand(2, 1, 13, 19), torch.rand(2, 3, 13, 19)
    rgb_net = build_fusion_model({"name": "_test_rgb_down4"})
    assert fuse_rgb(rgb_net, ir, vi).shape == (2, 3, 13, 19)
    y_net = build_fusion_model({"name": "baseline", "width": 4, "depth": 1})
    out = fuse_rgb(y_net, ir, vi)
    assert out.shape == (2, 3, 13, 19)


def test_y_path_restores_vis_chroma():
    """A fresh baseline without stretch outputs ~max(IR, Y); where VIS is brighter the output is VIS."""
    import kornia

    torch.manual_seed(0)
    net = build_fusion_model({"name": "baseline", "width": 4, "depth": 1, "stretch": 0.0})
    vi = torch.rand(1, 3, 8, 8) * 0.5 + 0.4
    ir = torch.zeros(1, 1, 8, 8)
    out = fuse_rgb(net, ir, vi)
    assert torch.allclose(out, vi, atol=2e-3)
    assert torch.allclose(rgb_to_y(vi), kornia.color.rgb_to_ycbcr(vi)[:, :1], atol=1e-6)


def test_text_net_without_text_is_a_clear_error():
    @register_fusion_model("_test_needs_text")
    class NeedsText(FusionNet):
        needs_text = True

        def forward(self, ir, vi, text=None):
            return ir

    with pytest.raises(ConfigError, match="needs text"):
        fuse_rgb(build_fusion_model({"name": "_test_needs_text"}), torch.rand(1, 1, 4, 4), torch.rand(1, 3, 4, 4))
