"""Fixtures for the depth (stage 1) and denoiser (stage 2) tests: a tiny synthetic dataset."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """8 synthetic scenes of 64x48 with IR, VIS and metric depth (the pipeline's on-disk layout)."""
    from fusionlab.data.synth import generate

    return generate(tmp_path_factory.mktemp("stages12") / "ds", n=8, seed=0, size=(64, 48))
