"""The detection protocol: metric bookkeeping and `fusionlab detect-eval` end to end on tiny data."""

from __future__ import annotations

import json

import pytest
import torch


def test_letterbox_keeps_boxes_on_the_same_pixels():
    from fusionlab.detection_protocol import letterbox

    img = torch.zeros(3, 40, 64, dtype=torch.uint8)
    img[:, 10:20, 16:32] = 255  # a white box: cx=24/64, cy=15/40, w=16/64, h=10/40
    box = torch.tensor([[1, 24 / 64, 15 / 40, 16 / 64, 10 / 40]])
    out = letterbox([img], [box], imgsz=64, stride=32)
    assert out.images.shape == (1, 3, 64, 64)  # height padded to the stride
    _, cx, cy, w, h = out.boxes[0][0].tolist()
    x1, y1, x2, y2 = (cx - w / 2) * 64, (cy - h / 2) * 64, (cx + w / 2) * 64, (cy + h / 2) * 64
    assert (round(x1), round(y1), round(x2), round(y2)) == (16, 10, 32, 20)
    assert out.images[0, :, 12, 20].tolist() == [255, 255, 255]


def test_evaluate_scores_perfect_and_empty_predictions(monkeypatch, tiny_detector_cfg):
    from fusionlab import detection_protocol as proto
    from fusionlab.models.detector import build_detector

    boxes = [torch.tensor([[0, 0.25, 0.25, 0.25, 0.25]]), torch.tensor([[1, 0.5, 0.5, 0.5, 0.5]])]
    data = proto.ImageSet(torch.zeros(2, 3, 64, 64, dtype=torch.uint8), boxes)
    model = build_detector(tiny_detector_cfg, nc=2)

    def perfect(model, images, cfg=None):
        out = []
        for b in boxes[: len(images)]:
            c, cx, cy, w, h = b[0].tolist()
            out.append(torch.tensor([[(cx - w / 2) * 64, (cy - h / 2) * 64, (cx + w / 2) * 64, (cy + h / 2) * 64, 0.9, c]]))
        return out

    monkeypatch.setattr(proto, "predict", perfect)
    r = proto.evaluate(model, data, ["a", "b"], tiny_detector_cfg)
    assert r["map50"] == pytest.approx(1.0, abs=0.01) and r["map50_95"] == pytest.approx(1.0, abs=0.01)
    assert set(r["per_class"]) == {"a", "b"} and r["per_class"]["a"]["recall"] == pytest.approx(1.0)
    monkeypatch.setattr(proto, "predict", lambda model, images, cfg=None: [torch.zeros(0, 6) for _ in images])
    r = proto.evaluate(model, data, ["a", "b"], tiny_detector_cfg)
    assert r["map50"] == 0.0 and r["per_class"]["b"]["precision"] == 0.0


def test_tables_have_a_row_per_set_and_class(tmp_path):
    from fusionlab.detection_protocol import write_tables

    res = {s: {"precision": 0.5, "recall": 0.25, "map50": 0.4, "map50_95": 0.2, "images": 3, "instances": 4,
               "per_class": {"car": {"precision": 0.5, "recall": 0.25, "map50": 0.4, "map50_95": 0.2, "instances": 4}}}
           for s in ("ir", "vis", "ours")}
    paths = write_tables(res, tmp_path, {"seed": 0})
    csv_lines = paths["map.csv"].read_text().splitlines()
    assert csv_lines[0] == "set,class,images,instances,precision,recall,map50,map50_95"
    assert len(csv_lines) == 1 + 3 * 2
    assert "| **ours** | **all** |" in paths["map.md"].read_text()
    assert json.loads(paths["map.json"].read_text())["meta"] == {"seed": 0}


def test_detect_eval_command_tabulates_every_set(tmp_path, tiny_dataset, socket_guard):
    from fusionlab.cli import main
    from fusionlab.data.io import read_vi, write_image

    # two "fused" folders made from the dataset itself, named like its files
    for name, pick in (("mean", lambda ir, vi: (ir + vi) / 2), ("maxi", lambda ir, vi: torch.maximum(ir, vi))):
        out = tmp_path / name
        for ir_path in sorted((tiny_dataset / "ir").iterdir()):
            ir = torch.from_numpy(read_vi(ir_path)[0])
            vi = torch.from_numpy(read_vi(tiny_dataset / "vi" / ir_path.name)[0])
            write_image(out / ir_path.name, pick(ir, vi).permute(2, 0, 1))
    rc = main(["detect-eval", "--labels", str(tiny_dataset), "--fused", f"mean={tmp_path / 'mean'}",
               "--fused", f"maxi={tmp_path / 'maxi'}", "--out", str(tmp_path / "eval"), "--epochs", "1",
               "--imgsz", "64", "--width", "0.0625", "--depth", "0.33", "--batch-size", "4", "--accelerator", "cpu"])
    assert rc == 0
    result = json.loads((tmp_path / "eval" / "map.json").read_text())
    assert result["sets"] == ["ir", "vis", "mean", "maxi"]
    assert [r["set"] for r in result["rows"] if r["class"] == "all"] == ["ir", "vis", "mean", "maxi"]
    sets_in_csv = {line.split(",")[0] for line in (tmp_path / "eval" / "map.csv").read_text().splitlines()[1:]}
    assert sets_in_csv == {"ir", "vis", "mean", "maxi"}
    md = (tmp_path / "eval" / "map.md").read_text()
    for s in ("ir", "vis", "mean", "maxi"):
        assert f"| **{s}** | **all** |" in md
    assert set(result["meta"]["val_ids"]).isdisjoint(result["meta"]["train_ids"])
    assert socket_guard == []  # nothing tried to reach the network


def test_detect_eval_bad_fused_folder_is_a_clear_error(tmp_path, tiny_dataset):
    from fusionlab.cli import main

    rc = main(["detect-eval", "--labels", str(tiny_dataset), "--fused", f"x={tmp_path / 'nope'}",
               "--out", str(tmp_path / "o")])
    assert rc == 2
    assert not (tmp_path / "o").exists()  # checked before anything is written
