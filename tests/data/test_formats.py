"""Each supported layout is found and read into Samples with the right optional fields."""

import numpy as np
import pytest
import torch

from fusionlab.data.datasets import open_dataset
from fusionlab.errors import DataError


def test_generic_reads_depth_labels_captions(generic):
    ds = open_dataset(generic)
    assert ds.report.format == "generic" and ds.ids == ["p0", "p1", "p2", "p3"] and ds.classes == ["person", "car"]
    s = ds[1]
    assert s.ir.shape == (1, 24, 32) and s.vi.shape == (3, 24, 32) and s.ir.dtype == torch.float32
    assert float(s.ir[0, 5, 7]) == pytest.approx(220 / 255)
    assert torch.allclose(s.depth, torch.full((1, 24, 32), 3.0))
    assert torch.allclose(s.boxes, torch.tensor([[1, 10 / 32, 8 / 24, 8 / 32, 8 / 24]]))
    assert s.caption == "scene 1" and s.meta["path_ir"].endswith("p1.png") and s.meta["vi_gray"] is False


def test_pairs_match_by_stem_across_extensions(tmp_path, h):
    ir, vi = h.scene(0)
    h.write(tmp_path / "ir" / "a.png", ir)
    h.write(tmp_path / "vi" / "a.jpg", vi)
    h.write(tmp_path / "ir" / "b.bmp", ir)
    h.write(tmp_path / "vi" / "b.tif", vi)
    ds = open_dataset(tmp_path)
    assert ds.ids == ["a", "b"] and ds.report.ok and not ds.has_boxes and ds[0].boxes is None


def _voc(path, boxes, w=32, h=24):
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
        for n, a, b, c, d in boxes
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><size><width>{w}</width><height>{h}</height></size>{objs}</annotation>")


def test_llvip_with_voc_boxes_and_splits(tmp_path, h):
    for split, stem in (("train", "010001"), ("test", "190001")):
        ir, vi = h.scene(1)
        h.write(tmp_path / "infrared" / split / f"{stem}.jpg", ir)
        h.write(tmp_path / "visible" / split / f"{stem}.jpg", vi)
        _voc(tmp_path / "Annotations" / f"{stem}.xml", [("person", 6, 4, 14, 12)])
    ds = open_dataset(tmp_path, split="test")
    assert ds.report.format == "llvip" and ds.ids == ["190001"] and ds.classes == ["person"]
    assert torch.allclose(ds[0].boxes, torch.tensor([[0, 10 / 32, 8 / 24, 8 / 32, 8 / 24]]))
    assert open_dataset(tmp_path).ids == ["010001", "190001"]  # no split: both


def test_m3fd_with_voc_annotations(tmp_path, h):
    ir, vi = h.scene(2)
    h.write(tmp_path / "Ir" / "00001.png", ir)
    h.write(tmp_path / "Vis" / "00001.png", vi)
    _voc(tmp_path / "Annotation" / "00001.xml", [("People", 0, 0, 4, 8), ("Truck", 10, 10, 30, 20)])
    ds = open_dataset(tmp_path)
    assert ds.report.format == "m3fd" and ds.classes[:6] == ["people", "car", "bus", "motorcycle", "lamp", "truck"]
    assert ds[0].boxes[:, 0].tolist() == [0, 5]


def test_m3fd_unknown_class_is_listed_with_its_file(tmp_path, h):
    ir, vi = h.scene(2)
    for stem in ("a", "b"):
        h.write(tmp_path / "Ir" / f"{stem}.png", ir)
        h.write(tmp_path / "Vis" / f"{stem}.png", vi)
    _voc(tmp_path / "Annotation" / "a.xml", [("Spaceship", 0, 0, 4, 8)])
    _voc(tmp_path / "Annotation" / "b.xml", [("Car", 0, 0, 4, 8)])
    ds = open_dataset(tmp_path)
    assert ds.ids == ["b"]
    (problem,) = ds.report.of_kind("labels")
    assert problem.path.endswith("a.xml") and "Spaceship" in problem.message and "data.classes" in problem.message


def test_kaist_videos_annotations_and_depth(tmp_path, h):
    for video in ("V000", "V001"):
        base = tmp_path / "images" / "set00" / video
        ir, vi = h.scene(3)
        h.write(base / "lwir" / "I00000.jpg", ir)
        h.write(base / "visible" / "I00000.jpg", vi)
        ann = tmp_path / "annotations" / "set00" / video / "I00000.txt"
        ann.parent.mkdir(parents=True)
        ann.write_text("% bbGt version=3\nperson 6 4 8 8 0 0 0 0 0 0 0\ncyclist 0 0 4 4 0 0 0 0 0 0 0\n")
    h.write(tmp_path / "images" / "set00" / "V001" / "depth" / "I00000.png", np.full((24, 32), 2560, np.uint16))
    ds = open_dataset(tmp_path)
    assert ds.report.format == "kaist" and ds.ids == ["set00_V000_I00000", "set00_V001_I00000"]
    assert ds[0].boxes[:, 0].tolist() == [0, 2] and ds.classes[:3] == ["person", "people", "cyclist"]
    assert torch.allclose(ds[0].boxes[0, 1:], torch.tensor([10 / 32, 8 / 24, 8 / 32, 8 / 24]))
    assert ds[0].depth is None and torch.allclose(ds[1].depth, torch.full((1, 24, 32), 10.0))
    one_set = open_dataset(tmp_path, split="set00")  # images/set00; annotations/ found above it
    assert one_set.ids == ds.ids and torch.equal(one_set[0].boxes, ds[0].boxes)


def test_explicit_format_that_does_not_fit(generic):
    with pytest.raises(DataError, match="LLVIP|llvip"):
        open_dataset(generic, format="llvip")
