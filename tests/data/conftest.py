"""Fixtures for the data tests: tiny generated datasets in every supported layout."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest


def write(path: Path, arr: np.ndarray) -> Path:
    """Write an RGB(A)/gray uint8/uint16 array with OpenCV (RGB order in, BGR on disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.ndim == 3 and arr.shape[2] >= 3:
        arr = np.ascontiguousarray(arr[:, :, [2, 1, 0, *range(3, arr.shape[2])]])
    assert cv2.imwrite(str(path), arr), path
    return path


def scene(seed: int, h: int = 24, w: int = 32):
    """A small IR/VIS pair with one warm square: (ir uint8 [h,w], vi uint8 [h,w,3])."""
    rng = np.random.default_rng(seed)
    ir = rng.integers(20, 60, (h, w), dtype=np.uint8)
    ir[4:12, 6:14] = 220
    vi = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return ir, vi


def make_generic(
    root: Path, n: int = 4, h: int = 24, w: int = 32, *, depth=False, labels=False, captions=False
) -> Path:
    for i in range(n):
        ir, vi = scene(i, h, w)
        write(root / "ir" / f"p{i}.png", ir)
        write(root / "vi" / f"p{i}.png", vi)
        if depth:
            write(root / "depth" / f"p{i}.png", np.full((h, w), 256 * (i + 2), np.uint16))
        if labels:
            (root / "labels").mkdir(exist_ok=True)
            (root / "labels" / f"p{i}.txt").write_text(f"{i % 2} {10 / w} {8 / h} {8 / w} {8 / h}\n")
    if labels:
        (root / "classes.txt").write_text("person\ncar\n")
    if captions:
        (root / "captions.jsonl").write_text("".join(f'{{"id": "p{i}", "caption": "scene {i}"}}\n' for i in range(n)))
    return root


@pytest.fixture
def generic(tmp_path) -> Path:
    return make_generic(tmp_path / "ds", depth=True, labels=True, captions=True)


@pytest.fixture
def synthetic(tmp_path_factory) -> Path:
    from fusionlab.data.synth import generate

    return generate(tmp_path_factory.mktemp("synth") / "s", n=6, seed=3, size=(64, 48))


class _Helpers:
    """Helpers exposed as a fixture (pytest's importlib mode cannot import conftest)."""

    write = staticmethod(write)
    scene = staticmethod(scene)
    make_generic = staticmethod(make_generic)


@pytest.fixture
def h() -> _Helpers:
    return _Helpers()


@pytest.fixture
def run(capsys):
    """`run("data", "check", DIR)` -> (exit code, stdout, stderr) of the real CLI entry point,
    in-process (a child process would spend most of the test importing torch again)."""
    from fusionlab.cli import main

    def _run(*args: str):
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run
