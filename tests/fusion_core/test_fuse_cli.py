"""`fusionlab fuse`: sizes, overwrite protection, clear errors; tiled == untiled."""

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
    assert fuse_folders(baseline_ckpt, ir_dir, vi_dir, out, progress=False) == 2
    assert _png_size(out / "p0.png") == ((47, 33), "RGB")
    assert _png_size(out / "p1.png") == ((31, 20), "RGB")


def test_fuse_tiled_from_the_cli_keeps_size(baseline_ckpt, pair_dirs, tmp_path, cli):
    ir_dir, vi_dir = pair_dirs
    out = tmp_path / "tiled"
    proc = cli("fuse", "--checkpoint", str(baseline_ckpt), "--ir", str(ir_dir), "--vi", str(vi_dir),
               "--out", str(out), "--tile", "16", "--overlap", "4", "--batch-size", "3")
    assert "fused 2 pair(s)" in proc.stdout
    assert _png_size(out / "p0.png") == ((47, 33), "RGB")


def test_fuse_refuses_to_overwrite(baseline_ckpt, pair_dirs, tmp_path, cli):
    ir_dir, vi_dir = pair_dirs
    out = tmp_path / "fused"
    out.mkdir()
    (out / "p1.png").write_bytes(b"keep me")
    proc = cli("fuse", "--checkpoint", str(baseline_ckpt), "--ir", str(ir_dir), "--vi", str(vi_dir),
               "--out", str(out), check=False)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr and "p1.png" in proc.stderr
    assert (out / "p1.png").read_bytes() == b"keep me" and not (out / "p0.png").exists()
    fuse_folders(baseline_ckpt, ir_dir, vi_dir, out, overwrite=True, progress=False)
    assert _png_size(out / "p1.png") == ((31, 20), "RGB")


def test_fuse_bad_inputs_are_clear_errors(baseline_ckpt, pair_dirs, tmp_path):
    ir_dir, vi_dir = pair_dirs
    with pytest.raises(DataError, match="not a folder"):
        fuse_folders(baseline_ckpt, tmp_path / "missing", vi_dir, tmp_path / "o", progress=False)
    (ir_dir / "lonely.png").write_bytes((ir_dir / "p0.png").read_bytes())
    with pytest.raises(DataError, match="lonely"):
        fuse_folders(baseline_ckpt, ir_dir, vi_dir, tmp_path / "o", progress=False)
    (ir_dir / "lonely.png").unlink()
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
