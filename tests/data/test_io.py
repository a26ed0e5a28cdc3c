import cv2
import numpy as np
import pytest
import torch

from fusionlab.data.io import read_depth, read_image, read_ir, read_vi, write_depth, write_image
from fusionlab.errors import DataError


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif"])
def test_reads_gray_and_rgb_in_every_container(tmp_path, suffix, h):
    write = h.write
    rng = np.random.default_rng(0)
    gray = np.tile(np.arange(0, 240, 10, dtype=np.uint8), (16, 1))
    rgb = np.stack([gray, 255 - gray, rng.integers(0, 255, gray.shape, dtype=np.uint8)], 2)
    g, gi = read_image(write(tmp_path / f"g{suffix}", gray))
    c, ci = read_image(write(tmp_path / f"c{suffix}", rgb))
    assert (gi.channels, gi.bit_depth, g.shape) == (1, 8, (16, 24))
    assert (ci.channels, c.shape) == (3, (16, 24, 3))
    tol = 12 if suffix == ".jpg" else 0
    assert np.abs(g.astype(int) - gray).max() <= tol
    assert np.abs(c[:, :, 0].astype(int) - gray).max() <= tol + 20  # R stays R (no BGR swap)


def test_three_equal_channels_and_rgba(tmp_path, h):
    write = h.write
    gray = np.random.default_rng(1).integers(0, 255, (10, 12), dtype=np.uint8)
    arr, info = read_image(write(tmp_path / "g3.png", np.repeat(gray[:, :, None], 3, 2)))
    assert info.gray and info.stored_channels == 3 and np.array_equal(arr, gray)
    rgba = np.dstack([gray, gray // 2, gray // 3, np.full_like(gray, 128)])
    arr, info = read_image(write(tmp_path / "a.png", rgba))
    assert info.stored_channels == 4 and arr.shape == (10, 12, 3) and np.array_equal(arr[:, :, 1], gray // 2)


def test_sixteen_bit_gray_and_colour(tmp_path, h):
    write = h.write
    g16 = np.linspace(1000, 9000, 12 * 10).reshape(10, 12).astype(np.uint16)
    c16 = np.dstack([g16, g16 // 2, g16 // 4])
    for suffix in (".png", ".tif"):
        arr, info = read_image(write(tmp_path / f"g{suffix}", g16))
        assert info.bit_depth == 16 and arr.dtype == np.uint16 and np.array_equal(arr, g16)
        arr, info = read_image(write(tmp_path / f"c{suffix}", c16))
        assert info.bit_depth == 16 and info.channels == 3 and np.array_equal(arr[:, :, 2], g16 // 4)
    ir, _ = read_ir(tmp_path / "g.png")  # 16-bit thermal counts are stretched per image
    assert ir.dtype == np.float32 and ir.min() == 0.0 and ir.max() == 1.0
    vi, _ = read_vi(tmp_path / "c.png")
    assert np.allclose(vi[:, :, 0], g16 / 65535.0)


def test_gray_visible_is_replicated(tmp_path, h):
    write = h.write
    vi, info = read_vi(write(tmp_path / "v.png", np.full((4, 5), 51, np.uint8)))
    assert vi.shape == (4, 5, 3) and info.gray and np.allclose(vi, 0.2)


@pytest.mark.parametrize("content", [b"", b"not an image at all"])
def test_corrupt_file_names_the_file(tmp_path, content):
    bad = tmp_path / "broken.png"
    bad.write_bytes(content)
    with pytest.raises(DataError, match="broken.png"):
        read_image(bad)


def test_truncated_jpeg_is_detected(tmp_path):
    ok, buf = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(buf.tobytes()[: len(buf) // 2])
    with pytest.raises(DataError, match="cut.jpg"):
        read_image(bad)
    trailer = tmp_path / "trailer.jpg"  # a complete JPEG with camera data after its end marker
    trailer.write_bytes(buf.tobytes() + b"\x00" * 200)
    assert read_image(trailer)[0].shape == (32, 32, 3)


def test_write_image_and_depth_round_trip(tmp_path):
    t = torch.rand(3, 8, 9)
    write_image(tmp_path / "x.png", t)
    back, info = read_vi(tmp_path / "x.png")
    assert np.abs(back - t.permute(1, 2, 0).numpy()).max() <= 0.5 / 255 + 1e-6
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind
    depth = np.array([[0.0, 1.5], [12.25, 80.0]], np.float32)
    write_depth(tmp_path / "d.png", depth)
    assert np.allclose(read_depth(tmp_path / "d.png"), depth, atol=1 / 512)
