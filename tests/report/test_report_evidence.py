"""The report's evidence sections (retention, detection by visibility with seed spread, depth on fused
vs source, the CPU-sized settings line), rendered from manifest keys, and left out when they are absent."""

from __future__ import annotations

import json
from pathlib import Path

from fusionlab.report import build_report


def write_stage(run_dir: Path, name: str, stage_type: str, metrics: dict, pipeline: Path | None = None,
                started: str = "2026-01-01T00:00:00") -> None:
    out = run_dir / name
    (out / ".fusionlab").mkdir(parents=True)
    (out / "manifest.json").write_text(json.dumps({
        "stage": name, "type": stage_type, "metrics": metrics, "started_at": started, "wall_time_s": 1.0,
        "config": {"preset": "ldnf"} if stage_type == "fusion" else {}}))
    if pipeline is not None:
        (out / ".fusionlab" / "context.json").write_text(json.dumps({"pipeline": str(pipeline)}))


FUSION = {
    "eval/EN": 6.5, "eval/SD": 30.0, "eval/SF": 9.0, "eval/AG": 3.0, "eval/VIF": 0.61,
    "retention/ir_only/mean": 0.71, "retention/ir_only/kept": 0.8125, "retention/ir_only/n": 16,
    "retention/vis_only/mean": 0.33, "retention/vis_only/kept": 0.25, "retention/vis_only/n": 4,
    "retention/both/mean": 0.9, "retention/both/kept": 1.0, "retention/both/n": 10,
    "retention/all/mean": 0.7, "retention/all/kept": 0.77, "retention/all/n": 30,
    "ref/ir/EN": 6.1, "ref/ir/retention/ir_only/kept": 1.0, "ref/ir/retention/vis_only/kept": 0.0714,
    "ref/max/retention/vis_only/kept": 0.893,
    "depth/ir/AbsRel": 0.19, "depth/vis/AbsRel": 0.17, "depth/fused-ir-net/AbsRel": 1.24,
    "depth/fused-vis-net/AbsRel": 3.67,
}
DETECT = {
    "map50/ir": 0.39, "map50_seeds/ir": [0.35, 0.39, 0.43], "map50/fused": 0.31,
    "recall_split/ir/ir_only": 0.6, "recall_split/ir/ir_only/seeds": [0.5, 0.6, 0.7],
    "recall_split/ir/vis_only": 0.05, "recall_split/fused/ir_only": 0.55, "recall_split/fused/vis_only": 0.2,
    "recall_split/n/ir_only": 40, "recall_split/n/vis_only": 12,
}


def test_evidence_sections_render_from_the_manifest_keys(tmp_path):
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("cpu_sized: [3 fusion epochs, 48-px crops]\nstages: []\n")
    run = tmp_path / "run"
    write_stage(run, "fusion", "fusion", FUSION, pipeline)
    write_stage(run, "detect", "detect", DETECT, pipeline, started="2026-01-01T00:01:00")
    md = (build_report(run).parent / "report.md").read_text()

    assert "CPU-sized settings a paper would not use: 3 fusion epochs; 48-px crops." in md
    keeps = md.split("## What fusion keeps, per object")[1].split("##")[0]
    assert "| method | EN | SD | SF | AG | IR-only kept | IR-only mean | VIS-only kept |" in keeps
    assert "| fusion (ldnf) | 6.5 | 30 | 9 | 3 | 0.8125 | 0.71 | 0.25 | 0.33 |" in keeps
    assert "| reference: ir | 6.1 | – | – | – | 1 | – | 0.0714 |" in keeps
    assert "reference: max" in keeps and "IR-only 16, VIS-only 4, both 10, all 30" in keeps
    vis = md.split("## Detection by visibility")[1].split("##")[0]
    assert "| image set | mAP@0.5 | recall IR-only | recall VIS-only |" in vis
    assert "| ir | 0.39 ± 0.099 (3 seeds) | 0.6 ± 0.25 (3 seeds) | 0.05 |" in vis
    assert "| fused | 0.31 | 0.55 | 0.2 |" in vis and "Objects: IR-only 40, VIS-only 12." in vis
    depth = md.split("## Depth on fused vs source images")[1].split("##")[0]
    assert "| IR net | IR | 0.19 |" in depth and "| IR net | fused (fusion) | 1.24 |" in depth
    assert "| VIS net | fused (fusion) | 3.67 |" in depth


def test_evidence_sections_are_left_out_when_their_keys_are_absent(tmp_path):
    run = tmp_path / "run"
    write_stage(run, "fusion", "fusion", {"eval/EN": 6.5})
    (tmp_path / "moved.yaml").write_text("cpu_sized: [x]\n")
    (run / "fusion" / ".fusionlab" / "context.json").write_text(json.dumps({"pipeline": "gone/pipeline.yaml"}))
    md = (build_report(run).parent / "report.md").read_text()
    assert "Fusion quality" in md
    for title in ("What fusion keeps", "Detection by visibility", "Depth on fused", "CPU-sized", "Ablations"):
        assert title not in md
