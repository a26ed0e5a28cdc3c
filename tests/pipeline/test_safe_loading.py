"""Checkpoints are never unpickled: torch.load only with weights_only=True, else safetensors."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

PACKAGE = Path(__file__).resolve().parents[2] / "fusionlab"


def test_every_torch_load_in_the_package_passes_weights_only_true():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                ok = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                         for k in node.keywords)
                if not ok:
                    offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not offenders, f"torch.load without weights_only=True: {offenders}"


def test_resume_goes_through_weights_only_loading(pipeline_env, monkeypatch, tmp_path):
    """Run a tiny stage in-process twice; the resume loads its checkpoint with weights_only=True."""
    from fusionlab.pipeline.stage_process import run_stage

    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    cfg = pipeline_env / "counter.yaml"
    run_stage(cfg, tmp_path / "s", {"trainer.max_epochs": 1})
    (tmp_path / "s" / "manifest.json").unlink()
    assert not calls
    man = run_stage(cfg, tmp_path / "s", {"trainer.max_epochs": 1})  # same key: restores last.ckpt
    assert man["metrics"]["global_step"] == 8
    assert calls and all(c is True for c in calls), calls
