"""The ultralytics detector wrapper: hygiene, batch format, loss, inference, artifacts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


def test_prepare_ultralytics_keeps_settings_and_font_in_run_dir(tmp_path):
    """In a fresh process (ultralytics reads its settings once, at import): nothing goes to $HOME."""
    import json
    import subprocess
    import sys

    code = (
        "import json, os, sys; from fusionlab.models.detector import prepare_ultralytics; "
        "home = prepare_ultralytics(sys.argv[1]); "
        "from ultralytics.utils import SETTINGS, USER_CONFIG_DIR; "
        "print(json.dumps({'home': str(home), 'config': str(USER_CONFIG_DIR), 'offline': os.environ['YOLO_OFFLINE'], "
        "'sync': SETTINGS['sync'], 'runs': SETTINGS['runs_dir']}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "YOLO_CONFIG_DIR"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True,
                         env=env, check=True).stdout
    info = json.loads(out.strip().splitlines()[-1])
    home = Path(info["home"])
    assert Path(info["config"]) == home
    assert str(home).startswith(str(tmp_path)) and not str(home).startswith(str(Path.home() / ".config"))
    assert (home / "Arial.ttf").stat().st_size > 10_000  # a real TTF, no download needed
    assert info["offline"] == "1" and info["sync"] is False
    assert str(tmp_path) in info["runs"]


def test_data_layer_boxes_become_ultralytics_targets():
    from fusionlab.models.detector import to_ultralytics_batch

    boxes = torch.tensor([[0, 2, 0.5, 0.4, 0.2, 0.1], [1, 0, 0.3, 0.3, 0.1, 0.2]])
    batch = to_ultralytics_batch(boxes)
    assert batch["batch_idx"].tolist() == [0.0, 1.0]
    assert batch["cls"].shape == (2, 1) and batch["cls"].flatten().tolist() == [2.0, 0.0]
    assert torch.equal(batch["bboxes"], boxes[:, 2:])


def test_loss_trains_and_predict_returns_pixel_boxes(tiny_detector_cfg):
    from fusionlab.models.detector import DetectionCriterion, build_detector, predict

    torch.manual_seed(0)
    model = build_detector(tiny_detector_cfg, nc=3, names=["a", "b", "c"])
    crit = DetectionCriterion(model)
    images = torch.rand(2, 3, 64, 64)
    boxes = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.3], [1, 2, 0.25, 0.25, 0.2, 0.2]])
    loss, items = crit(model(images), boxes)
    assert loss.ndim == 0 and torch.isfinite(loss) and items.shape == (3,)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    dets = predict(model, images[:, :1, :48, :])  # 1-channel, height not a stride multiple
    assert len(dets) == 2 and all(d.shape[1] == 6 for d in dets)
    for d in dets:
        assert (d[:, [1, 3]] <= 48).all() and (d[:, 5] < 3).all()


def test_width_multiple_shrinks_the_yaml_model(tiny_detector_cfg):
    from fusionlab.models.detector import build_detector

    small = build_detector(tiny_detector_cfg, nc=2)
    wider = build_detector(tiny_detector_cfg.model_copy(update={"width_multiple": 0.125}), nc=2)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(small) < n(wider)


def test_yolov5_yaml_builds(tiny_detector_cfg):
    from fusionlab.models.detector import build_detector

    model = build_detector(tiny_detector_cfg.model_copy(update={"cfg": "yolov5n.yaml"}), nc=2)
    assert model.model[-1].nc == 2


def test_unknown_yaml_is_a_config_error(tiny_detector_cfg):
    from fusionlab.errors import ConfigError
    from fusionlab.models.detector import build_detector

    with pytest.raises(ConfigError, match="detector.cfg"):
        build_detector(tiny_detector_cfg.model_copy(update={"cfg": "yolo_nonexistent_v99.yaml"}), nc=2)


def test_save_and_load_detector_roundtrip_is_safetensors(tmp_path, tiny_detector_cfg):
    from fusionlab.models.detector import build_detector, load_detector, save_detector

    torch.manual_seed(1)
    model = build_detector(tiny_detector_cfg, nc=2, names=["x", "y"]).eval()
    path = save_detector(tmp_path / "detector", model, tiny_detector_cfg)
    assert {p.name for p in path.iterdir()} == {"config.json", "model.safetensors"}
    again = load_detector(path).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x)[0], again(x)[0], atol=1e-6)
    assert again.names == {0: "x", 1: "y"}
    # `pretrained:` accepts our own folder too
    from fusionlab.models.detector import build_detector as build

    assert torch.allclose(build(tiny_detector_cfg.model_copy(update={"pretrained": str(path)}), nc=2).eval()(x)[0],
                          model(x)[0], atol=1e-6)


def test_missing_pretrained_offline_is_a_clear_error(tiny_detector_cfg):
    from fusionlab.errors import WeightsMissingError
    from fusionlab.models.detector import build_detector

    with pytest.raises(WeightsMissingError, match="detector.pretrained"):
        build_detector(tiny_detector_cfg.model_copy(update={"pretrained": "yolov8n.pt"}), nc=2)
