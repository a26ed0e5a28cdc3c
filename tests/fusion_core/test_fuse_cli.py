"""`fusionlab fuse`: sizes, bad inputs skipped and reported, resume, overwrite protection, clear
errors, tiling by the memory budget; tiled == untiled."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from fusionlab.errors import ConfigError, DataError
from fusionlab.inference import fuse_folders, fuse_image, fuse_tiled, tile_starts


def _png_size(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.size, im.mode


def test_fuse_keeps_odd_sizes_and_names(baseline_ckpt, pair_dirs, tmp_path):
    ir_dir, vi_dir = pair_dirs
    out = tmp_path / "fused"
    report = fuse_folders(baseline_ckpt, ir_dir, vi_dir, out, progress=False)
    assert report.ok and report.written == ["p0", "p1"]
    assert _png_size(out / "p0.png") == ((47, 33), "RGB")
    assert _png_size(out / "p1.png") == ((31, 20), "RGB")


def test_fuse_tiled_from_the_cli_keeps_size(baseline_ckpt, pair_dirs, tmp_path, cli):
    ir_dir, vi_dir = pair_dirs
    out = tmp_path / "tiled"
    proc = cli("fuse", "--checkpoint", str(baseline_ckpt), "--ir", str(ir_dir), "--vi", str(vi_dir),
               "--out", str(out), "--tile", "16", "--overlap", "4", "--batch-size", "3")
    assert "fused 2 of 2 pair(s)" in proc.stdout
    assert _png_size(out / "p0.png") == ((47, 33), "RGB")


def test_fuse_refuses_to_overwrite(baseline_ckpt, pair_dirs, tmp_path, cli):
    ir_dir, vi_dir = pair_dirs
    out = tmp_path / "fused"
    out.mkdir()
    (out / "p1.png").write_bytes(b"keep me")
    proc = cli("fuse", "--checkpoint", str(baseline_ckpt), "--ir", str(ir_dir), "--vi", str(vi_dir),
               "--out", str(out), check=False)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr and "--resume" in proc.stderr and "p1.png" in proc.stderr
    assert (out / "p1.png").read_bytes() == b"keep me" and not (out / "p0.png").exists()
    fuse_folders(baseline_ckpt, ir_dir, vi_dir, out, overwrite=True, progress=False)
    assert _png_size(out / "p1.png") == ((31, 20), "RGB")


def test_fuse_bad_inputs_are_clear_errors(baseline_ckpt, pair_dirs, tmp_path):
    ir_dir, vi_dir = pair_dirs
    with pytest.raises(DataError, match="not a folder"):
        fuse_folders(baseline_ckpt, tmp_path / "missing", vi_dir, tmp_path / "o", progress=False)
    with pytest.raises(ConfigError, match="overlap"):
        fuse_folders(baseline_ckpt, ir_dir, vi_dir, tmp_path / "o", tile=8, overlap=8, progress=False)
    assert not any((tmp_path / "o").glob("*.png"))  # checked before the first image: nothing half-written


def test_tile_starts_cover_the_image_with_overlap():
    starts = tile_starts(100, 32, 8)
    assert starts[0] == 0 and starts[-1] == 68
    assert all(b - a <= 24 for a, b in zip(starts[:-1], starts[1:], strict=True))
    assert tile_starts(20, 32, 8) == [0]


def _gap(net, make_pair, h, w, tile, overlap):
    ir, vi = make_pair(h, w)
    ir = torch.from_numpy(ir).float()[None, None] / 255
    vi = torch.from_numpy(vi).float().permute(2, 0, 1)[None] / 255
    whole = fuse_image(net, ir, vi)
    tiled = fuse_tiled(net, ir, vi, tile=tile, overlap=overlap, batch_size=4)
    assert tiled.shape == whole.shape == (1, 3, h, w)
    return (tiled - whole).abs().mean().item() * 255


def test_tiled_matches_untiled_small(baseline_ckpt, make_pair):
    from fusionlab.models.fusion import load_fusion_model

    net = load_fusion_model(baseline_ckpt)
    gap = _gap(net, make_pair, 150, 170, tile=64, overlap=16)
    assert 0 < gap < 2.0  # > 0: the seams really were blended, not skipped


@pytest.mark.slow
def test_tiled_matches_untiled_1024(baseline_ckpt, make_pair):
    from fusionlab.models.fusion import load_fusion_model

    net = load_fusion_model(baseline_ckpt)
    assert _gap(net, make_pair, 1024, 1024, tile=512, overlap=64) < 2.0


@pytest.mark.slow
def test_fuse_4096x3072_tiled_stays_under_4gb(repo_dir):
    """The real CLI in a child process; its peak RSS comes from the OS."""
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(repo_dir / "benchmarks" / "bench_fuse_large.py"), "--tile", "512"],
                          capture_output=True, text=True, check=True, cwd=repo_dir)
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert result["output_hw"] == [3072, 4096]
    assert result["peak_rss_mb"] < 4096


def _bad_inputs(ir_dir, vi_dir, make_pair):
    """Beside the good pairs: a corrupt, an empty, a truncated JPEG, an unpaired and a mismatched file."""
    import cv2

    (vi_dir / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    shutil.copy(ir_dir / "p0.png", ir_dir / "corrupt.png")
    (ir_dir / "empty.png").write_bytes(b"")
    shutil.copy(vi_dir / "p0.png", vi_dir / "empty.png")
    ir, vi = make_pair(24, 24)
    assert cv2.imwrite(str(ir_dir / "cut.jpg"), ir)
    (vi_dir / "cut.jpg").write_bytes(cv2.imencode(".jpg", vi)[1].tobytes()[:-40])  # decodes, but no end marker
    shutil.copy(ir_dir / "p1.png", ir_dir / "lonely.png")
    assert cv2.imwrite(str(ir_dir / "odd.png"), ir)
    assert cv2.imwrite(str(vi_dir / "odd.png"), cv2.resize(vi, (30, 24)))
    return {"corrupt": vi_dir / "corrupt.png", "empty": ir_dir / "empty.png", "cut": vi_dir / "cut.jpg",
            "lonely": ir_dir / "lonely.png", "odd": vi_dir / "odd.png"}


def test_bad_inputs_are_reported_and_skipped_and_every_good_pair_written(baseline_ckpt, pair_dirs, tmp_path,
                                                                        cli_inproc, make_pair):
    ir_dir, vi_dir = pair_dirs
    bad = _bad_inputs(ir_dir, vi_dir, make_pair)
    out = tmp_path / "out"
    proc = cli_inproc("fuse", "--checkpoint", str(baseline_ckpt), "--ir", str(ir_dir), "--vi", str(vi_dir),
                      "--out", str(out), check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["p0.png", "p1.png"]  # every good pair, nothing else
    assert "fused 2 of 6 pair(s)" in proc.stderr and "skipped 5 input(s)" in proc.stderr
    for reasons, path in [(("not an image",), bad["corrupt"]), (("empty (0 bytes)",), bad["empty"]),
                          (("truncated JPEG", "corrupt"), bad["cut"]),  # OpenCV 5 refuses it, 4.x decodes a part
                          (("no visible partner",), bad["lonely"]), (("same size",), bad["odd"])]:
        assert any(str(path) in line and any(r in line for r in reasons) for line in proc.stderr.splitlines()), \
            (reasons, proc.stderr)

    # --strict stops at the first problem (the unpaired file, found before any work)
    strict = cli_inproc("fuse", "--checkpoint", str(baseline_ckpt), "--ir", str(ir_dir), "--vi", str(vi_dir),
                        "--out", str(tmp_path / "strict"), "--strict", check=False)
    assert strict.returncode == 2 and "lonely.png" in strict.stderr and "--strict" in strict.stderr
    assert not (tmp_path / "strict").exists()
    os.unlink(bad["lonely"])
    with pytest.raises(DataError, match="corrupt.png.*--strict"):
        fuse_folders(baseline_ckpt, ir_dir, vi_dir, tmp_path / "strict", strict=True, progress=False)


def test_resume_after_a_kill_keeps_complete_outputs_and_finishes_the_rest(baseline_ckpt, tmp_path, make_pair):
    import cv2

    ir_dir, vi_dir = tmp_path / "many" / "ir", tmp_path / "many" / "vi"
    ir_dir.mkdir(parents=True)
    vi_dir.mkdir()
    ir, vi = make_pair(96, 128)
    for i in range(48):
        assert cv2.imwrite(str(ir_dir / f"p{i}.png"), ir) and cv2.imwrite(str(vi_dir / f"p{i}.png"), vi)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fusionlab", "fuse", "--checkpoint", str(baseline_ckpt), "--ir", str(ir_dir),
           "--vi", str(vi_dir), "--out", str(out), "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("p*.png"))) < 2 and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("p*.png")}
    assert 2 <= len(done) < 48, "the fuse was not interrupted mid-folder"

    with pytest.raises(DataError, match="--resume"):
        fuse_folders(baseline_ckpt, ir_dir, vi_dir, out, progress=False)
    stale = sorted(done)[0]  # an input edited after its output was written: that pair is redone
    os.utime(ir_dir / stale, ns=(time.time_ns() + 10**9,) * 2)
    report = fuse_folders(baseline_ckpt, ir_dir, vi_dir, out, resume=True, progress=False)
    assert report.ok and len(report.kept) == len(done) - 1 and stale[:-4] in report.written
    assert len(report.written) == 48 - len(done) + 1
    assert sorted(p.name for p in out.iterdir()) == sorted(f"p{i}.png" for i in range(48))  # no temp files left
    assert all((out / n).stat().st_mtime_ns == t for n, t in done.items() if n != stale)


def test_an_image_over_the_pixel_budget_is_tiled_by_itself(baseline_ckpt, pair_dirs, tmp_path, capsys):
    from fusionlab.data.io import read_image
    from fusionlab.models.fusion import load_fusion_model

    ir_dir, vi_dir = pair_dirs
    out = tmp_path / "auto"
    report = fuse_folders(baseline_ckpt, ir_dir, vi_dir, out, max_pixels=1000, overlap=4, progress=False)
    assert report.tiled == {"p0": 31}  # 47x33 > 1000 px: tiles of isqrt(1000); p1 (31x20) fits whole
    assert "over --max-pixels 1000" in capsys.readouterr().out

    net = load_fusion_model(baseline_ckpt)
    from fusionlab.inference import _read_pair

    ir, vi = _read_pair(ir_dir / "p0.png", vi_dir / "p0.png")
    expected = fuse_tiled(net, ir, vi, tile=31, overlap=4)
    got = torch.from_numpy(read_image(out / "p0.png")[0]).permute(2, 0, 1).float() / 255
    assert (got - expected[0]).abs().max() <= 1 / 255 + 1e-6
    assert (got - fuse_image(net, ir, vi)[0]).abs().max() > 0  # really tiled, not fused whole
