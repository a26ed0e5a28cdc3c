"""Reruns work in a staging folder: a failed attempt never destroys the last good result, and a
swap interrupted between its renames is completed, never left as a mix that looks valid."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fusionlab.pipeline import staging
from fusionlab.pipeline.manifest import read_manifest


def test_failed_force_rerun_leaves_every_stage_up_to_date(cli, cli_inproc, pipeline_env):
    pipe = str(pipeline_env / "pipeline.yaml")
    cli("run", pipe, "run_dir=r")
    before = {s: json.loads(Path(f"r/{s}/manifest.json").read_text()) for s in ("train", "consume")}
    model = Path("r/train/model/model.safetensors").read_bytes()

    proc = cli("run", pipe, "run_dir=r", "--only", "train", "--force", "train.fail_after_fit=true", check=False)
    assert proc.returncode == 2
    assert "previous results in" in proc.stderr and "unchanged" in proc.stderr, proc.stderr
    assert json.loads(Path("r/train/manifest.json").read_text()) == before["train"]
    assert Path("r/train/model/model.safetensors").read_bytes() == model
    attempt = staging.staging_dir(Path("r/train").resolve())
    assert (attempt / "checkpoints" / "main" / "last.ckpt").is_file(), "the failed attempt keeps its checkpoints"
    assert (attempt / "model").is_dir() and not (attempt / "manifest.json").exists()

    out = cli_inproc("run", pipe, "run_dir=r", "--dry-run").stdout
    assert "skip  train    up to date" in out and "skip  consume  up to date" in out, out
    # the failing config again: its own attempt is found and resumed, not started over
    out = cli_inproc("run", pipe, "run_dir=r", "train.fail_after_fit=true", "--dry-run").stdout
    assert "resumes its unfinished attempt" in out, out


def _result(root: Path, name: str, tag: str) -> Path:
    """A finished stage folder: an output and a manifest naming `tag`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "out.txt").write_text(tag)
    (root / "manifest.json").write_text(json.dumps({"key": tag, "stage": name}))
    return root


@pytest.mark.parametrize("crash_at", [1, 2])
def test_a_kill_inside_the_swap_never_leaves_a_mix_and_settle_finishes_it(tmp_path, monkeypatch, crash_at):
    out = _result(tmp_path / "run" / "s", "s", "old")
    _result(staging.staging_dir(out), "s", "new")
    real = os.replace
    calls = []

    def dying_replace(src, dst):
        calls.append((src, dst))
        if len(calls) == crash_at:
            raise KeyboardInterrupt("killed inside the swap")
        return real(src, dst)

    monkeypatch.setattr(staging.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        staging.commit(out)
    monkeypatch.setattr(staging.os, "replace", real)
    # either the old complete result or nothing that looks finished: never new outputs under an old manifest
    man = read_manifest(out)
    assert (man is None and not out.exists()) if crash_at == 2 else (man["key"] == "old" and (out / "out.txt").read_text() == "old")

    assert "interrupted swap" in staging.settle(out)
    assert read_manifest(out)["key"] == "new" and (out / "out.txt").read_text() == "new"
    assert not staging.staging_dir(out).exists()
    assert not list((out.parent / ".fusionlab" / "trash").iterdir())


def test_prepare_keeps_an_attempt_of_the_same_key_and_links_reused_outputs(tmp_path):
    out = _result(tmp_path / "run" / "cap", "cap", "good")
    (out / "cache").mkdir()
    (out / "cache" / "shard-0").write_text("rows")
    attempt = staging.prepare(out, "k1", reuse=("cache",))
    assert (attempt / "cache" / "shard-0").read_text() == "rows"
    assert os.stat(attempt / "cache" / "shard-0").st_ino == os.stat(out / "cache" / "shard-0").st_ino  # a link, no copy
    (attempt / "checkpoints").mkdir()
    assert staging.prepare(out, "k1") == attempt and (attempt / "checkpoints").is_dir()  # same key: resumes
    assert staging.attempt_key(out) == "k1"
    staging.prepare(out, "k2")  # another key: a fresh attempt
    assert not (attempt / "checkpoints").exists() and staging.attempt_key(out) == "k2"
    assert (out / "cache" / "shard-0").read_text() == "rows" and read_manifest(out)["key"] == "good"
