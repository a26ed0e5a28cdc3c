"""Fixtures for the runner tests: tiny real stages (fixture_stages/) importable in subprocesses."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture
def pipeline_env(monkeypatch, tmp_path):
    """Makes fixture_stages importable here and in stage processes, pins the code version."""
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    # Other work in this checkout may edit fusionlab/ while tests run; pin the code version
    # (the code-key tests unset it).
    monkeypatch.setenv("FUSIONLAB_CODE_VERSION", "tests")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    conf = tmp_path / "conf"
    shutil.copytree(HERE / "conf", conf)
    monkeypatch.chdir(tmp_path)
    yield conf


