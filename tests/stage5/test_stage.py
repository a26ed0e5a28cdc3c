"""A tiny stage-5 run end to end: outputs, the four mAP figures, the mode, and no network."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize("mode", ["bilevel"])
def test_tiny_stage5_run_offline(tmp_path, mode, tiny_dataset, tiny_fusion, socket_guard):
    from fusionlab.models.fusion import load_fusion_model
    from fusionlab.models.detector import load_detector
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
