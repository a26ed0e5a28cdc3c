"""The stage-4 YAML, the presets and the real-data pipelines load and validate as the runner
loads them (references resolved, preset merged, unknown keys rejected)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("preset", ["baseline", "ldnf", "text2pixels", "ldfusion", "tgif"])
def test_stage_yaml_with_each_preset(preset):
    from fusionlab.pipeline.spec import load_stage_config

    _, cfg = load_stage_config(REPO / "stages" / "4-fusion.yaml", {
        "preset": preset, "data.root": "/tmp/x", "inputs.depth_ir": "/a", "inputs.depth_vis": "/b",
        "inputs.denoiser": "/c", "inputs.embeddings": "/d", "inputs.clip": "/e", "inputs.prompts": "/f"})
    assert cfg["preset"] == preset and cfg["model"]  # the preset's network settings were merged in


@pytest.mark.parametrize("name", ["roadscene", "m3fd", "llvip", "kaist"])
def test_real_data_pipelines_validate(name):
    from fusionlab.pipeline.spec import load_pipeline

    if name != "roadscene" and not (REPO / "stages" / "5-detect.yaml").is_file():
        pytest.skip("stages/5-detect.yaml (stage 5) is not in this checkout yet")
    _, specs = load_pipeline(REPO / "stages" / f"{name}.yaml", [f"data.root=/data/{name}"])
    fusion = next(s for s in specs if s.type == "fusion")
    assert fusion.resolved["data"]["root"] == f"/data/{name}"
    if name == "roadscene":
        assert [s.name for s in specs] == ["fusion"] and fusion.resolved["preset"] == "baseline"
    else:
        assert "detect" in [s.type for s in specs]
    if name == "kaist":
        assert [s.type for s in specs] == ["depth", "denoiser", "captions", "fusion", "detect"]
        assert fusion.resolved["preset"] == "ldnf" and fusion.resolved["depth_loss"] is True
