"""The detection protocol: `fusionlab detect-eval` through ultralytics' trainer on a tiny set, the
seed statistics, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
import yaml


def test_detect_eval_trains_every_set_and_seed_through_ultralytics(tmp_path, tiny_dataset, socket_guard, capsys,
                                                                  monkeypatch):
    from pathlib import Path

    import numpy as np

    from fusionlab.cli import main
    from fusionlab.data.io import read_vi, write_image

    unpickled = []  # no pickle may be loaded on this path (ultralytics' .pt checkpoints and label caches)
    real_np_load, real_torch_load = np.load, torch.load

    def np_load(file, *args, **kwargs):
        if kwargs.get("allow_pickle") and Path(file).exists():  # (ultralytics tries a cache that is not there)
            unpickled.append(file)
        return real_np_load(file, *args, **kwargs)

    def torch_load(file, *args, **kwargs):
        if not kwargs.get("weights_only"):
            unpickled.append(file)
        return real_torch_load(file, *args, **kwargs)

    monkeypatch.setattr(np, "load", np_load)
    monkeypatch.setattr(torch, "load", torch_load)

    # two "fused" folders made from the dataset itself, named like its files
    for name, pick in (("mean", lambda ir, vi: (ir + vi) / 2), ("maxi", lambda ir, vi: torch.maximum(ir, vi))):
        for ir_path in sorted((tiny_dataset / "ir").iterdir()):
            ir = torch.from_numpy(read_vi(ir_path)[0])
            vi = torch.from_numpy(read_vi(tiny_dataset / "vi" / ir_path.name)[0])
            write_image(tmp_path / name / ir_path.name, pick(ir, vi).permute(2, 0, 1))
    args = ["detect-eval", "--labels", str(tiny_dataset), "--fused", f"mean={tmp_path / 'mean'}",
            "--fused", f"maxi={tmp_path / 'maxi'}", "--out", str(tmp_path / "eval"), "--profile", "fast",
            "--epochs", "1", "--imgsz", "64", "--batch-size", "4", "--seeds", "0", "1", "--accelerator", "cpu"]
    assert main(args) == 0
    out = tmp_path / "eval"
    result = json.loads((out / "map.json").read_text())
    sets = ["ir", "vis", "mean", "maxi"]
    assert result["sets"] == sets and all(sorted(result["results"][s]) == ["0", "1"] for s in sets)
    assert set(result["summary"]["paired"]) == {"mean-ir", "mean-vis", "maxi-ir", "maxi-vis"}
    assert result["meta"]["protocol"]["train_args"]["val"] is False  # the fast profile: validation at the end only
    assert set(result["meta"]["val_ids"]).isdisjoint(result["meta"]["train_ids"])
    md = (out / "map.md").read_text()
    for s in sets:
        assert f"| **{s}** |" in md
    # the generated labels record visible_in: recall split by visibility, per set and seed
    recall = result["recall_split"]
    assert set(recall) == set(sets) and all(len(recall[s]["all"]["per_seed"]) == 2 for s in sets)
    assert {"ir_only", "vis_only", "both"} <= set(recall["ir"]) and "Recall by which modality" in md
    rows = (out / "map.csv").read_text().splitlines()
    assert rows[0] == "set,seed,class,images,instances,precision,recall,map50,map50_95"
    assert {(r.split(",")[0], r.split(",")[1]) for r in rows[1:]} == {(s, k) for s in sets for k in ("0", "1")}
    # one ultralytics dataset per set, on identical splits, and ultralytics' run folders
    for s in sets:
        data = yaml.safe_load((out / "work" / "data" / f"{s}.yaml").read_text())
        assert data["train"] == "images/train" and data["names"] == {0: "person", 1: "car", 2: "animal", 3: "sign"}
        val = sorted(p.stem for p in (out / "work" / "data" / s / "images" / "val").iterdir())
        assert val == sorted(result["meta"]["val_ids"])
        for seed in (0, 1):
            args_yaml = yaml.safe_load((out / "work" / "runs" / f"{s}-seed{seed}" / "args.yaml").read_text())
            assert args_yaml["seed"] == seed and args_yaml["data"].endswith(f"{s}.yaml")
            predictions = json.loads((out / "protocol" / s / f"seed{seed}" / "predictions.json").read_text())
            assert sorted(predictions) == val
    assert socket_guard == []  # nothing tried to reach the network
    assert unpickled == []
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.cache"))  # no pickle left behind
    # a rerun keeps every finished unit and gives the same table
    capsys.readouterr()
    assert main(args) == 0
    assert capsys.readouterr().out.count("done earlier, kept") == 8
    assert json.loads((out / "map.json").read_text())["results"] == result["results"]


def test_summary_is_mean_std_over_seeds_and_paired_differences():
    from fusionlab.detection.protocol import manifest_metrics, summarize, to_markdown

    def unit(m):
        return {"map50": m, "map50_95": m / 2, "precision": 0.5, "recall": 0.5, "images": 4, "instances": 9,
                "per_class": {"car": {"map50": m, "map50_95": m / 2, "precision": 0.5, "recall": 0.5, "instances": 9}}}

    results = {"ir": {0: unit(0.2), 1: unit(0.4), 2: unit(0.3)}, "vis": {0: unit(0.1), 1: unit(0.1), 2: unit(0.1)},
               "ours": {0: unit(0.3), 1: unit(0.6), 2: unit(0.3)}}
    summary = summarize(results)
    ir = summary["sets"]["ir"]["map50"]
    assert ir["mean"] == pytest.approx(0.3) and ir["std"] == pytest.approx(0.1)  # sample std (n - 1)
    d = summary["paired"]["ours-ir"]["map50"]  # per seed: 0.1, 0.2, 0.0
    assert d["per_seed"] == pytest.approx([0.1, 0.2, 0.0]) and d["mean"] == pytest.approx(0.1)
    assert d["std"] == pytest.approx(0.1)
    half = 4.302652729911275 * 0.1 / 3 ** 0.5  # t(0.975, 2) · sd / √n
    assert d["ci95"] == pytest.approx([0.1 - half, 0.1 + half])
    flat = manifest_metrics(summary)
    assert flat["map50/ours"] == pytest.approx(0.4) and flat["map50_std/vis"] == 0.0
    assert flat["map50_diff/ours-vis"] == pytest.approx(0.3) and "map50_diff_ci95/ours-ir" in flat
    assert "ir-vis" not in summary["paired"]  # sources are not compared with each other
    md = to_markdown(summary, "t")
    assert "| **ours** | 0.400 ± 0.173 |" in md and "| ours-ir | 0.100 ± 0.100 [" in md


def test_profiles_and_overrides():
    from fusionlab.detection.protocol import ProtocolConfig

    paper = ProtocolConfig().settings()
    assert paper["model"] == "yolov8n.yaml" and paper["imgsz"] == 640 and paper["epochs"] == 100
    assert paper["train_args"] == {} and paper["width_multiple"] is None  # everything else: ultralytics' defaults
    assert ProtocolConfig(profile="text2pixels").settings()["model"] == "yolov5s.yaml"
    fast = ProtocolConfig(profile="fast", epochs=2, train_args={"lr0": 0.02}).settings()
    assert fast["epochs"] == 2 and fast["train_args"]["lr0"] == 0.02 and fast["train_args"]["val"] is False


def test_detect_eval_bad_fused_folder_is_a_clear_error(tmp_path, tiny_dataset):
    from fusionlab.cli import main

    rc = main(["detect-eval", "--labels", str(tiny_dataset), "--fused", f"x={tmp_path / 'nope'}",
               "--out", str(tmp_path / "o")])
    assert rc == 2
    assert not (tmp_path / "o").exists()  # checked before anything is written


def test_detect_eval_fused_images_of_another_size_are_refused(tmp_path, tiny_dataset):
    from fusionlab.cli import main
    from fusionlab.data.io import write_image

    for p in (tiny_dataset / "vi").iterdir():
        write_image(tmp_path / "small" / p.name, torch.zeros(3, 32, 32))
    rc = main(["detect-eval", "--labels", str(tiny_dataset), "--fused", f"s={tmp_path / 'small'}",
               "--out", str(tmp_path / "o")])
    assert rc == 2 and not (tmp_path / "o").exists()


def test_visibility_recall_of_a_detector_that_finds_only_what_ir_sees():
    """Hand-made split: predictions equal to the IR-only targets give recall 1 there and 0 for VIS-only."""
    from types import SimpleNamespace

    import torch

    from fusionlab.detection.protocol import recall_metrics, visibility_recall

    ir_only, vis_only, both = {"ir": True, "vi": False}, {"ir": False, "vi": True}, {"ir": True, "vi": True}
    labels = {"a": [[0, 0.2, 0.2, 0.1, 0.1], [1, 0.7, 0.7, 0.2, 0.2]], "b": [[0, 0.5, 0.5, 0.2, 0.3]]}
    seen = {"a": [ir_only, vis_only], "b": [both]}

    class Split:
        ids = ["a", "b"]

        def __getitem__(self, k):
            return SimpleNamespace(boxes=torch.tensor(labels[self.ids[k]]))

        def visibility(self, sid):
            return seen[sid]

    found_ir = {"a": [[0, 0.2, 0.2, 0.1, 0.1, 0.9]], "b": [[0, 0.5, 0.5, 0.2, 0.3, 0.8]]}
    nothing = {"a": [[1, 0.7, 0.7, 0.2, 0.2, 0.1]], "b": []}  # below the 0.25 confidence: not found
    out = visibility_recall({"ir": {0: found_ir, 1: found_ir}, "none": {0: nothing}}, Split())
    assert out["ir"]["ir_only"]["recall"] == 1.0 and out["ir"]["vis_only"]["recall"] == 0.0
    assert out["ir"]["both"]["recall"] == 1.0 and out["ir"]["all"]["recall"] == pytest.approx(2 / 3)
    assert out["ir"]["all"]["per_seed"] == [pytest.approx(2 / 3)] * 2 and out["none"]["all"]["recall"] == 0.0
    keys = recall_metrics(out)
    assert keys["recall_split/n/ir_only"] == 1 and keys["recall_split/ir/vis_only"] == 0.0
    assert keys["recall_split/ir/all/seeds"] == [0.6667, 0.6667]

    seen = {"a": None, "b": None}  # a dataset without visible_in: no split
    assert visibility_recall({"ir": {0: found_ir}}, Split()) == {}
