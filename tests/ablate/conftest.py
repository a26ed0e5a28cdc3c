"""Fixtures for the ablation tests: a two-stage pipeline of tiny real stages, importable in subprocesses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PIPELINE_TESTS = HERE.parent / "pipeline"  # its fixture_stages.counter is the upstream training stage


@pytest.fixture
def ablate_env(monkeypatch, tmp_path):
    """`train` (a Lightning regression) -> `score` (seeded); returns the pipeline YAML. Runs in tmp_path."""

    paths = [str(HERE), str(PIPELINE_TESTS)]
    for p in paths:
        monkeypatch.syspath_prepend(p)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FUSIONLAB_CODE_VERSION", "tests")  # edits elsewhere in the checkout must not rerun stages
    monkeypatch.setenv("WANDB_MODE", "disabled")
    (tmp_path / "score.yaml").write_text("stage: ablate_fixtures.scored\nmodel_dir: ${train.outputs.model}\n")
    (tmp_path / "pipeline.yaml").write_text(
        "run_dir: r\nwandb: {enabled: false}\nreport: false\nstages:\n"
        f"  - name: train\n    config: {PIPELINE_TESTS / 'conf' / 'counter.yaml'}\n"
        "    set: {trainer.max_epochs: 1, n_samples: 16}\n"  # one real Lightning fit of 2 steps: seconds
        "  - name: score\n    config: score.yaml\n"
    )
    monkeypatch.chdir(tmp_path)
    yield tmp_path / "pipeline.yaml"
