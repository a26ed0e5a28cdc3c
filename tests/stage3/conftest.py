"""Stage 3 fixtures: a tiny synthetic dataset and tiny (untrained) stage-1 depth nets on disk."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    from fusionlab.data.synth import generate

    return generate(tmp_path_factory.mktemp("s3data") / "ds", n=6, seed=0, size=(64, 48), progress=False)


@pytest.fixture(scope="session")
def depth_nets(tmp_path_factory):
    """Folders written the way stage 1 writes them (random weights: captions still get ranges)."""
    import torch

    from fusionlab.models.depth import build_depth_estimator, save_depth_estimator

    root = tmp_path_factory.mktemp("s3depth")
    torch.manual_seed(0)
    for name, channels in (("depth_ir", 1), ("depth_vis", 3)):
        save_depth_estimator(root / name, build_depth_estimator({"in_channels": channels, "base_channels": 4, "levels": 2}))
    return root / "depth_ir", root / "depth_vis"


@pytest.fixture
def stage_config(tiny_dataset, depth_nets):
    def make(**model):
        return {
            "stage": "captions",
            "data": {"root": str(tiny_dataset), "batch_size": 4},
            "model": {"captioner": {"kind": "depth-template", "depth_ir": str(depth_nets[0]),
                                    "depth_vis": str(depth_nets[1])},
                      "clip": {"tiny": {"embed_dim": 32, "vision_width": 32, "image_size": 32}}, **model},
            "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
        }

    return make
