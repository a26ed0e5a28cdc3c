"""The stage runner on tiny real Lightning stages: skip, rerun, selection, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def manifest(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / stage / "manifest.json").read_text())


def test_unchanged_stages_are_skipped(cli, cli_inproc, pipeline_env):
    cli("run", str(pipeline_env / "pipeline.yaml"), "run_dir=r")
    first = {s: manifest(Path("r"), s) for s in ("train", "consume")}
    assert first["train"]["metrics"]["global_step"] == 16
    assert first["consume"]["upstream"]["train"]["outputs_digest"] == first["train"]["outputs_digest"]
    for key in ("config", "config_hash", "key", "git_sha", "fusionlab_version", "outputs", "metrics",
                "wall_time_s", "devices", "precision"):
        assert key in first["train"], key
    assert set(first["train"]["outputs"]) == {"model/config.json", "model/model.safetensors"}

    out = cli_inproc("run", str(pipeline_env / "pipeline.yaml"), "run_dir=r").stdout  # skips start no process
    assert "skip  train" in out and "skip  consume" in out
    assert "| train | skipped |" in out
    assert manifest(Path("r"), "train")["finished_at"] == first["train"]["finished_at"]


def test_config_change_plans_a_rerun_of_that_stage_and_downstream(cli, cli_inproc, pipeline_env):
    """The plan for a changed key (the fast half of the next test; the rerun itself is the slow half,
    and test_staging.py reruns a stage for real)."""
    pipe = str(pipeline_env / "pipeline.yaml")
    cli("run", pipe, "run_dir=r")
    out = cli_inproc("run", pipe, "run_dir=r", "consume.scale=2.0", "--dry-run").stdout
    assert "skip  train" in out and "run   consume  config changed (scale)" in out
    out = cli_inproc("run", pipe, "run_dir=r", "train.n_samples=32", "--dry-run").stdout
    assert "run   train    config changed (n_samples)" in out and "run   consume  upstream train reruns" in out


@pytest.mark.slow  # three real pipeline runs (~70 s); the plan is checked fast above
def test_config_change_reruns_that_stage_and_downstream(cli, pipeline_env):
    pipe = str(pipeline_env / "pipeline.yaml")
    cli("run", pipe, "run_dir=r")
    before = {s: manifest(Path("r"), s)["key"] for s in ("train", "consume")}

    out = cli("run", pipe, "run_dir=r", "consume.scale=2.0").stdout
    assert "skip  train" in out and "run   consume  config changed (scale)" in out
    assert manifest(Path("r"), "train")["key"] == before["train"]

    out = cli("run", pipe, "run_dir=r", "consume.scale=2.0", "train.n_samples=32").stdout
    assert "run   train    config changed (n_samples)" in out
    assert "run   consume  upstream train reruns" in out
    assert manifest(Path("r"), "train")["metrics"]["global_step"] == 8


def test_tampered_output_is_detected_and_rerun(cli, cli_inproc, pipeline_env):
    pipe = str(pipeline_env / "pipeline.yaml")
    cli("run", pipe, "run_dir=r")
    (Path("r") / "consume" / "summary.json").write_text("{}")
    out = cli_inproc("run", pipe, "run_dir=r", "--dry-run").stdout
    assert "run   consume  output 'summary.json' changed since the stage ran" in out


def test_force_from_only_and_dry_run(cli, cli_inproc, pipeline_env):
    pipe = str(pipeline_env / "pipeline.yaml")
    out = cli_inproc("run", pipe, "run_dir=r", "--dry-run").stdout
    assert "run   train    never finished here" in out
    assert not Path("r").exists(), "--dry-run must not create anything"

    cli("run", pipe, "run_dir=r")
    t0 = manifest(Path("r"), "train")["finished_at"], manifest(Path("r"), "consume")["finished_at"]

    out = cli("run", pipe, "run_dir=r", "--only", "consume", "--force").stdout
    assert "leave train" in out and "run   consume  --force" in out
    assert manifest(Path("r"), "train")["finished_at"] == t0[0]

    out = cli_inproc("run", pipe, "run_dir=r", "--from", "consume", "--dry-run").stdout
    assert "leave train" in out and "skip  consume" in out

    out = cli_inproc("run", pipe, "run_dir=r", "--force", "--dry-run").stdout
    assert "run   train    --force" in out and "run   consume  --force" in out


def test_misspelt_key_names_file_key_and_suggestion(cli_inproc, pipeline_env):
    pipe = str(pipeline_env / "pipeline.yaml")
    proc = cli_inproc("run", pipe, "run_dir=r", "train.trainer.max_epoch=3", check=False)
    assert proc.returncode == 2
    assert "counter.yaml" in proc.stderr
    assert "unknown key 'trainer.max_epoch'" in proc.stderr
    assert "did you mean 'trainer.max_epochs'" in proc.stderr
    assert "Traceback" not in proc.stderr and not Path("r").exists()

    cfg = pipeline_env / "counter.yaml"
    cfg.write_text(cfg.read_text().replace("n_samples:", "n_sample:"))
    proc = cli_inproc("run", pipe, "run_dir=r", "--dry-run", check=False)
    assert proc.returncode == 2 and str(cfg) in proc.stderr and "did you mean 'n_samples'" in proc.stderr


def test_missing_upstream_artifact_is_a_clear_error(cli_inproc, pipeline_env):
    proc = cli_inproc("run", str(pipeline_env / "pipeline.yaml"), "run_dir=r", "--only", "consume", check=False)
    assert proc.returncode == 2
    assert "needs the artifacts of 'train'" in proc.stderr and "--only train" in proc.stderr
    assert not (Path("r") / "consume" / "manifest.json").exists()
    dry = cli_inproc("run", str(pipeline_env / "pipeline.yaml"), "run_dir=r", "--only", "consume", "--dry-run",
                     check=False)
    assert dry.returncode == 2 and "needs the artifacts of 'train'" in dry.stderr  # a dry run refuses it too

    # Outside a pipeline, an unresolved reference names itself and the fix.
    proc = cli_inproc("stage", str(pipeline_env / "consumer.yaml"), "--out", "solo", check=False)
    assert proc.returncode == 2 and "${train.outputs.model}" in proc.stderr

    # A reference to an output the upstream stage does not declare.
    (pipeline_env / "consumer.yaml").write_text("stage: fixture_stages.consumer\nmodel_dir: ${train.outputs.modle}\n")
    proc = cli_inproc("run", str(pipeline_env / "pipeline.yaml"), "--dry-run", check=False)
    assert proc.returncode == 2 and "has outputs model, not 'modle'" in proc.stderr


def test_standalone_stage_with_path_override(cli, pipeline_env, tmp_path):
    cli("stage", str(pipeline_env / "counter.yaml"), "--out", "solo/train", "trainer.max_epochs=1")
    cli("stage", str(pipeline_env / "consumer.yaml"), "--out", "solo/consume",
              f"model_dir={tmp_path / 'solo/train/model'}")
    assert manifest(Path("solo"), "consume")["metrics"]["value"] == pytest.approx(
        json.loads((Path("solo") / "consume" / "summary.json").read_text())["value"])


def test_wandb_offline_run_per_stage_with_lineage_metadata(cli, pipeline_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cli("run", str(pipeline_env / "pipeline.yaml"), "run_dir=r", "wandb.enabled=true")
    group = (Path("r") / ".fusionlab" / "group.txt").read_text().strip()
    for stage in ("train", "consume"):
        runs = list((Path("r") / stage / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(runs) == 1, f"{stage}: {runs}"
        record = runs[0].read_bytes()  # the offline run's records: config, summary, artifacts
        assert b"stage_key" in record and group.encode() in record
        assert f"{stage}-".encode() in record  # its outputs logged as an artifact
    consume = next((Path("r") / "consume" / "wandb").glob("offline-run-*/run-*.wandb")).read_bytes()
    assert b"outputs_digest" in consume  # the upstream (train) is recorded for lineage
    assert group.startswith("r-")


def test_misspelt_stage_name_and_empty_pipeline_are_clear_errors(cli_inproc, pipeline_env):
    pipe = pipeline_env / "pipeline.yaml"
    proc = cli_inproc("run", str(pipe), "run_dir=r", "trian.trainer.max_epochs=3", "--dry-run", check=False)
    assert proc.returncode == 2 and "no stage named 'trian'" in proc.stderr
    assert "did you mean 'train.trainer.max_epochs'" in proc.stderr
    empty = pipeline_env / "empty.yaml"
    empty.write_text("run_dir: r\nstages: []\n")
    proc = cli_inproc("run", str(empty), "--dry-run", check=False)
    assert proc.returncode == 2 and "'stages'" in proc.stderr and "Traceback" not in proc.stderr
