"""The CLI answers fast (lazy imports), and the config layer's overrides and references."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from fusionlab.config import (
    Section,
    apply_overrides,
    find_references,
    parse_overrides,
    substitute_references,
    validate,
)
from fusionlab.errors import ConfigError


def test_help_is_fast_and_lists_commands():
    best = float("inf")
    for _ in range(3):  # the best of three, so a busy machine does not fail the test
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fusionlab", "--help"], capture_output=True, text=True)
        best = min(best, time.perf_counter() - t0)
    assert proc.returncode == 0
    for command in ("run", "stage", "weights"):
        assert command in proc.stdout
    assert best < 2.0, f"fusionlab --help took {best:.2f} s"


def test_help_imports_no_heavy_library():
    code = "import sys; from fusionlab.cli import build_parser; build_parser(); " \
           "print(sorted(m for m in ('torch','lightning','ultralytics','open_clip','diffusers','transformers','wandb') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_overrides_parse_like_yaml():
    assert parse_overrides(["a.b=3", "c=true", "d=[1, 2]", "e=x=y"]) == {"a.b": 3, "c": True, "d": [1, 2], "e": "x=y"}
    assert apply_overrides({"a": {"b": 1, "k": 0}}, {"a.b": 2, "z.y": None}) == {"a": {"b": 2, "k": 0}, "z": {"y": None}}
    with pytest.raises(ConfigError, match="not of the form"):
        parse_overrides(["novalue"])


def test_references_are_found_and_substituted():
    cfg = {"data": {"root": "${scenes.outputs.dataset}"}, "list": ["${depth.outputs.depth_ir}/x"]}
    assert find_references(cfg) == [("scenes", "dataset"), ("depth", "depth_ir")]
    out = substitute_references(cfg, lambda s, o: f"/run/{s}/{o}")
    assert out == {"data": {"root": "/run/scenes/dataset"}, "list": ["/run/depth/depth_ir/x"]}


class Inner(Section):
    max_epochs: int = 1


class Outer(Section):
    trainer: Inner = Inner()
    name: str = "x"


def test_validation_names_source_key_and_suggestion():
    with pytest.raises(ConfigError) as err:
        validate(Outer, {"trainer": {"max_epoch": 2}}, "stages/x.yaml")
    assert str(err.value) == "stages/x.yaml: unknown key 'trainer.max_epoch': did you mean 'trainer.max_epochs'?"
    with pytest.raises(ConfigError, match=r"bad value for 'trainer.max_epochs'"):
        validate(Outer, {"trainer": {"max_epochs": "many"}}, "f.yaml")
