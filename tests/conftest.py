"""Shared fixtures: offline environment for every test, and the ../shared folder when present."""

from __future__ import annotations

import os
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
