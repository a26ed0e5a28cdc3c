"""The W&B dashboard (docs/wandb/dashboard.py) builds offline and shows keys the stages really log.

The keys are checked against the stage sources, not against a copy of them: every string literal
and f-string of a stage module (and the modules its metric names come from) is a possible logged
name, so renaming a logged key in a stage makes this test fail until the dashboard follows.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import socket
from pathlib import Path

import pytest

pytest.importorskip("wandb_workspaces", reason="wandb-workspaces is not installed (dev dependency: "
                    "pip install wandb-workspaces==0.4.13)")

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "docs" / "wandb" / "dashboard.py"

# Where each stage's logged names are written: (file, names are logged lowercased).
SOURCES = {
    "depth": [("fusionlab/stages/depth.py", False), ("fusionlab/metrics/depth.py", True)],  # DepthModule: val_{name.lower()}
    "denoiser": [("fusionlab/stages/denoiser.py", False)],
    "captions": [("fusionlab/stages/captions.py", False)],
    "fusion": [("fusionlab/stages/fusion.py", False), ("fusionlab/metrics/evaluate.py", False),  # loss terms:
               *((str(p.relative_to(REPO)), False) for p in sorted(REPO.glob("fusionlab/presets/*/objective.py")))],
    "detect": [("fusionlab/stages/detect.py", False), ("fusionlab/detection/bilevel.py", False),
               ("fusionlab/detection/protocol.py", False)],
}
COMMON = [("fusionlab/pipeline/stage_process.py", False)]  # summary: final metrics + wall_time_s
LIGHTNING_SUFFIXES = ("_step", "_epoch")  # self.log(..., on_step=True, on_epoch=True) adds these


@pytest.fixture(scope="module")
def dashboard():
    spec = importlib.util.spec_from_file_location("fusionlab_wandb_dashboard", DASHBOARD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def no_network(monkeypatch):
    """Building the dashboard must not reach W&B: any connection attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access while building the dashboard: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --------------------------------------------------------------------------- what the sources log


