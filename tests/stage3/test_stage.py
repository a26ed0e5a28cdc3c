"""Stage 3 end to end on tiny synthetic data: outputs, depth words, rerun = zero encoder calls."""

import json

import pytest
import torch
from safetensors.torch import load_file

from fusionlab.cache import EmbeddingCache
from fusionlab.models.text import ClipEncoder
from fusionlab.stages import captions as stage
from fusionlab.stages.base import StageContext, WandbSettings


def _ctx(out):
    return StageContext(name="captions", out_dir=out, outputs=stage.OUTPUTS, wandb=WandbSettings(enabled=False))


def _count_encoder_calls(monkeypatch):
    calls = {"text": 0, "image": 0}
    text, image = ClipEncoder.encode_text, ClipEncoder.encode_image

    def counting_text(self, texts):
        calls["text"] += 1
        return text(self, texts)

    def counting_image(self, x):
        calls["image"] += 1
        return image(self, x)

    monkeypatch.setattr(ClipEncoder, "encode_text", counting_text)
    monkeypatch.setattr(ClipEncoder, "encode_image", counting_image)
    return calls


def test_stage_writes_outputs_and_rerun_is_a_cache_hit(tmp_path, stage_config, monkeypatch):
    out = tmp_path / "captions"
    cfg = stage.Config.model_validate(stage_config())
    calls = _count_encoder_calls(monkeypatch)
    metrics = stage.run(cfg, _ctx(out))
    assert metrics["captions"] == 6 and metrics["encoded"] == 6 and metrics["cache_hits"] == 0
    assert metrics["depth_mention_rate"] == 1.0
    assert calls["text"] > 0 and calls["image"] == 0  # no image embeddings: nothing reads them

    rows = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"{i:05d}" for i in range(6)]
    for r in rows:
        assert r["caption_ir"].startswith("thermal image:") and r["caption_vi"].startswith("visible image:")
        assert r["caption"].startswith(r["caption_ir"]) and r["caption_vi"] in r["caption"]
        assert "background at" in r["caption_ir"]  # depth words come from the predicted depth

    encoder = ClipEncoder.from_config(out / "clip")
    cache = EmbeddingCache(out / "embeddings")
    got = cache.get(["00003", "00001"])
    pooled, tokens, mask = encoder.encode_text([rows[3]["caption"], rows[1]["caption"]])
    assert torch.allclose(got["pooled"], pooled, atol=1e-5) and torch.equal(got["mask"], mask)
    assert got["tokens"].shape == (2, encoder.context_length, 32)
    prompts = load_file(str(out / "prompts.safetensors"))
    assert set(prompts) == {"ir", "vis", "fused"}
    assert torch.allclose(prompts["fused"], encoder.encode_text([stage.DEFAULT_PROMPTS["fused"]])[0][0], atol=1e-5)
    assert not (out / "embeddings" / "images").exists()
    page = (out / "captions.html").read_text()
    assert "thumbs/00000_ir.png" in page and (out / "thumbs" / "00000_ir.png").is_file()
    assert rows[0]["caption_ir"].split(";")[0] in (out / "captions.md").read_text()

    calls["text"] = calls["image"] = 0
    again = stage.run(cfg, _ctx(out))
    assert calls == {"text": 0, "image": 0}
    assert again["encoded"] == 0 and again["cache_hits"] == 6


@pytest.mark.slow
def test_changed_prompt_set_and_model_recompute(tmp_path, stage_config, monkeypatch):
    out = tmp_path / "captions"
    stage.run(stage.Config.model_validate(stage_config(preview=2)), _ctx(out))
    calls = _count_encoder_calls(monkeypatch)
    cfg = stage_config(preview=2, prompts={"ir": "a thermal photo"})
    metrics = stage.run(stage.Config.model_validate(cfg), _ctx(out))
    assert metrics["encoded"] == 0 and calls["text"] == 1  # only the new prompt set
    assert list(load_file(str(out / "prompts.safetensors"))) == ["ir"]
    cfg["model"]["clip"]["seed"] = 1  # other weights: every entry is stale
    metrics = stage.run(stage.Config.model_validate(cfg), _ctx(out))
    assert metrics["encoded"] == 6 and metrics["cache_hits"] == 0
    assert EmbeddingCache(out / "embeddings").encoder["weights_sha256"] == ClipEncoder.from_config(out / "clip").weights_hash


