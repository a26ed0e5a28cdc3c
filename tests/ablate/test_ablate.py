"""`fusionlab ablate` on tiny real stages: tables and intervals, reuse of unchanged upstream stages,
seed routing, and errors before anything runs."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest

from fusionlab.metrics.intervals import excludes_zero, format_interval, mean_interval, paired_difference


def test_intervals_are_student_t_over_seeds():
    s = mean_interval([1.0, 3.0])
    assert s["mean"] == 2.0 and s["sd"] == pytest.approx(math.sqrt(2))
    assert s["half"] == pytest.approx(12.7062047 * math.sqrt(2) / math.sqrt(2))  # t_{0.975, 1} = 12.706
    s3 = mean_interval([1.0, 2.0, 3.0, float("nan"), None])  # non-finite values are left out
    assert s3["n"] == 3 and s3["half"] == pytest.approx(4.3026527 / math.sqrt(3))
    one = mean_interval([5.0])
    assert one["n"] == 1 and math.isnan(one["half"]) and format_interval(one) == "5"
    assert format_interval(mean_interval([])) == "–"
    d = paired_difference({0: 3.0, 1: 5.0, 2: 9.0}, {0: 1.0, 1: 3.0})  # seed 2 has no partner
    assert d["n"] == 2 and d["mean"] == 2.0 and d["half"] == 0.0 and excludes_zero(d)
    assert not excludes_zero(mean_interval([-1.0, 1.0]))


def test_tiny_ablation_tables_intervals_and_reuse(cli_inproc, ablate_env):
    pipe = str(ablate_env)
    out = cli_inproc("ablate", pipe, "--grid", "score.scale=1,2", "--seeds", "2").stdout
    abl = Path("r/ablations/scale").resolve()

    # the unchanged upstream stage ran once and was linked into the other three jobs
    assert out.count("=== stage train") == 1 and out.count("=== stage score") == 4
    assert out.count("skip  train  up to date") == 3
    src = abl / "p0-s0" / "train"
    weights = Path("model") / "model.safetensors"
    for job in ("p1-s0", "p0-s1", "p1-s1"):
        dst = abl / job / "train"
        assert (dst / "manifest.json").read_text() == (src / "manifest.json").read_text()
        assert (dst / weights).stat().st_ino == (src / weights).stat().st_ino  # hard link, not a new run
        assert json.loads((dst / ".fusionlab" / "reused.json").read_text())["from"] == str(src)
        assert not (dst / "stage.log").exists()

    # the table: mean ± Student-t interval per point, paired difference per seed against p0
    data = json.loads((abl / "ablation.json").read_text())
    assert data["seed_stages"] == ["score"] and data["varied_stages"] == ["score"]
    assert list(data["metrics"]) == ["score/score"]  # the changing stage's headline; train is the same everywhere
    v = {j["job"]: j["values"]["score/score"] for j in data["jobs"]}
    for p in ("p0", "p1"):
        a, b = v[f"{p}-s0"], v[f"{p}-s1"]
        stats = data["metrics"]["score/score"][p]
        assert stats["n"] == 2 and stats["mean"] == pytest.approx((a + b) / 2)
        assert stats["high"] - stats["mean"] == pytest.approx(12.7062047 * abs(a - b) / 2, rel=1e-6)
        assert stats["high"] - stats["mean"] > 0.01  # the seeded noise shows in each point ...
    diff = data["differences"]["score/score"]["p1-p0"]
    weight_sum = json.loads((abl / "p0-s0" / "score" / "manifest.json").read_text())["metrics"]
    weight_sum = weight_sum["score"] - weight_sum["noise"]
    assert diff["n"] == 2 and diff["mean"] == pytest.approx(weight_sum)  # scale 2 - scale 1
    assert diff["high"] - diff["mean"] == pytest.approx(0.0, abs=1e-9)  # ... and cancels in the paired difference
    with open(abl / "ablation.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["metric", "point", "settings", "n", "mean", "sd", "ci_low", "ci_high", "diff_n",
                             "diff_mean", "diff_ci_low", "diff_ci_high"]
    assert [(r["metric"], r["point"], r["settings"]) for r in rows] == [
        ("score/score", "p0", "score.scale=1"), ("score/score", "p1", "score.scale=2")]
    md = (abl / "ablation.md").read_text()
    assert "| metric | p0 | p1 | Δ p1 − p0 |" in md and "| p1 | score.scale=2 | 2/2 |" in md
    assert format_interval(mean_interval([v["p0-s0"], v["p0-s1"]])) in md
    assert "fusionlab ablate" in md and (abl / "ablation.png").stat().st_size > 5000
    assert "<table>" in (abl / "ablation.html").read_text()

    # rerunning resumes: every stage of every job is up to date
    again = cli_inproc("ablate", pipe, "--grid", "score.scale=1,2", "--seeds", "2").stdout
    assert "=== stage" not in again and again.count("skip  score") == 4

    # another ablation finds the finished upstream through --reuse (a dry run: nothing runs)
    other = cli_inproc("ablate", pipe, "--grid", "score.scale=3,4", "--seeds", "1", "--out", "elsewhere",
                       "--reuse", str(abl), "--dry-run").stdout
    assert f"train  reuse {abl / 'p0-s0' / 'train'}" in other and "stage runs needed: 2" in other

    # the pipeline run's report links the ablation
    for stage in ("train", "score"):
        shutil.copytree(abl / "p0-s0" / stage, Path("r") / stage)
    from fusionlab.report import build_report

    page = build_report("r").read_text()
    assert "Ablations" in page and "../ablations/scale/ablation.html" in page


def test_seed_routing_and_dry_run_touch_nothing(cli_inproc, ablate_env):
    pipe = str(ablate_env)
    out = cli_inproc("ablate", pipe, "--grid", "score.scale=1,2", "--seeds", "3", "--dry-run").stdout
    assert "6 jobs" in out and "seed +k goes to: score" in out
    assert "stage runs needed: 7" in out  # train once, score 2 x 3
    assert "train  reuse from p0-s0 (once it has run)" in out
    out = cli_inproc("ablate", pipe, "--grid", "train.n_samples=32,64", "--seeds", "2", "--dry-run").stdout
    assert "seed +k goes to: train, score" in out and "stage runs needed: 8" in out
    out = cli_inproc("ablate", pipe, "--grid", "score.scale=1,2", "--seed-stages", "train", "--seeds", "2",
                     "--dry-run").stdout
    assert "seed +k goes to: train, score" in out and "stage runs needed: 6" in out
    out = cli_inproc("ablate", pipe, "--grid", "score.scale=3", "--seed-stages", "score", "--seeds", "2",
                     "--dry-run").stdout  # a one-valued key is a fixed override
    assert "p0: as configured" in out and "for every job: score.scale=3" in out
    assert not Path("r").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--grid", "score.scael=1,2"], "did you mean 'score.scale'"),
    (["--grid", "score.scael=3", "train.n_samples=8,16"], "did you mean 'score.scale'"),  # a fixed key too
    (["--grid", "scale=1,2"], "only score has it: write 'score.scale'"),
    (["--grid", "score.scale=1,oops"], "--grid score.scale=oops:"),
    (["--grid", "run_dir=a,b"], "is a pipeline setting"),
    (["--grid", "score.scale=1,2", "--stages", "train"], "which --stages does not run"),
    (["--grid", "score.scale=1,2", "--stages", "scor"], "did you mean 'score'"),
    (["--grid", "score.scale"], "is not of the form KEY=V1,V2"),
    (["--grid", "score.seed=1,2"], "seeds come from --seeds N"),
    ([], "nothing varies"),
])
def test_errors_come_before_anything_runs(cli_inproc, ablate_env, args, message):
    proc = cli_inproc("ablate", str(ablate_env), *args, check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not Path("r").exists()
