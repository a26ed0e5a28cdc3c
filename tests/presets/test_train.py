"""Each preset trains end to end on tiny data through the real stage code: its loss falls, it
writes fusion/ (reloadable), fused/ (one PNG per eval image) and eval/ (metric tables)."""

from __future__ import annotations

import json

import pytest
import torch


def _falls(values: list[float]) -> bool:
    return len(values) >= 2 and values[-1] < values[0]


@pytest.mark.parametrize("preset", [
    "baseline", "ldnf", "text2pixels",
    pytest.param("ldfusion", marks=pytest.mark.slow),  # VGG-19 trunk + CLIP on every step
    pytest.param("tgif", marks=pytest.mark.slow),      # Restormer blocks
])
def test_preset_trains_and_evaluates(preset, stage_config, context):
    from fusionlab.models.fusion import fuse_rgb, load_fusion_model
    from fusionlab.stages import fusion

    cfg = stage_config(preset)
    metrics = fusion.run(cfg, context)

    losses = metrics["train/loss_epochs"]
    assert len(losses) == cfg.trainer.max_epochs
    if preset == "text2pixels":  # the structure term joins at epoch 2, so compare the content term
        assert _falls(metrics["train/terms"]["content"]), metrics["train/terms"]
    else:
        assert _falls(losses), losses

    fused = sorted(p.name for p in (context.out_dir / "fused").glob("*.png"))
    eval_dir = context.out_dir / "eval"
    table = json.loads((eval_dir / "summary.json").read_text())  # written by the evaluator `fusionlab eval` runs
    mine = table["methods"][preset]
    assert len(fused) == mine["n"] == 2 and table["preset"] == preset and table["convention"] == "cddfuse"
    assert {"EN", "SD", "Qabf", "SSIM"} <= set(mine["metrics"])
    assert metrics["eval/EN"] == pytest.approx(mine["metrics"]["EN"]["mean"], abs=1e-5)
    assert f"| {preset} | 2 |" in (eval_dir / "summary.md").read_text()
    assert (eval_dir / "comparison.md").read_text().count("|") > 8
    rows = (eval_dir / "per_image.csv").read_text().splitlines()
    assert len(rows) == 1 + 5 * 2 and sum(f"{context.out_dir}/fused/" in r for r in rows) == 2
    # the simple references are scored on the same images
    assert set(table["methods"]) == {preset, "ref/ir", "ref/vis", "ref/mean", "ref/max"}
    assert metrics["ref/max/EN"] == pytest.approx(table["methods"]["ref/max"]["metrics"]["EN"]["mean"], abs=1e-5)
    assert metrics["ref/ir/SD"] != pytest.approx(metrics["ref/vis/SD"])
    # the frozen depth nets are probed on IR, VIS and fused inputs against the synthetic depth
    for source in ("ir", "vis", "fused-ir-net", "fused-vis-net"):
        assert metrics[f"depth/{source}/AbsRel"] > 0, source
    # the scenes' masks and visible_in give the retention split, for the net and every reference
    assert metrics["retention/all/n"] > 0 and 0 <= metrics["retention/all/kept"] <= 1
    assert set(table["retention"]) == set(table["methods"])
    if metrics["ref/ir/retention/ir_only/n"]:
        assert metrics["ref/ir/retention/ir_only/kept"] == 1.0  # a copy of IR keeps what IR sees
    assert "Object contrast retention" in (eval_dir / "summary.md").read_text()

    net = load_fusion_model(context.out_dir / "fusion")
    assert net.needs_text == (preset in ("ldnf", "text2pixels", "tgif"))
    ir, vi = torch.rand(1, 1, 21, 27), torch.rand(1, 3, 21, 27)
    text = None
    if net.needs_text:
        from fusionlab.cache import EmbeddingCache

        cache = EmbeddingCache(cfg.inputs.embeddings)
        text = cache.get(cache.ids[:1])
    assert fuse_rgb(net, ir, vi, text).shape == (1, 3, 21, 27)


@pytest.mark.slow
def test_eval_split_is_shared_by_ddp_ranks_and_reduced(tmp_path, tiny_dataset):
    """`trainer.devices=2`: each rank fuses half the eval batches; the tables cover all of them."""
    import csv
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "fusion"
    nulls = [f"inputs.{k}=null" for k in ("depth_ir", "depth_vis", "denoiser", "embeddings", "clip", "prompts")]
    cmd = [sys.executable, "-m", "fusionlab", "stage", str(repo / "stages" / "4-fusion.yaml"), "--out", str(out),
           "preset=baseline", f"data.root={tiny_dataset}", "data.val_fraction=0.5", "data.batch_size=1",
           "data.crop_size=null", "model.width=4", "model.depth=1", "trainer.max_epochs=1", "trainer.accelerator=cpu",
           "trainer.devices=2", "trainer.strategy=ddp", "trainer.enable_progress_bar=false", *nulls]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    table = json.loads((out / "eval" / "summary.json").read_text())
    fused = sorted(p.stem for p in (out / "fused").glob("*.png"))
    assert len(fused) == 4 and table["methods"]["baseline"]["n"] == 4  # both ranks' halves
    with open(out / "eval" / "per_image.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["method"] == "baseline"]
    assert sorted(r["image"] for r in rows) == fused
    mean_en = sum(float(r["EN"]) for r in rows) / len(rows)
    assert table["methods"]["baseline"]["metrics"]["EN"]["mean"] == pytest.approx(mean_en, rel=1e-9)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["eval/EN"] == pytest.approx(mean_en, abs=1e-5)
