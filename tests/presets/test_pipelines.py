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


def test_one_override_sets_cpu_threads_for_every_stage_of_the_demo():
    """`cpu_threads=1` (for a CPU shared with other jobs) is valid for every stage type."""
    from fusionlab.pipeline.spec import load_pipeline
    from fusionlab.stages.base import load_stage_module

    _, specs = load_pipeline(REPO / "stages" / "pipeline.yaml", ["cpu_threads=1"])
    assert len(specs) == 7
    for spec in specs:
        assert spec.resolved["cpu_threads"] == 1
        load_stage_module(spec.type).Config.model_validate(
            {**spec.resolved, **{k: "/x" for k, v in spec.resolved.items() if isinstance(v, str) and "${" in v}})


@pytest.mark.parametrize("preset", ["tgif", "text2pixels", "ldfusion", "ldnf"])
def test_text_pipelines_take_every_text_preset(preset):
    """`fusion.preset=<name>` on the RoadScene text pipelines loads for each text-using preset (the
    commands of docs/results.md's five-preset table)."""
    from fusionlab.pipeline.spec import load_pipeline

    name = "roadscene-ldnf" if preset == "ldnf" else "roadscene-text"
    _, specs = load_pipeline(REPO / "stages" / f"{name}.yaml", [f"fusion.preset={preset}"])
    fusion = next(s for s in specs if s.type == "fusion")
    assert fusion.resolved["preset"] == preset and set(fusion.resolved["loss"]) == {preset}
    assert [s.type for s in specs][0] == "captions"  # the captions come from a captions stage over RoadScene