class Names:
    """String literals and f-string patterns of some source files."""

    def __init__(self, files: list[tuple[str, bool]]):
        self.literals: set[str] = set()
        self.patterns: list[re.Pattern] = []
        for rel, lowered in files:
            tree = ast.parse((REPO / rel).read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    self.literals.add(node.value)
                    if lowered:
                        self.literals.add(node.value.lower())
                elif isinstance(node, ast.JoinedStr):
                    parts = []
                    for value in node.values:
                        if isinstance(value, ast.Constant):
                            parts.append(re.escape(value.value))
                        else:
                            parts.append(r"([A-Za-z0-9_.]+)")
                    if any(isinstance(v, ast.Constant) for v in node.values):
                        self.patterns.append(re.compile("".join(parts)))

    def produces(self, name: str) -> bool:
        """`name` is a literal, or fills an f-string whose placeholders are literals themselves."""
        if name in self.literals:
            return True
        for pattern in self.patterns:
            match = pattern.fullmatch(name)
            if match and all(group in self.literals for group in match.groups()):
                return True
        return False

    def produces_lightning(self, key: str) -> bool:
        """A `self.log` name as WandbLogger writes it: `<phase>-<name>` (phase `main`: no prefix)."""
        candidates = [("", key)] + [(key[:i], key[i + 1:]) for i, c in enumerate(key) if c == "-"]
        for phase, name in candidates:
            if phase and not self.produces(phase):
                continue
            bases = [name] + [name[: -len(s)] for s in LIGHTNING_SUFFIXES if name.endswith(s)]
            if any(self.produces(base) for base in bases):
                return True
        return False


def _stage_of(catalogue: dict, key: str) -> str:
    for stage, panels in catalogue.items():
        for _, keys in panels:
            if key in ([keys] if isinstance(keys, str) else keys):
                return stage
    raise AssertionError(f"{key} is in no stage of the catalogue")


def _spec_keys(node) -> set[str]:
    """Every metric / media key referenced anywhere in an exported W&B spec."""
    found: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("metrics", "mediaKeys") and isinstance(v, list):
                found |= {x for x in v if isinstance(x, str)}
            elif k == "metricRegex" and isinstance(v, str):
                found.add("regex:" + v)
            elif k == "val" and isinstance(v, str) and node.get("type") == "string":
                found.add("const:" + v)
            found |= _spec_keys(v)
    elif isinstance(node, list):
        for item in node:
            found |= _spec_keys(item)
    return found


# --------------------------------------------------------------------------- tests


def test_every_dashboard_key_is_logged_by_its_stage(dashboard):
    for stage, panels in dashboard.CURVES.items():
        names = Names(SOURCES[stage])
        for title, keys in panels:
            for key in keys:
                assert names.produces_lightning(key), f"{stage}: curve '{title}' shows '{key}', which the stage does not log"
    for kind, catalogue in (("metric", dashboard.TABLES_OF_METRICS), ("image", dashboard.IMAGES)):
        for stage, panels in catalogue.items():
            names = Names(SOURCES[stage] + COMMON)
            for title, keys in panels:
                for key in keys:
                    assert names.produces(key), f"{stage}: {kind} panel '{title}' shows '{key}', which the stage does not log"
    for stage, tables in dashboard.TABLES.items():
        for title, key in tables:
            assert Names(SOURCES[stage]).produces(key), f"{stage}: table '{title}' ('{key}') is not logged"
    assert Names(COMMON).produces(dashboard.WALL_TIME)
    assert re.compile(dashboard.FUSION_TERMS_REGEX).fullmatch("fusion-train/mci")


def test_key_check_rejects_a_renamed_key(dashboard):
    """The check above can fail: names the stages do not log are refused."""
    depth, detect = Names(SOURCES["depth"]), Names(SOURCES["detect"] + COMMON)
    assert depth.produces_lightning("ir-val_absrel")
    assert not depth.produces_lightning("ir-val_AbsRel_typo")
    assert not depth.produces_lightning("nonet-train_silog")
    assert detect.produces("map50/fused") and not detect.produces("map50_typo/fused") and not detect.produces("map50/thermal")


def test_stage_contract_the_dashboard_relies_on(dashboard):
    """job_type = stage name, group = pipeline run, Lightning prefix joined with '-', artifact names."""
    lightning = Path(importlib.util.find_spec("lightning").origin).parent  # read, not imported: importing is slow
    assert re.search(r'class WandbLogger\b(?s:.*?)LOGGER_JOIN_CHAR = "-"', (lightning / "pytorch/loggers/wandb.py").read_text())
    base = (REPO / "fusionlab/stages/base.py").read_text()
    assert re.search(r"wandb\.init\((?s:.*?)group=self\.group(?s:.*?)job_type=self\.name", base)
    assert "WandbLogger(experiment=run, prefix=name" in base
    import yaml

    pipeline_stages = [s["name"] for s in yaml.safe_load((REPO / "stages/pipeline.yaml").read_text())["stages"]]
    assert set(dashboard.STAGES) <= set(pipeline_stages)  # every dashboard stage is a real pipeline stage
    for artifact, _ in dashboard.LINEAGE:
        stage, output = artifact.split("-", 1)
        tree = ast.parse((REPO / f"fusionlab/stages/{stage}.py").read_text())
        outputs = next(ast.literal_eval(n.value) for n in tree.body
                       if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "OUTPUTS")
        assert output in outputs, f"lineage artifact {artifact}: stage {stage} has no output '{output}'"
    assert 'f"{ctx.name}-{output}"' in (REPO / "fusionlab/pipeline/stage_process.py").read_text()


def test_workspace_builds_offline_with_every_section(dashboard, no_network):
    spec = dashboard.workspace_spec(dashboard.build_workspace("someone", "fusionlab"))
    assert (spec["entity"], spec["project"]) == ("someone", "fusionlab")
    section = spec["spec"]["section"]
    names = [s["name"] for s in section["panelBankConfig"]["sections"]]
    assert names == ["Overview: key metrics per pipeline run", "Losses per stage", "Metrics tables", "Images", "Lineage"]
    assert section["runSets"][0]["grouping"] == [{"section": "run", "name": "group"}]
    keys = _spec_keys(spec)
    catalogue = dashboard.all_keys()
    shown = {k for k in keys if ":" not in k}
    assert catalogue["history"] | catalogue["summary"] | {k for k in catalogue["media"] if k != "captions/samples"} == shown
    assert {f"const:{a}" for a, _ in dashboard.LINEAGE} <= keys
    assert "const:captions/samples" in keys  # the captions table panel


def test_report_builds_offline_one_grid_per_stage(dashboard, no_network):
    report = dashboard.report_spec(dashboard.build_report("someone", "fusionlab", group="demo-20261125-120000"))
    grids = [b for b in report["spec"]["blocks"] if b["type"] == "panel-grid"]
    job_types = []
    for grid in grids:
        runset = grid["metadata"]["runSets"][0]
        assert runset["project"] == {"entityName": "someone", "name": "fusionlab"}
        leaves = {f["key"]["name"]: f["value"] for f in runset["filters"]["filters"]}
        assert leaves["group"] == "demo-20261125-120000"
        job_types.append(leaves.get("jobType"))
        assert [g["name"] for g in runset["grouping"]] == (["group"] if "jobType" in leaves else ["jobType"])
    assert job_types == ["depth", "denoiser", "captions", "fusion", "detect", "detect", None]
    keys = _spec_keys(report)
    catalogue = dashboard.all_keys()
    assert catalogue["history"] | catalogue["summary"] <= keys
    assert {k for k in catalogue["media"] if k != "captions/samples"} <= keys


def test_committed_json_is_current(dashboard, tmp_path, no_network):
    """docs/wandb/*.json are what `dashboard.py --export` writes now (regenerate them after a change)."""
    dashboard.export(tmp_path, "your-entity", "fusionlab")
    for name in ("workspace.json", "report.json"):
        committed = json.loads((DASHBOARD.parent / name).read_text())
        assert committed == json.loads((tmp_path / name).read_text()), (
            f"docs/wandb/{name} is stale: run `python docs/wandb/dashboard.py --export`")


# --------------------------------------------------------------------------- against a real W&B run (slow)


def _wandb_log_keys(run_dir: Path, timeout: float = 60.0) -> set[str]:
    """Top-level history keys of a finished offline run (its `run-*.wandb` log, leveldb-log framing).

    `run.finish()` returns before W&B's service process has written everything, so this waits for
    the run's exit record.
    """
    import time

    deadline = time.monotonic() + timeout
    while True:
        keys, finished = _read_wandb_log(next(run_dir.glob("run-*.wandb")))
        if finished or time.monotonic() > deadline:
            return keys
        time.sleep(0.5)


def _read_wandb_log(path: Path) -> tuple[set[str], bool]:
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, keys, buf, finished = path.read_bytes(), 7, 32768, set(), b"", False
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if pos + 7 + length > len(data):  # still being written
            break
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            kind_of = record.WhichOneof("record_type")
            if kind_of == "history":
                keys |= {item.key or item.nested_key[0] for item in record.history.item}
            finished |= kind_of == "exit"
    return keys, finished


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["depth", "denoiser"])
def test_dashboard_keys_appear_in_a_real_offline_run(dashboard, stage, tmp_path, monkeypatch):
    """Run the real stage with W&B offline and read back what reached W&B."""
    from fusionlab.data.synth import generate
    from fusionlab.stages import base

    monkeypatch.setenv("WANDB_MODE", "offline")
    data = generate(tmp_path / "ds", n=8, seed=0, size=(64, 48))
    trainer = {"max_epochs": 1, "enable_progress_bar": False, "log_every_n_steps": 1, "accelerator": "cpu", "devices": 1}
    raw = {
        "depth": {"model": {"base_channels": 4, "levels": 2}, "train": {"panel_images": 2}},
        "denoiser": {"model": {"block_out_channels": [8, 16], "norm_num_groups": 4, "sample_size": 16},
                     "schedule": {"num_train_timesteps": 50}, "data": {"crop_size": 16},
                     "train": {"samples": 2, "sample_size": [16, 16], "sample_steps": 2, "val_crop": 16}},
    }[stage]
    module = base.load_stage_module(stage)
    cfg = module.Config.model_validate({**raw, "stage": stage, "trainer": trainer,
                                        "data": {"root": str(data), "batch_size": 4, "val_fraction": 0.25,
                                                 **raw.get("data", {})}})
    ctx = base.StageContext(name=stage, out_dir=tmp_path / stage, outputs=module.OUTPUTS, group="g",
                            wandb=base.WandbSettings(mode="offline"))
    module.run(cfg, ctx)
    ctx.wandb_run().finish()
    (run_dir,) = (tmp_path / stage / "wandb").glob("offline-run-*")
    logged = _wandb_log_keys(run_dir)
    shown = {k for _, keys in dashboard.CURVES.get(stage, []) + dashboard.IMAGES.get(stage, []) for k in keys}
    assert shown and shown <= logged, f"not logged by a real {stage} run: {sorted(shown - logged)}; logged: {sorted(logged)}"
    assert dashboard.X_AXIS in logged
