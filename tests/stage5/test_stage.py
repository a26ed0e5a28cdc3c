"""A tiny stage-5 run end to end (outputs, manifest, no network), and exact resume after SIGKILL
in the bilevel phase and, separately, in the protocol."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

TINY_DET = {"cfg": "yolov8n.yaml", "width_multiple": 0.0625, "depth_multiple": 0.33, "imgsz": 64}


def _config(path: Path, tiny_dataset, tiny_fusion) -> Path:
    cfg = {"stage": "detect", "seed": 0, "cpu_threads": 1, "fusion": str(tiny_fusion),
           "data": {"root": str(tiny_dataset), "batch_size": 2, "val_fraction": 0.25},
           "detector": TINY_DET, "optim": {"hypergrad": "unrolled"},
           "protocol": {"profile": "fast", "epochs": 1, "imgsz": 64, "batch": 4, "seeds": [0]},
           "trainer": {"max_epochs": 3, "accelerator": "cpu", "enable_progress_bar": False}, "panel_images": 2}
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def stage_env():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "disabled")
        mp.setenv("FUSIONLAB_CODE_VERSION", "tests")  # the same stage key in this process and in children
        yield


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_dataset, tiny_fusion, stage_env):
    """One uninterrupted run (in this process) with every outbound connection refused and recorded."""
    from fusionlab.pipeline.stage_process import run_stage

    root = tmp_path_factory.mktemp("stage5")
    config = _config(root / "detect.yaml", tiny_dataset, tiny_fusion)
    attempts: list = []
    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise ConnectionRefusedError(f"socket guard: {address!r}")
        return real_connect(self, address)

    threads = torch.get_num_threads()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(socket.socket, "connect", connect)
            manifest = run_stage(config, root / "detect")
    finally:
        torch.set_num_threads(threads)
    return {"config": config, "out": root / "detect", "manifest": manifest, "attempts": attempts}


def test_tiny_stage5_run_offline(reference):
    from fusionlab.models.detector import load_detector
    from fusionlab.models.fusion import load_fusion_model
    from fusionlab.stages import detect

    out, metrics = reference["out"], reference["manifest"]["metrics"]
    assert reference["attempts"] == []  # nothing tried to reach the network
    assert metrics["mode"] == "bilevel" and metrics["hypergrad"] == "unrolled" and metrics["seeds"] == [0]
    assert metrics["detector_init"].startswith("random")
    for name in detect.OUTPUTS:
        assert (out / name).exists(), name
    results = json.loads((out / "map.json").read_text())
    assert results["sets"] == list(detect.SETS)
    # recall split by which modality sees each object (the scenes' visible_in, scoring only)
    assert metrics["recall_split/n/all"] > 0 and set(results["recall_split"]) == set(detect.SETS)
    for s in detect.SETS:
        assert 0 <= metrics[f"recall_split/{s}/all"] <= 1 and len(metrics[f"recall_split/{s}/all/seeds"]) == 1
    assert "Recall by which modality" in (out / "map.md").read_text()
    for s in detect.SETS:  # the manifest's mean is the mean of the per-seed results of map.json
        per_seed = [r["map50"] for r in results["results"][s].values()]
        assert metrics[f"map50/{s}"] == pytest.approx(sum(per_seed) / len(per_seed), abs=1e-4)
        assert metrics[f"map50_seeds/{s}"] == [round(v, 4) for v in per_seed]
        unit = out / "protocol" / s / "seed0"
        predictions = json.loads((unit / "predictions.json").read_text())
        assert sorted(predictions) == sorted(results["meta"]["val_ids"])  # one entry per val image
        assert all(len(row) == 6 for rows in predictions.values() for row in rows)
        load_detector(unit / "detector")
    assert "map50_diff/bilevel-ir" in metrics and "map50_diff/fused-vis" in metrics
    assert set(results["meta"]["train_ids"]).isdisjoint(results["meta"]["val_ids"])
    # every set is the same split: identical label files
    data = out / "checkpoints" / "protocol" / "data"
    labels = {s: sorted(p.name for p in (data / s / "labels" / "val").iterdir()) for s in detect.SETS}
    assert len({tuple(v) for v in labels.values()}) == 1
    # trained by ultralytics' DetectionTrainer (its run folder), and no pickled checkpoint anywhere
    args = yaml.safe_load((out / "checkpoints" / "protocol" / "runs" / "ir-seed0" / "args.yaml").read_text())
    assert args["epochs"] == 1 and args["imgsz"] == 64 and args["mosaic"] == 1.0 and args["deterministic"] is True
    assert not list(out.rglob("*.pt"))
    refined = load_fusion_model(out / "fusion")
    stage4 = load_fusion_model(yaml.safe_load(reference["config"].read_text())["fusion"])
    assert any(not torch.equal(a, b) for a, b in zip(refined.state_dict().values(), stage4.state_dict().values(),
                                                     strict=True))  # the bilevel phase changed the fusion net
    assert json.loads((out / "fusion" / "config.json").read_text())["refined_by"] == "detect (bilevel)"
    assert not any(k.startswith("anchor") for k in torch.load(out / "checkpoints" / "bilevel" / "last.ckpt",
                                                               weights_only=True)["state_dict"])


def _start(config: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fusionlab", "stage", str(config), "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended before it could be killed {what}"
        assert time.time() < deadline, f"never got {what} within {timeout} s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_sigkill_in_bilevel_and_in_protocol_resumes_to_the_same_result(reference, tmp_path):
    from safetensors.torch import load_file

    from fusionlab.pipeline.stage_process import run_stage
    from fusionlab.pipeline.staging import staging_dir

    config, out = reference["config"], tmp_path / "detect"
    attempt = staging_dir(out)  # an unfinished attempt writes here; the stage folder appears when it succeeds
    ckpt = attempt / "checkpoints" / "bilevel" / "last.ckpt"
    _kill_when(_start(config, out), lambda: ckpt.is_file() and ckpt.stat().st_size > 0 and time.sleep(0.2) is None,
               "in the bilevel phase")
    assert not (attempt / "fusion").exists() and not out.exists(), "the kill came after the bilevel phase"
    units = attempt / "checkpoints" / "protocol" / "units"
    _kill_when(_start(config, out), lambda: units.is_dir() and any((u / "result.json").is_file() for u in units.iterdir()),
               "in the protocol")
    done = [u.name for u in units.iterdir() if (u / "result.json").is_file()]
    assert 1 <= len(done) < 4, done
    assert not out.exists()  # nothing half-written in the stage folder
    threads = torch.get_num_threads()
    try:
        manifest = run_stage(config, out)  # resumes: the rest of the protocol only
    finally:
        torch.set_num_threads(threads)

    def results(metrics):  # timings describe the processes, not the result
        return {k: v for k, v in metrics.items() if not k.startswith("timing/")}

    assert results(manifest["metrics"]) == results(reference["manifest"]["metrics"])
    ref = reference["out"]
    for part in ("fusion", "detector", *(f"protocol/{s}/seed0/detector" for s in ("ir", "vis", "fused", "bilevel"))):
        a, b = load_file(str(out / part / "model.safetensors")), load_file(str(ref / part / "model.safetensors"))
        for key in b:
            torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-6, msg=lambda m, part=part, key=key: f"{part} {key}: {m}")
    for s in ("ir", "vis", "fused", "bilevel"):
        got = json.loads((out / "protocol" / s / "seed0" / "predictions.json").read_text())
        want = json.loads((ref / "protocol" / s / "seed0" / "predictions.json").read_text())
        assert got.keys() == want.keys()
        for sid in want:
            torch.testing.assert_close(torch.tensor(got[sid]).reshape(-1, 6), torch.tensor(want[sid]).reshape(-1, 6),
                                       atol=2e-5, rtol=0)


def test_stage_yaml_defaults_validate(repo_dir):
    from fusionlab.stages import detect

    raw = yaml.safe_load((repo_dir / "stages" / "5-detect.yaml").read_text())
    assert raw["fusion"] == "${fusion.outputs.fusion}"
    assert raw["data"]["root"] == "${scenes.outputs.dataset}"
    assert raw["embeddings"] == "${captions.outputs.embeddings}"
    cfg = detect.Config.model_validate(raw)
    assert cfg.mode == "bilevel" and cfg.protocol.seeds == [0, 1, 2]
    defaults = detect.Config.model_validate({"stage": "detect", "fusion": "f", "data": {"root": "d"}})
    assert defaults.protocol.profile == "paper" and defaults.protocol.settings()["imgsz"] == 640
    assert defaults.detector.cfg == "yolov5s.yaml"  # Text2Pixels' upper level is a YOLOv5


def test_box_panels_for_wandb_and_png():
    import wandb

    from fusionlab.stages.detect import _wandb_boxes, draw_boxes

    images = torch.full((2, 3, 32, 48), 100, dtype=torch.uint8)
    preds = [torch.tensor([[4.0, 4.0, 20.0, 20.0, 0.9, 1.0], [1.0, 1.0, 3.0, 3.0, 0.1, 0.0]]), torch.zeros(0, 6)]
    gts = [torch.tensor([[1, 0.25, 0.375, 0.33, 0.5]]), torch.zeros(0, 5)]
    grid = draw_boxes(images, preds, gts, ["a", "b"])
    assert grid.dtype == torch.uint8 and grid.shape[0] == 3
    assert (grid[0] > 200).any()  # red predicted box drawn

    class FakeRun:
        logged: dict = {}

        def log(self, data):
            self.logged.update(data)

    run = FakeRun()
    _wandb_boxes(run, images, preds, ["a", "b"])
    panel = run.logged["detect/boxes_on_fused"]
    assert len(panel) == 2 and all(isinstance(p, wandb.Image) for p in panel)
    boxes = panel[0]._boxes["predictions"]._val  # wandb keeps box_data here
    assert len(boxes) == 1 and boxes[0]["class_id"] == 1  # the low-confidence box is left out
