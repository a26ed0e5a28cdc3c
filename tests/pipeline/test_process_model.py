"""Interruption and resume, DDP on the CPU, and the run-dir lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fusionlab.errors import PipelineError
from fusionlab.pipeline.lock import RunLock


@pytest.mark.slow  # ~55 s; a SIGKILL and exact resume run fast in tests/stage5/test_stage.py, the stale lock below
def test_sigkill_leaves_no_manifest_and_rerun_resumes(cli, pipeline_env):
    """Kill the whole run mid-stage; the rerun continues from the last checkpoint, not from step 0."""
    pipe = str(pipeline_env / "pipeline.yaml")
    slow = ["train.model.step_sleep_s=0.25", "train.trainer.checkpoint_every_n_steps=2", "train.trainer.max_epochs=3"]
    proc = subprocess.Popen([sys.executable, "-m", "fusionlab", "run", pipe, "run_dir=r", *slow],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = Path("r/.fusionlab/staging/train/checkpoints/main/last.ckpt")  # the attempt runs in its staging folder
    deadline = time.time() + 240
    while time.time() < deadline and not ckpt.exists():
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.2)
    assert ckpt.exists(), "no checkpoint appeared within 240 s"
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not Path("r/train/manifest.json").exists() and not Path("r/train").exists()

    out = cli("run", pipe, "run_dir=r", *slow).stdout
    assert "stale lock" in out
    metrics = json.loads(Path("r/train/manifest.json").read_text())["metrics"]
    assert metrics["start_step"] >= 2, "the rerun restarted from step 0 instead of resuming"
    assert metrics["global_step"] == 24


@pytest.mark.ddp
def test_two_process_ddp_on_cpu_writes_one_manifest(cli, pipeline_env):
    out = cli("stage", str(pipeline_env / "counter.yaml"), "--out", "ddp/train", "trainer.accelerator=cpu",
              "trainer.devices=2", "trainer.strategy=ddp", timeout=600).stdout
    manifests = list(Path("ddp").rglob("manifest.json"))
    assert len(manifests) == 1, out
    man = json.loads(manifests[0].read_text())
    assert man["metrics"]["world_size"] == 2
    assert man["devices"]["world_size"] == 2 and man["devices"]["strategy"] == "DDPStrategy"
    # 64 samples / batch 8 split over 2 ranks = 4 steps per epoch, 2 epochs.
    assert man["metrics"]["global_step"] == 8


def test_lock_refuses_a_second_run_and_detects_a_stale_one(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(PipelineError, match=r"in use by pid \d+.*lock file"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / ".lock").exists()

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "since": "then"}))
    lock = RunLock(tmp_path).acquire()
    assert lock.stale_removed["pid"] == dead.pid
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    lock.release()


def test_cli_reports_a_locked_run_dir(cli_inproc, pipeline_env):
    Path("r").mkdir()
    with RunLock(Path("r").resolve()):
        proc = cli_inproc("run", str(pipeline_env / "pipeline.yaml"), "run_dir=r", check=False)
    assert proc.returncode == 2 and "is in use by pid" in proc.stderr


def test_cpu_threads_is_a_key_of_every_stage_and_sets_torch_threads():
    import torch

    from fusionlab.stages.base import StageConfig, apply_cpu_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        apply_cpu_threads(StageConfig(stage="x"))  # None: torch's choice is left alone
        assert torch.get_num_threads() == 2
        apply_cpu_threads(StageConfig(stage="x", cpu_threads=1, trainer={"accelerator": "cpu"}))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
