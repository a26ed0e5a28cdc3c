"""Fixtures for the fusion core: a tiny baseline checkpoint and pairs of folders on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def smooth_pair(h: int, w: int, seed: int = 0):
    """A textured, smooth IR/VIS pair (uint8 [h,w], uint8 [h,w,3]) with a warm blob in IR."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ir = 60 + 40 * np.sin(xx / 9.0 + seed) * np.cos(yy / 13.0)
    ir += 140 * np.exp(-(((xx - w * 0.6) / (w * 0.08)) ** 2 + ((yy - h * 0.4) / (h * 0.1)) ** 2))
    vi = np.stack([100 + 80 * np.sin(yy / 7.0 + c) * np.cos(xx / 11.0) for c in range(3)], axis=2)
    vi += rng.normal(0, 4, vi.shape)
    return np.clip(ir, 0, 255).astype(np.uint8), np.clip(vi, 0, 255).astype(np.uint8)


def write_pairs(root: Path, sizes: list[tuple[int, int]]) -> tuple[Path, Path]:
    """Write pairs `p<i>.png` of the given (h, w) sizes under root/ir and root/vi."""
    import cv2

    (root / "ir").mkdir(parents=True, exist_ok=True)
    (root / "vi").mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        ir, vi = smooth_pair(h, w, seed=i)
        assert cv2.imwrite(str(root / "ir" / f"p{i}.png"), ir)
        assert cv2.imwrite(str(root / "vi" / f"p{i}.png"), vi[:, :, ::-1])
    return root / "ir", root / "vi"


@pytest.fixture
def baseline_ckpt(tmp_path) -> Path:
    """A small random baseline saved as a fusion artifact (head perturbed so it is not identity)."""
    import torch

    from fusionlab.models.fusion import build_fusion_model, save_fusion_model

    torch.manual_seed(0)
    net = build_fusion_model({"name": "baseline", "width": 8, "depth": 2})
    with torch.no_grad():
        net.head.weight.normal_(0, 0.2)
    return save_fusion_model(tmp_path / "fusion", net)


@pytest.fixture
def pair_dirs(tmp_path):
    return write_pairs(tmp_path / "data", [(33, 47), (20, 31)])


@pytest.fixture
def make_pair():
    """`make_pair(h, w, seed=0)` -> (ir uint8 [h,w], vi uint8 [h,w,3])."""
    return smooth_pair
