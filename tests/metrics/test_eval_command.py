"""`fusionlab eval` on tiny generated folders: outputs, best marking, missing files, size errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:56]
    for d in ("ir", "vi", "good", "blurry"):
        (tmp_path / d).mkdir()
    for i in range(3):
        ir = np.clip(120 + 60 * np.sin(x / (4 + i)) + rng.normal(0, 10, x.shape), 0, 255).astype(np.uint8)
        vi = np.clip(rng.normal(110, 40, (48, 56, 3)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(tmp_path / "ir" / f"p{i}.png"), ir)
        cv2.imwrite(str(tmp_path / "vi" / f"p{i}.jpg"), vi)
        gray = cv2.cvtColor(vi, cv2.COLOR_BGR2GRAY)
        good = ((ir.astype(float) + gray) / 2).astype(np.uint8)
        cv2.imwrite(str(tmp_path / "good" / f"p{i}.png"), good)
        if i < 2:  # p2 is missing for this method
            cv2.imwrite(str(tmp_path / "blurry" / f"p{i}.png"), cv2.blur(good, (7, 7)))
    return tmp_path


def test_eval_two_methods(folders, cli_inproc):
    out = folders / "res" / "run"
    proc = cli_inproc(
        "eval",
        "--ir",
        str(folders / "ir"),
        "--vi",
        str(folders / "vi"),
        "--fused",
        f"good={folders / 'good'}",
        str(folders / "blurry"),
        "--metrics",
        "EN",
        "SF",
        "MSE",
        "Nabf",
        "--out",
        str(out),
    )
    assert "Convention: cddfuse" in proc.stdout
    assert "blurry: 1 of 3 fused images missing" in proc.stderr and "p2" in proc.stderr

    with open(f"{out}_per_image.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 and {r["convention"] for r in rows} == {"cddfuse"}
    assert list(rows[0])[4:] == ["EN", "SF", "MSE", "Nabf"]

    summary = json.loads(open(f"{out}_summary.json").read())
    assert summary["convention"] == "cddfuse" and summary["lower_is_better"] == ["MSE", "Nabf"]
    assert summary["methods"]["blurry"]["missing"] == ["p2"] and summary["methods"]["blurry"]["n"] == 2
    good_sf = [float(r["SF"]) for r in rows if r["method"] == "good"]
    assert summary["methods"]["good"]["metrics"]["SF"]["mean"] == pytest.approx(np.mean(good_sf))
    assert summary["methods"]["good"]["metrics"]["SF"]["std"] == pytest.approx(np.std(good_sf))

    with open(f"{out}_comparison.csv", newline="") as fh:
        comparison = {r["metric"]: r for r in csv.DictReader(fh)}
    means = {m: summary["methods"][m]["metrics"] for m in ("good", "blurry")}
    for name, row in comparison.items():
        lower = name in ("MSE", "Nabf")
        assert row["better"] == ("lower" if lower else "higher")
        pick = (min if lower else max)(means, key=lambda m: means[m][name]["mean"])
        assert pick in row["best"].split(";"), name
    md = open(f"{out}_comparison.md").read()
    assert "MSE ↓" in md and "SF ↑" in md and "**" in md
    assert "p2" in open(f"{out}_summary.md").read()
    assert (folders / "res" / "run_summary.csv").is_file()


def test_eval_size_mismatch_names_the_file(folders, cli_inproc):
    cv2.imwrite(str(folders / "good" / "p1.png"), np.zeros((40, 56), np.uint8))
    proc = cli_inproc(
        "eval",
        "--ir",
        str(folders / "ir"),
        "--vi",
        str(folders / "vi"),
        "--fused",
        f"good={folders / 'good'}",
        "--out",
        str(folders / "x"),
        check=False,
    )
    assert proc.returncode == 2
    assert "p1.png" in proc.stderr and "56x40" in proc.stderr


def test_eval_strict_and_bad_arguments(folders, cli_inproc):
    base = ["eval", "--ir", str(folders / "ir"), "--vi", str(folders / "vi"), "--out", str(folders / "x")]
    proc = cli_inproc(*base, "--fused", f"b={folders / 'blurry'}", "--strict", check=False)
    assert proc.returncode == 2 and "missing" in proc.stderr
    proc = cli_inproc(*base, "--fused", f"b={folders / 'nowhere'}", check=False)
    assert proc.returncode == 2 and "nowhere" in proc.stderr
    proc = cli_inproc(*base, "--fused", f"b={folders / 'good'}", "--metrics", "BOGUS", check=False)
    assert proc.returncode == 2 and "BOGUS" in proc.stderr


def test_eval_threads_option(folders, cli_inproc):
    import torch

    before = torch.get_num_threads()
    try:
        proc = cli_inproc(
            "eval", "--ir", str(folders / "ir"), "--vi", str(folders / "vi"),
            "--fused", f"g={folders / 'good'}", "--metrics", "SD", "--out", str(folders / "t"), "--threads", "1",
        )  # fmt: skip
        assert torch.get_num_threads() == 1 and "SD" in proc.stdout
    finally:
        torch.set_num_threads(before)


def test_eval_skips_hidden_files_and_names_an_image_too_small_for_vif(folders, cli_inproc):
    for d in ("ir", "vi", "good"):  # macOS leaves ._name files next to copied images
        (folders / d / "._p0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    proc = cli_inproc("eval", "--ir", str(folders / "ir"), "--vi", str(folders / "vi"),
                      "--fused", f"good={folders / 'good'}", "--metrics", "EN", "--out", str(folders / "h"))
    assert proc.returncode == 0 and "._p0" not in proc.stdout + proc.stderr
    small = folders / "small"
    for d in ("ir", "vi", "f"):
        (small / d).mkdir(parents=True)
        cv2.imwrite(str(small / d / "tiny.png"), np.full((30, 30), 100, np.uint8))
    proc = cli_inproc("eval", "--ir", str(small / "ir"), "--vi", str(small / "vi"), "--fused", f"f={small / 'f'}",
                      "--metrics", "VIF", "--out", str(small / "v"), check=False)
    assert proc.returncode == 2 and "tiny.png" in proc.stderr and "VIF needs images of at least 41x41" in proc.stderr


def test_eval_objects_adds_the_retention_split(tmp_path, cli_inproc):
    """`--objects` on generated scenes: a copy of IR as the fused image keeps every IR-only object
    and loses most VIS-only ones; a copy of VIS is the mirror case. Both land in the tables."""
    from fusionlab.data.synth import generate

    root = generate(tmp_path / "scenes", 8, seed=3)
    out = tmp_path / "res" / "eval"
    cli_inproc("eval", "--ir", str(root / "ir"), "--vi", str(root / "vi"), "--fused", f"ir={root / 'ir'}",
               f"vis={root / 'vi'}", "--metrics", "EN", "SD", "--objects", str(root), "--out", str(out))
    summary = json.loads((tmp_path / "res" / "eval_summary.json").read_text())
    ir, vis = summary["retention"]["ir"], summary["retention"]["vis"]
    assert ir["retention/ir_only/n"] > 0 and ir["retention/vis_only/n"] > 0
    assert ir["retention/ir_only/kept"] == 1.0 and ir["retention/vis_only/kept"] <= 0.35
    assert vis["retention/vis_only/kept"] == 1.0 and vis["retention/ir_only/kept"] <= 0.35
    md = (tmp_path / "res" / "eval_summary.md").read_text()
    assert "Object contrast retention" in md and "ir_only kept" in md


def test_eval_objects_needs_a_dataset_with_objects(folders, cli_inproc):
    (folders / "plain").mkdir()
    for d in ("ir", "vi"):
        (folders / "plain" / d).symlink_to(folders / d)
    res = cli_inproc("eval", "--ir", str(folders / "ir"), "--vi", str(folders / "vi"), "--fused", str(folders / "good"),
                     "--objects", str(folders / "plain"), "--out", str(folders / "x"), check=False)
    assert res.returncode == 2 and "--objects" in res.stderr and "neither labels nor instance masks" in res.stderr
    assert not list(folders.glob("x_*"))  # refused before any table was written
