"""`fusionlab export --onnx`: the graph reproduces `fuse_rgb` (when onnxruntime is installed)."""

import numpy as np
import pytest
import torch


def test_export_onnx_parity(baseline_ckpt, tmp_path, cli):
    pytest.importorskip("onnx", reason="onnx is not installed (pip install onnx onnxruntime)")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from fusionlab.models.fusion import fuse_rgb, load_fusion_model

    out = tmp_path / "fuse.onnx"
    cli("export", "--checkpoint", str(baseline_ckpt), "--onnx", str(out))
    again = cli("export", "--checkpoint", str(baseline_ckpt), "--onnx", str(out), check=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    net = load_fusion_model(baseline_ckpt)
    torch.manual_seed(0)
    for h, w in [(37, 53), (64, 80)]:  # a size other than the export example: dynamic axes work
        ir, vi = torch.rand(2, 1, h, w), torch.rand(2, 3, h, w)
        (got,) = sess.run(None, {"ir": ir.numpy(), "vi": vi.numpy()})
        with torch.no_grad():
            want = fuse_rgb(net, ir, vi).numpy()
        assert got.shape == want.shape == (2, 3, h, w)
        assert np.abs(got - want).max() < 1e-4


def test_export_refuses_text_presets(tmp_path):
    from fusionlab.errors import ConfigError
    from fusionlab.models.fusion import FusionNet, build_fusion_model, register_fusion_model
    from fusionlab.models.fusion.onnx import export_onnx

    @register_fusion_model("_test_text_export")
    class Texty(FusionNet):
        needs_text = True

        def forward(self, ir, vi, text=None):
            return ir

    with pytest.raises(ConfigError, match="CLIP"):
        export_onnx(build_fusion_model({"name": "_test_text_export"}), tmp_path / "x.onnx")


def test_export_keeps_the_pad_to_multiple_step(tmp_path):
    """A net with `multiple` > 1 (tgif with attention stride 2 pads to it): the graph pads odd sizes
    exactly as `fuse_rgb` does, and the export creates missing parent folders."""
    pytest.importorskip("onnx", reason="onnx is not installed (pip install onnx onnxruntime)")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from fusionlab.models.fusion import build_fusion_model, fuse_rgb
    from fusionlab.models.fusion.onnx import export_onnx

    torch.manual_seed(0)
    net = build_fusion_model({"name": "tgif", "dim": 8, "heads": 2, "encoder_blocks": 1, "decoder_blocks": 1,
                              "attn_stride": 2, "text_guidance": False}).eval()
    assert net.multiple > 1
    with torch.no_grad():
        net.head.weight.normal_(0, 0.1)  # a non-zero head, so the net's output depends on its padding
    out = export_onnx(net, tmp_path / "new" / "dir" / "tgif.onnx")
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for h, w in [(37, 53), (40, 52), (30, 45)]:
        ir, vi = torch.rand(1, 1, h, w), torch.rand(1, 3, h, w)
        (got,) = sess.run(None, {"ir": ir.numpy(), "vi": vi.numpy()})
        with torch.no_grad():
            want = fuse_rgb(net, ir, vi).numpy()
        assert got.shape == want.shape == (1, 3, h, w)
        assert np.abs(got - want).max() < 1e-4, (h, w)
