"""The run report is built from the manifests of a real (tiny) run, and renders without errors."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from fusionlab.report import build_report

FIXTURES = Path(__file__).resolve().parents[1] / "pipeline"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Run the two fixture stages once for every test of this module."""
    import os
    import sys

    tmp = tmp_path_factory.mktemp("run")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(FIXTURES), os.environ.get("PYTHONPATH", "")]),
               WANDB_MODE="disabled", FUSIONLAB_CODE_VERSION="tests")
    subprocess.run([sys.executable, "-m", "fusionlab", "run", str(FIXTURES / "conf" / "pipeline.yaml"),
                    f"run_dir={tmp / 'r'}", "train.trainer.log_every_n_steps=1"],
                   check=True, capture_output=True, env=env, cwd=tmp)
    return tmp / "r"


def test_report_shows_this_runs_manifest_numbers(tiny_run):
    index = build_report(tiny_run)
    text = index.read_text()
    md = (index.parent / "report.md").read_text()
    value = json.loads((tiny_run / "consume" / "manifest.json").read_text())["metrics"]["value"]
    loss = json.loads((tiny_run / "train" / "manifest.json").read_text())["metrics"]["final_loss"]
    for doc in (text, md):
        assert f"{value:.4g}" in doc and f"{loss:.4g}" in doc
        assert "train" in doc and "consume" in doc
    assert (index.parent / "pipeline.svg").read_text().count("<rect") == 2
    assert (index.parent / "curves_train.png").stat().st_size > 1000
    assert "http://" not in text and "https://" not in text and "<script" not in text


def test_report_command_and_missing_run_dir(cli_inproc, tiny_run, tmp_path):
    out = cli_inproc("report", str(tiny_run)).stdout
    assert "report/index.html" in out
    proc = cli_inproc("report", str(tmp_path / "nope"), check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = cli_inproc("report", str(tmp_path / "empty"), check=False)
    assert proc.returncode == 2 and "no stage manifests" in proc.stderr


def test_report_renders_in_headless_chromium(tiny_run, repo_dir):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (make test-full installs Debian's chromium)")
    index = build_report(tiny_run)
    shots = repo_dir / "test-artifacts"
    shots.mkdir(exist_ok=True)
    shot = shots / "report.png"
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tiny_run / '.chrome'}",
         "--enable-logging=stderr", "--v=0", f"--screenshot={shot}", "--window-size=1200,1600", index.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000, proc.stderr[-2000:]
    console_errors = [line for line in proc.stderr.splitlines() if "CONSOLE" in line and "ERROR" in line.upper()]
    assert not console_errors, console_errors


def test_detection_table_reads_stage5_metric_names(tmp_path):
    from fusionlab.report import StageInfo, detection_table

    metrics = {"map50/ir": 0.49, "map50/vis": 0.04, "map50/fused": 0.37, "map50/bilevel": 0.36,
               "precision/ir": 0.56, "bilevel/loss_det_last": 12.0, "map50/stage_detector": 0.0}
    rows = detection_table([StageInfo("detect", "ran", {"type": "detect", "metrics": metrics}, tmp_path)])
    assert rows[0] == ["image set", "map50", "precision"]
    assert [r[0] for r in rows[1:]] == ["ir", "vis", "fused", "bilevel"]
    assert rows[1] == ["ir", "0.49", "0.56"] and rows[4][1] == "0.36"


def test_image_grid_finds_the_sources_of_an_llvip_layout(tmp_path, monkeypatch):
    """The grid looks images up through the dataset readers, so non-generic layouts get IR and VIS panels."""
    import matplotlib.axes
    import numpy as np

    from fusionlab.data.io import write_image
    from fusionlab.report import StageInfo, image_grid

    data = tmp_path / "llvip"
    rng = np.random.default_rng(0)
    for stem in ("010001", "010002"):
        write_image(data / "infrared" / "test" / f"{stem}.jpg", rng.random((24, 32)).astype(np.float32))
        write_image(data / "visible" / "test" / f"{stem}.jpg", rng.random((24, 32, 3)).astype(np.float32))
        write_image(tmp_path / "fusion" / "fused" / f"{stem}.png", rng.random((24, 32, 3)).astype(np.float32))
    manifest = {"type": "fusion", "config": {"data": {"root": str(data), "format": "llvip", "split": "test"}}}
    stage = StageInfo("fusion", "ran", manifest, tmp_path / "fusion")
    drawn = []
    original = matplotlib.axes.Axes.imshow
    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", lambda ax, img, *a, **k: drawn.append(img) or original(ax, img, *a, **k))
    (tmp_path / "out").mkdir()
    name = image_grid([stage], tmp_path / "out")
    assert name and (tmp_path / "out" / name).is_file()
    assert len(drawn) == 6  # IR, VIS and fused in both rows (LLVIP has no depth)
