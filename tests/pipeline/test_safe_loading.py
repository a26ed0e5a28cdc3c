"""Checkpoints are never unpickled: torch.load only with weights_only=True, else safetensors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
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
    """Run a tiny stage in-process twice; the resume loads its checkpoint with weights_only=True.
    The first attempt dies after training, so its checkpoint waits in its staging folder."""
    from fusionlab.pipeline.stage_process import run_stage

    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    cfg = pipeline_env / "counter.yaml"
    dying = {"trainer.max_epochs": 1, "fail_after_fit": True}
    with pytest.raises(RuntimeError, match="fail_after_fit"):
        run_stage(cfg, tmp_path / "s", dying)
    assert not calls
    with pytest.raises(RuntimeError, match="fail_after_fit"):
        run_stage(cfg, tmp_path / "s", dying)  # same key: restores the attempt's last.ckpt
    assert calls and all(c is True for c in calls), calls


def test_a_folder_of_another_kind_is_named_not_a_traceback(tmp_path):
    """Handing one stage's model folder to another stage's key: a clear error for every loader."""
    from torch import nn

    from fusionlab.artifacts import save_model
    from fusionlab.errors import PipelineError
    from fusionlab.models.depth import build_depth_estimator, load_depth_estimator, save_depth_estimator
    from fusionlab.models.fusion import build_fusion_model, load_fusion_model, save_fusion_model
    from fusionlab.models.text import ClipEncoder

    fusion = save_fusion_model(tmp_path / "fusion", build_fusion_model({"name": "baseline", "width": 4, "depth": 1}))
    with pytest.raises(PipelineError, match="is not a depth estimator"):
        load_depth_estimator(fusion)
    with pytest.raises(PipelineError, match="is not a CLIP model"):
        ClipEncoder.load(fusion)
    depth = save_depth_estimator(tmp_path / "depth", build_depth_estimator({"in_channels": 1, "base_channels": 4,
                                                                             "levels": 2}))
    with pytest.raises(PipelineError, match="no model name"):
        load_fusion_model(depth)
    # right kind, wrong weights: the mismatch names the folder instead of a long RuntimeError
    other = build_depth_estimator({"in_channels": 1, "base_channels": 8, "levels": 2})
    save_model(tmp_path / "resized", nn.Linear(2, 2), other.config)
    with pytest.raises(PipelineError, match=r"depth estimator '.*resized' does not match its config"):
        load_depth_estimator(tmp_path / "resized")
    assert load_depth_estimator(depth).in_channels == 1  # and the right folder still loads
