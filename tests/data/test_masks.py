"""Instance masks on disk (synthetic scenes), read through the data layer like depth, and `visible_in`
read from the scene descriptions for scoring only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fusionlab.data import synth
from fusionlab.data.collate import collate_samples
from fusionlab.data.datasets import open_dataset
from fusionlab.data.io import read_instances
from fusionlab.data.scenes import read_visibility
from fusionlab.data.transforms import crop, hflip, resize_to
from fusionlab.errors import DataError


def test_masks_on_disk_are_the_rendered_instance_maps_in_label_row_order(synthetic):
    assert json.loads((synthetic / synth.MARKER).read_text())["version"] == synth.GENERATOR_VERSION == 2
    for i in range(6):
        sid = f"{i:05d}"
        mask = read_instances(synthetic / "masks" / f"{sid}.png")
        r = synth.render(np.random.default_rng([3, i]), (64, 48))
        assert mask.dtype == np.int32 and np.array_equal(mask, r["instance"])
        scene = json.loads((synthetic / "scenes" / f"{sid}.json").read_text())
        for k, obj in enumerate(scene["objects"]):  # id k+1 lies inside label row k's box
            ys, xs = np.nonzero(mask == k + 1)
            x0, y0, x1, y1 = obj["box_px"]
            assert len(ys) and xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1
        assert mask.max() == len(scene["objects"])


def test_dataset_reads_masks_like_depth_and_visibility_only_on_request(synthetic):
    ds = open_dataset(synthetic)
    assert ds.has_masks
    s = ds[0]
    assert s.instances.shape == (1, 48, 64) and s.instances.dtype == torch.int32
    assert not any("visible" in k for k in s.meta) and not hasattr(s, "visibility")  # never in a Sample
    scene = json.loads((synthetic / "scenes" / "00000.json").read_text())
    assert ds.visibility("00000") == [o["visible_in"] for o in scene["objects"]]
    assert len(ds.visibility("00000")) == len(s.boxes)
    assert ds.select([1]).visibility("00001") is not None
    with pytest.raises(KeyError, match="no pair 'nope'"):
        ds.visibility("nope")
    batch = collate_samples([ds[0], ds[1]])
    assert batch["instances"].shape == (2, 1, 48, 64)


def test_crops_flips_and_resizes_move_the_mask_with_the_pixels(synthetic):
    s = open_dataset(synthetic)[2]
    c = crop(s, 5, 7, 30, 40)
    assert torch.equal(c.instances, s.instances[:, 5:35, 7:47])
    assert torch.equal(hflip(s).instances, s.instances.flip(-1))
    big = resize_to(s.instances, (96, 128), nearest=True)
    assert big.dtype == torch.int32 and set(big.unique().tolist()) == set(s.instances.unique().tolist())


def test_a_bad_mask_is_reported_and_ignored_and_the_pair_kept(tmp_path, h):
    root = h.make_generic(tmp_path / "ds", n=3, labels=True)
    h.write(root / "masks" / "p0.png", np.ones((24, 32), np.uint16))
    h.write(root / "masks" / "p1.png", np.ones((10, 10), np.uint16))  # wrong size
    h.write(root / "masks" / "p2.png", np.ones((24, 32, 3), np.uint8))  # colour
    for deep in (False, True):  # the header check alone catches both
        ds = open_dataset(root, deep=deep, strict=False)
        assert len(ds) == 3 and not ds.has_masks
        problems = ds.report.of_kind("masks")
        assert len(problems) == 2 and all("mask ignored" in p.message for p in problems)
        assert "10x10" in problems[0].message and "RGB image" in problems[1].message
    assert ds[0].instances is not None and ds[1].instances is None and ds[2].instances is None
    assert ds.visibility("p0") is None  # a real set without scene descriptions
    assert "instances" not in collate_samples([ds[0], ds[1]])


def test_a_malformed_scene_description_names_the_file(tmp_path):
    bad = tmp_path / "s.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="s.json.*not readable JSON"):
        read_visibility(bad)
    bad.write_text(json.dumps({"objects": [{"class": "car"}]}))
    with pytest.raises(DataError, match="object 0 lacks visible_in"):
        read_visibility(bad)
