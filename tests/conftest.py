"""Shared fixtures: offline environment for every test, and the ../shared folder when present."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()

# No test may reach the network: hubs, W&B and ultralytics stay offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("YOLO_OFFLINE", "1")
# Tests that import ultralytics before any run dir exists must not write settings into $HOME.
os.environ.setdefault("YOLO_CONFIG_DIR", str(REPO / ".pytest_cache" / "ultralytics"))
os.environ.setdefault("FUSIONLAB_WEIGHTS", str(REPO / ".pytest_cache" / "no-weights"))


@pytest.fixture(scope="session")
def repo_dir() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ../shared folder (datasets, reference metrics); skips when absent."""
    if not (SHARED / "datasets").is_dir():
        pytest.skip(f"../shared is absent ({SHARED}): real-data checks need it beside the checkout")
    return SHARED


def run_cli(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run `fusionlab ARGS` in a child process, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "fusionlab", *args], capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"fusionlab {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def cli():
    """`cli("run", "p.yaml", check=False)` runs the real CLI in a child process."""
    return run_cli


@pytest.fixture
def cli_inproc(capsys):
    """Like `cli`, but in this process (fast, for plans and errors that run no stage)."""

    def call(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        from fusionlab.cli import main

        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse errors
            code = exc.code if isinstance(exc.code, int) else 2
        out, err = capsys.readouterr()
        proc = subprocess.CompletedProcess(["fusionlab", *args], code, out, err)
        if check and code != 0:
            raise AssertionError(f"fusionlab {' '.join(args)} failed ({code}):\n{out}\n{err}")
        return proc

    return call
