import pytest
import torch

from fusionlab.errors import WeightsMissingError
from fusionlab.models.depth import build_depth_estimator, load_depth_estimator, save_depth_estimator

TINY = {"base_channels": 4, "levels": 2, "min_depth": 0.5, "max_depth": 80.0}


def _tiny_depth_anything(path):
    """A randomly initialised, tiny Depth Anything saved like a downloaded checkpoint."""
    from transformers import AutoModelForDepthEstimation, DepthAnythingConfig, Dinov2Config

    backbone = Dinov2Config(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
                            image_size=28, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 8, 16, 16],
                              fusion_hidden_size=8, head_hidden_size=4, depth_estimation_type="metric", max_depth=80)
    AutoModelForDepthEstimation.from_config(cfg).save_pretrained(str(path))
    return path


@pytest.mark.parametrize("channels", [1, 3])
def test_compact_estimator_gives_positive_metric_depth_at_input_size(channels):
    net = build_depth_estimator({**TINY, "in_channels": channels}).eval()
    x = torch.rand(2, channels, 37, 50)  # odd size: padded inside, cropped back
    y = net(x)
    assert y.shape == (2, 1, 37, 50)
    assert (y >= 0.5 - 1e-4).all() and (y <= 80.0 + 1e-3).all()
    other = net(torch.rand(2, 4 - channels if channels == 3 else 3, 37, 50)[:, : (1 if channels == 3 else 3)])
    assert other.shape == (2, 1, 37, 50)  # the IR net takes RGB (as luminance), the VIS net takes gray


@pytest.mark.parametrize("channels", [1, 3])
def test_compact_save_load_round_trip(tmp_path, channels):
    net = build_depth_estimator({**TINY, "in_channels": channels})
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net(torch.rand(2, channels, 32, 32)).mean().backward()  # train mode: BN statistics move too
    opt.step()
    net.eval()
    save_depth_estimator(tmp_path / "d", net)
    loaded = load_depth_estimator(tmp_path / "d")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(3, channels, 40, 24)
    torch.testing.assert_close(loaded(x), net(x), atol=1e-6, rtol=1e-6)


def test_pretrained_transformers_model_from_local_folder_round_trips(tmp_path):
    folder = _tiny_depth_anything(tmp_path / "tiny-da")
    net = build_depth_estimator({"arch": "hf", "pretrained": str(folder), "in_channels": 1,
                                 "min_depth": 0.1, "max_depth": 80.0})
    assert net.config["size_multiple"] == 14 and net.config["hf_config"]["model_type"] == "depth_anything"
    x = torch.rand(2, 1, 30, 44)
    net.train()
    net(x).mean().backward()  # fine-tunable: gradients reach the transformer
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.net.model.parameters())
    net.eval()
    save_depth_estimator(tmp_path / "saved", net)
    (folder / "model.safetensors").unlink()  # the saved estimator must not need the original any more
    loaded = load_depth_estimator(tmp_path / "saved")
    y = net(x)
    assert y.shape == (2, 1, 30, 44) and (y > 0).all()
    torch.testing.assert_close(loaded(x), y, atol=1e-6, rtol=1e-6)


def test_missing_pretrained_depth_model_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsMissingError) as err:
        build_depth_estimator({"arch": "hf", "pretrained": "depth-anything/Depth-Anything-V2-Small-hf"},
                              key="model.pretrained")
    text = str(err.value)
    assert "depth model" in text and "model.pretrained" in text and "Depth-Anything-V2-Small-hf" in text
    assert "null" in text  # says how to fix it


def test_missing_local_depth_folder_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsMissingError, match="does not exist"):
        build_depth_estimator({"arch": "hf", "pretrained": str(tmp_path / "nope")})