def test_cache_command_info_verify_and_repair(tmp_path, stage_config, capsys):
    from fusionlab.cli import main

    out = tmp_path / "captions"
    cfg = stage_config(preview=1)
    cfg["trainer"]["precision"] = "bf16-mixed"  # captions + encoding under CPU autocast; the cache stays fp32
    stage.run(stage.Config.model_validate(cfg), _ctx(out))
    before = EmbeddingCache(out / "embeddings").get(["00002"])["pooled"]
    assert main(["cache", "info", str(out)]) == 0
    assert capsys.readouterr().out.count("entries  6") == 1
    shard = next((out / "embeddings").glob("shard-*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:-7] + b"garbage")
    assert main(["cache", "verify", str(out / "embeddings")]) == 1
    assert shard.name in capsys.readouterr().err
    assert main(["cache", "verify", "--repair", str(out)]) == 0
    assert capsys.readouterr().out.count("recomputed 6 entries") == 1
    assert main(["cache", "verify", str(out)]) == 0
    assert before.dtype == torch.float32  # repair encodes in fp32: identical to the bf16-mixed run's entries
    assert torch.allclose(EmbeddingCache(out / "embeddings").get(["00002"])["pooled"], before, atol=1e-6)
    assert main(["cache", "info", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_two_cpu_ranks_match_single_process(tmp_path, tiny_dataset, depth_nets, repo_dir):
    """`trainer.devices=2`: ranks caption and encode disjoint parts, rank 0 merges one cache."""
    import os
    import subprocess
    import sys

    out = tmp_path / "captions"
    cmd = [sys.executable, "-m", "fusionlab", "stage", str(repo_dir / "stages" / "3-captions.yaml"), "--out", str(out),
           f"data.root={tiny_dataset}", f"model.captioner.depth_ir={depth_nets[0]}",
           f"model.captioner.depth_vis={depth_nets[1]}", "trainer.accelerator=cpu", "trainer.devices=2",
           "trainer.strategy=ddp", "data.batch_size=2", "model.clip.batch_size=2"]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=repo_dir, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    cache = EmbeddingCache(out / "embeddings")
    assert sorted(cache.ids) == [r["id"] for r in rows] and len(rows) == 6
    encoder = ClipEncoder.from_config(out / "clip")
    expected = encoder.encode_text([r["caption"] for r in rows])[0]
    assert torch.allclose(cache.get([r["id"] for r in rows])["pooled"], expected, atol=1e-5)
    assert not (out / "embeddings" / ".parts").exists()


@pytest.mark.slow
def test_file_captions_one_edit_reencodes_one_entry(tmp_path, stage_config, monkeypatch):
    """User captions by id: editing one line re-encodes exactly that sample."""
    ids = [f"{i:05d}" for i in range(6)]
    table = tmp_path / "mine.jsonl"
    table.write_text("".join(json.dumps({"id": i, "caption": f"scene {i} with a warm person at near range"}) + "\n"
                             for i in ids))
    cfg = stage_config(captioner={"kind": "file", "path": str(table)}, preview=1)
    out = tmp_path / "captions"
    assert stage.run(stage.Config.model_validate(cfg), _ctx(out))["encoded"] == 6
    table.write_text(table.read_text().replace("scene 00004 with a warm person", "scene 00004 with a cold car"))
    calls = _count_encoder_calls(monkeypatch)
    metrics = stage.run(stage.Config.model_validate(cfg), _ctx(out))
    assert metrics["encoded"] == 1 and metrics["cache_hits"] == 5 and calls["text"] == 1
    assert EmbeddingCache(out / "embeddings").source("00004")["text"].startswith("scene 00004 with a cold car")
