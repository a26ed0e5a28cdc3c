"""A tiny stage-5 run end to end: outputs, the four mAP figures, the mode, and no network."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize("mode", ["bilevel"])
def test_tiny_stage5_run_offline(tmp_path, mode, tiny_dataset, tiny_fusion, socket_guard):
    from fusionlab.models.detector import load_detector
    from fusionlab.models.fusion import load_fusion_model
    from fusionlab.stages import detect
    from fusionlab.stages.base import StageContext, WandbSettings

    tiny_det = {"cfg": "yolov8n.yaml", "width_multiple": 0.0625, "depth_multiple": 0.33, "imgsz": 64}
    cfg = detect.Config.model_validate({
        "stage": "detect", "mode": mode, "fusion": str(tiny_fusion),
        "data": {"root": str(tiny_dataset), "batch_size": 4, "val_fraction": 0.25},
        "detector": tiny_det, "protocol": {"epochs": 1, "batch_size": 4, "detector": tiny_det},
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False},
        "panel_images": 2,
    })
    ctx = StageContext(name="detect", out_dir=tmp_path / "detect", outputs=detect.OUTPUTS,
                       wandb=WandbSettings(enabled=False))
    metrics = detect.run(cfg, ctx)

    assert socket_guard == []
    assert metrics["mode"] == mode
    for s in ("ir", "vis", "fused", "bilevel"):
        assert 0.0 <= metrics[f"map50/{s}"] <= 1.0
    json.dumps(metrics)  # manifest-ready
    for name in detect.OUTPUTS:
        assert (ctx.out_dir / name).exists(), name
    rows = json.loads((ctx.out_dir / "map.json").read_text())["rows"]
    assert [r["set"] for r in rows if r["class"] == "all"] == ["ir", "vis", "fused", "bilevel"]
    load_detector(ctx.output("detector"))
    refined = load_fusion_model(ctx.output("fusion"))
    assert json.loads((ctx.output("fusion") / "config.json").read_text())["refined_by"] == f"detect ({mode})"
    assert sum(p.numel() for p in refined.parameters()) > 0


def test_stage_yaml_defaults_validate(repo_dir):
    import yaml

    from fusionlab.stages import detect

    raw = yaml.safe_load((repo_dir / "stages" / "5-detect.yaml").read_text())
    assert raw["fusion"] == "${fusion.outputs.fusion}"
    assert raw["data"]["root"] == "${scenes.outputs.dataset}"
    assert raw["embeddings"] == "${captions.outputs.embeddings}"
    cfg = detect.Config.model_validate(raw)
    assert cfg.mode == "bilevel"


def test_box_panels_for_wandb_and_png():
    import torch
    import wandb

    from fusionlab.stages.detect import _wandb_boxes, draw_boxes

    images = torch.full((2, 3, 32, 48), 100, dtype=torch.uint8)
    preds = [torch.tensor([[4.0, 4.0, 20.0, 20.0, 0.9, 1.0], [1.0, 1.0, 3.0, 3.0, 0.1, 0.0]]), torch.zeros(0, 6)]
    gts = [torch.tensor([[1, 0.25, 0.375, 0.33, 0.5]]), torch.zeros(0, 5)]
    grid = draw_boxes(images, preds, gts, ["a", "b"])
    assert grid.dtype == torch.uint8 and grid.shape[0] == 3
    assert (grid[0] > 200).any()  # red predicted box drawn

    class FakeRun:
        logged: dict = {}

        def log(self, data):
            self.logged.update(data)

    run = FakeRun()
    _wandb_boxes(run, images, preds, ["a", "b"])
    panel = run.logged["detect/boxes_on_fused"]
    assert len(panel) == 2 and all(isinstance(p, wandb.Image) for p in panel)
    boxes = panel[0]._boxes["predictions"]._val  # wandb keeps box_data here
    assert len(boxes) == 1 and boxes[0]["class_id"] == 1  # the low-confidence box is left out
