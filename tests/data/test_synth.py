"""Synthetic scenes: deterministic, geometrically consistent, complementary, and readable as a dataset."""

import json
import time
from collections import Counter

import numpy as np
import pytest

from fusionlab.data import synth
from fusionlab.data.datasets import open_dataset
from fusionlab.data.io import read_depth
from fusionlab.errors import DataError


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_by_seed_and_independent_of_n(tmp_path):
    a = synth.generate(tmp_path / "a", n=4, seed=7, size=(64, 48))
    b = synth.generate(tmp_path / "b", n=4, seed=7, size=(64, 48))
    c = synth.generate(tmp_path / "c", n=4, seed=8, size=(64, 48))
    d = synth.generate(tmp_path / "d", n=2, seed=7, size=(64, 48))
    fa, fb, fc, fd = _files(a), _files(b), _files(c), _files(d)
    assert fa == fb
    assert fa["ir/00000.png"] != fc["ir/00000.png"] and fa["vi/00001.png"] != fc["vi/00001.png"]
    assert all(fa[k] == v for k, v in fd.items() if k.startswith(("ir/", "vi/", "depth/", "labels/", "scenes/")))


def test_layout_is_read_by_the_generic_reader(synthetic):
    ds = open_dataset(synthetic)
    assert ds.report.format == "generic" and ds.report.ok and len(ds) == 6
    assert ds.classes == synth.CLASSES and ds.has_depth and ds.has_boxes
    s = ds[0]
    assert s.ir.shape == (1, 48, 64) and s.vi.shape == (3, 48, 64) and s.depth.shape == (1, 48, 64)
    assert s.caption and "road scene" in s.caption
    scene = json.loads((synthetic / "scenes" / "00000.json").read_text())
    assert scene["time_of_day"] in ("day", "night")
    assert len(scene["objects"]) == len(s.boxes)
    for obj, box in zip(scene["objects"], s.boxes, strict=True):
        assert synth.CLASSES[int(box[0])] == obj["class"]
        assert np.allclose(obj["box"], box[1:].numpy(), atol=1e-5)
        assert set(obj) >= {"distance_m", "side", "visible_in"} and set(obj["visible_in"]) == {"ir", "vi"}


def test_depth_follows_the_ground_plane_and_grows_toward_the_horizon(synthetic):
    for i in range(6):
        scene = json.loads((synthetic / "scenes" / f"{i:05d}.json").read_text())
        cam = scene["camera"]
        depth = read_depth(synthetic / "depth" / f"{i:05d}.png")
        r = synth.render(np.random.default_rng([3, i]), (64, 48))
        assert np.allclose(depth, r["depth"], atol=1 / 256)  # disk == rendered geometry
        rows = np.arange(48) + 0.5
        ground = cam["focal_px"] * cam["height_m"] / np.where(rows > cam["horizon_y"], rows - cam["horizon_y"], np.nan)
        ground = np.where(ground > synth.MAX_DEPTH_M, 0, ground)
        below = np.isfinite(ground)[:, None] & (r["instance"] == 0) & np.ones((1, 64), bool)
        expected = np.broadcast_to(np.nan_to_num(ground)[:, None], depth.shape)
        match = np.isclose(depth, expected, rtol=0.01, atol=1 / 256)[below]  # params are rounded in the JSON
        assert match.mean() > 0.9, f"scene {i}: only {match.mean():.2f} of ground pixels follow the plane"
        valid_rows = [y for y in range(48) if np.isfinite(ground[y]) and ground[y] > 0]
        med = [np.median(depth[y][below[y]]) for y in valid_rows if below[y].any()]
        assert all(a > b for a, b in zip(med, med[1:], strict=False)), "depth must decrease away from the horizon"
        for k, obj in enumerate(scene["objects"]):  # objects stand at their stated distance
            assert np.allclose(r["depth"][r["instance"] == k + 1], obj["distance_m"], atol=0.01)


def test_boxes_cover_every_drawn_object():
    for i in range(10):
        r = synth.render(np.random.default_rng([11, i]), (160, 128))
        assert r["instance"].max() == len(r["boxes"])
        for k, obj in enumerate(r["scene"]["objects"]):
            ys, xs = np.nonzero(r["instance"] == k + 1)
            assert len(ys), f"object {k} is in the labels but not drawn"
            x0, y0, x1, y1 = obj["box_px"]
            assert xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1
            cls, cx, cy, w, h = r["boxes"][k]
            assert np.allclose(
                [cx * 160 - w * 80, cy * 128 - h * 64, cx * 160 + w * 80, cy * 128 + h * 64], obj["box_px"], atol=1e-3
            )


def test_modalities_are_complementary():
    counts = Counter()
    for i in range(40):
        r = synth.render(np.random.default_rng([5, i]), (160, 128))
        night = r["scene"]["time_of_day"] == "night"
        for obj in r["scene"]["objects"]:
            v = obj["visible_in"]
            counts[(obj["class"], v["ir"], v["vi"], night)] += 1
            if obj["class"] == "sign":
                assert not v["ir"], "signs are cold: they must not show in IR"
    ir_only = sum(n for (c, ir, vi, _), n in counts.items() if ir and not vi)
    vi_only = sum(n for (c, ir, vi, _), n in counts.items() if vi and not ir)
    dark_people = sum(n for (c, ir, vi, night), n in counts.items() if c == "person" and night and ir and not vi)
    assert ir_only >= 10 and vi_only >= 5 and dark_people >= 5, counts
    days = sum(n for k, n in counts.items() if not k[3])
    assert days > 0 and sum(counts.values()) - days > 0


def test_size_option_and_refusing_a_foreign_folder(tmp_path):
    out = synth.generate(tmp_path / "s", n=1, seed=0, size=(96, 64))
    assert open_dataset(out)[0].vi.shape == (3, 64, 96)
    synth.generate(out, n=1, seed=1, size=(96, 64))  # replacing its own output is fine
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="mine.*not written by"):
        synth.generate(tmp_path / "mine", n=1, seed=0)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_two_hundred_scenes_under_thirty_seconds(tmp_path):
    start = time.perf_counter()
    synth.generate(tmp_path / "s", n=200, seed=0)
    assert time.perf_counter() - start < 30
