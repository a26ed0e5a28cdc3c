"""The fusionlab W&B dashboard: a project workspace and a report, defined in code.

Why code: W&B keeps workspaces and reports on its server. Defining them here keeps them
versioned next to the metric keys the stages log (tests/report/test_wandb_dashboard.py fails
when a stage renames one) and lets anyone recreate them for their own entity and project.

    python docs/wandb/dashboard.py --export                                # offline: workspace.json, report.json
    python docs/wandb/dashboard.py --entity E --project fusionlab --save   # creates both online, prints URLs
    python docs/wandb/dashboard.py --entity E --save --group demo-20261125-1310   # report of one pipeline run

How the keys come about (fusionlab/stages/base.py):
- one W&B run per stage, `job_type` = stage name, `group` = the pipeline run, so every panel
  here filters on the job type and groups by the W&B group: one line or bar per pipeline run;
- metrics a LightningModule logs with `self.log` go through `WandbLogger(prefix=<phase>)`, which
  joins with "-": phase `ir` of the depth stage logs `train_silog` as `ir-train_silog`
  (the phase `main` has no prefix); the x axis is `trainer/global_step`;
- images and tables are logged directly with `run.log` under the keys in IMAGES / TABLES;
- at the end each run's summary gets the stage's final metrics (the manifest's `metrics`) and
  `wall_time_s`; those summary keys fill the metric tables;
- outputs are W&B artifacts named `<stage>-<output>` (fusionlab/pipeline/stage_process.py), so
  the lineage panel of the last one shows the whole pipeline.

Building the objects needs no network. `--save` needs a W&B key (`wandb login`); the report's
run sets then look up the project's id on the server, which is why `--export` records them by
name instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
X_AXIS = "trainer/global_step"  # WandbLogger's step metric
STAGES = ("scenes", "depth", "denoiser", "captions", "fusion", "detect")  # job types (stages/pipeline.yaml)
FUSION_METRICS = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM")  # fusion stage `eval.metrics`
DETECTION_SETS = ("ir", "vis", "fused", "bilevel")  # rows of the stage-5 detection protocol
DETECT_MODE = "bilevel"  # stage 5's default `mode:`, also its Lightning phase name

# Training curves: stage -> [(panel title, [history keys])].
CURVES: dict[str, list[tuple[str, list[str]]]] = {
    "depth": [
        ("IR depth net: SiLog loss", ["ir-train_silog", "ir-val_silog"]),
        ("VIS depth net: SiLog loss", ["vis-train_silog", "vis-val_silog"]),
        ("AbsRel (val, lower is better)", ["ir-val_absrel", "vis-val_absrel"]),
        ("RMSE (val, metres)", ["ir-val_rmse", "vis-val_rmse"]),
        ("δ1 (val, higher is better)", ["ir-val_delta1", "vis-val_delta1"]),
    ],
    "denoiser": [
        ("DDPM ε-prediction MSE", ["train_eps_mse", "val_eps_mse"]),
    ],
    "fusion": [
        ("fusion loss", ["fusion-train/loss_step", "fusion-train/loss_epoch"]),
        ("ldnf loss terms (MCI, MCG, depth-driven)", ["fusion-train/mci", "fusion-train/mcg", "fusion-train/depth"]),
    ],
    "detect": [
        (f"{DETECT_MODE}: fusion (lower) and detection (upper) losses",
         [f"{DETECT_MODE}-train/loss_fusion", f"{DETECT_MODE}-train/loss_det"]),
        (f"{DETECT_MODE}: lower-level step and hypergradient norms",
         [f"{DETECT_MODE}-train/lower_shift", f"{DETECT_MODE}-train/hypergrad_norm"]),
    ],
}
# Loss terms of any preset (baseline, text2pixels, ldfusion, tgif log other term names).
FUSION_TERMS_REGEX = r"fusion-train/.*"

# Final metrics (run summary, from the manifest): stage -> [(panel title, [summary keys])].
TABLES_OF_METRICS: dict[str, list[tuple[str, list[str]]]] = {
    "depth": [
        ("depth on the val split (last epoch)",
         [f"{net}/{m}" for net in ("ir", "vis") for m in ("val_absrel_last", "val_rmse_last", "val_delta1_last")]),
    ],
    "denoiser": [("denoiser val ε-MSE: first vs last epoch", ["val_eps_mse_first", "val_eps_mse_last"])],
    "captions": [("captions and CLIP cache", ["captions", "depth_mention_rate", "mean_caption_tokens", "cache_hits"])],
    "fusion": [("fusion metrics of the eval split", [f"eval/{m}" for m in FUSION_METRICS])],
    "detect": [
        ("detection mAP@0.5: IR, VIS, fused, bilevel", [f"map50/{s}" for s in DETECTION_SETS]),
        ("detection mAP@0.5:0.95", [f"map50_95/{s}" for s in DETECTION_SETS]),
    ],
}
WALL_TIME = "wall_time_s"  # every stage run's summary

# Media logged with run.log: stage -> [(panel title, [keys])].
IMAGES: dict[str, list[tuple[str, list[str]]]] = {
    "depth": [("depth: input | prediction | ground truth | error", ["ir/val_panel", "vis/val_panel"])],
    "denoiser": [("denoiser samples: IR | RGB", ["samples"])],
    "fusion": [("fusion: IR | VIS | fused", ["eval/panels"])],
    "detect": [("detections on bilevel-fused val images", ["detect/boxes_on_fused"])],
}
TABLES: dict[str, list[tuple[str, str]]] = {"captions": [("captions with IR/VIS thumbnails", "captions/samples")]}

# Artifacts whose lineage shows the pipeline (`<stage>-<output>`).
LINEAGE = (("detect-detector", "lineage: scenes → depth, denoiser → captions → fusion → detect"),
           ("fusion-fusion", "lineage of the stage-4 fusion model"))


def _libs():
    """The wandb-workspaces modules (imported late: an optional dev dependency)."""
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError as exc:  # pragma: no cover - exercised by users without the package
        raise SystemExit(f"{exc}: install it with `.venv/bin/pip install wandb-workspaces==0.4.13`") from None
    return ws, wr


def all_keys() -> dict[str, set[str]]:
    """Every key the dashboard shows, by kind: history, summary, media."""
    history = {k for panels in CURVES.values() for _, keys in panels for k in keys}
    summary = {k for panels in TABLES_OF_METRICS.values() for _, keys in panels for k in keys} | {WALL_TIME}
    media = {k for panels in IMAGES.values() for _, keys in panels for k in keys}
    media |= {k for tables in TABLES.values() for _, k in tables}
    return {"history": history, "summary": summary, "media": media}


def _line(wr, title: str, keys: list[str], **kw):
    return wr.LinePlot(title=title, x=X_AXIS, y=list(keys), title_x="global step", **kw)


def _bars(wr, title: str, keys: list[str]):
    return wr.BarPlot(title=title, metrics=list(keys), orientation="v", groupby_aggfunc="mean")


def stage_panels(wr, stage: str) -> list:
    """Curves, metric bars, media and tables of one stage."""
    panels = [_line(wr, title, keys) for title, keys in CURVES.get(stage, [])]
    if stage == "fusion":
        panels.append(wr.LinePlot(title="loss terms of any preset", x=X_AXIS, metric_regex=FUSION_TERMS_REGEX))
    panels += [_bars(wr, title, keys) for title, keys in TABLES_OF_METRICS.get(stage, [])]
    panels += [wr.MediaBrowser(title=title, media_keys=list(keys), num_columns=1) for title, keys in IMAGES.get(stage, [])]
    panels += [wr.WeavePanelSummaryTable(table_name=key, layout=wr.Layout(w=24, h=12)) for _, key in TABLES.get(stage, [])]
    return panels


def build_workspace(entity: str, project: str = "fusionlab", name: str = "fusionlab pipeline"):
    """The project workspace: runs grouped by pipeline run, a section per concern and per stage."""
    ws, wr = _libs()
    sections = [
        ws.Section(name="Overview: key metrics per pipeline run", is_open=True, panels=[
            _bars(wr, "fusion metrics (stage 4)", [f"eval/{m}" for m in ("EN", "SD", "SF", "MI", "VIF", "Qabf", "SSIM")]),
            _bars(wr, "detection mAP@0.5: IR, VIS, fused, bilevel", [f"map50/{s}" for s in DETECTION_SETS]),
            _bars(wr, "depth AbsRel (last epoch)", ["ir/val_absrel_last", "vis/val_absrel_last"]),
            wr.RunComparer(diff_only="split"),
        ]),
        ws.Section(name="Losses per stage", is_open=True, panels=[
            _line(wr, f"{stage}: {title}", keys) for stage in STAGES for title, keys in CURVES.get(stage, [])
        ]),
        ws.Section(name="Metrics tables", is_open=True, panels=[
            _bars(wr, f"{stage}: {title}", keys) for stage in STAGES for title, keys in TABLES_OF_METRICS.get(stage, [])
        ] + [_bars(wr, "wall time per stage run (s)", [WALL_TIME])]),
        ws.Section(name="Images", is_open=True, panels=[
            wr.MediaBrowser(title=f"{stage}: {title}", media_keys=list(keys), num_columns=1)
            for stage in STAGES for title, keys in IMAGES.get(stage, [])
        ] + [wr.WeavePanelSummaryTable(table_name=key, layout=wr.Layout(w=24, h=12))
             for stage in STAGES for _, key in TABLES.get(stage, [])]),
        ws.Section(name="Lineage", is_open=False, panels=[
            wr.WeavePanelArtifact(artifact=art, tab="lineage", layout=wr.Layout(w=24, h=12)) for art, _ in LINEAGE
        ]),
    ]
    return ws.Workspace(
        entity=entity,
        project=project,
        name=name,
        sections=sections,
        settings=ws.WorkspaceSettings(x_axis=X_AXIS, max_runs=20, group_by_prefix="first"),
        runset_settings=ws.RunsetSettings(
            groupby=[ws.Metric("Group")],
            pinned_columns=["run:displayName", "run:jobType", "summary:wall_time_s",
                            *[f"summary:eval/{m}" for m in ("EN", "SD", "VIF", "Qabf", "SSIM")],
                            *[f"summary:map50/{s}" for s in DETECTION_SETS]],
        ),
    )


def _runset(wr, entity: str, project: str, stage: str, group: str | None):
    filters = f"JobType = '{stage}'" + (f" and Group = '{group}'" if group else "")
    return wr.Runset(entity=entity, project=project, name=f"{stage} runs", filters=filters, groupby=["group"])


def build_report(entity: str, project: str = "fusionlab", group: str | None = None):
    """A report: one panel grid per stage (its runs only, one line per pipeline run), then lineage."""
    _, wr = _libs()
    what = {
        "depth": "Stage 1 trains one depth estimator on IR and one on VIS (SiLog). Lower AbsRel/RMSE and higher δ1 are better.",
        "denoiser": "Stage 2 trains a DDPM on the 4-channel IR+RGB stack; stage 4 reads its decoder features.",
        "captions": "Stage 3 writes depth-informed captions and caches their CLIP embeddings.",
        "fusion": "Stage 4 trains the fusion network of the chosen preset (ldnf by default), fuses the eval split and scores it.",
        "detect": "Stage 5 refines the fusion net with a detector (bilevel), then trains fresh detectors on IR, VIS, fused and bilevel-fused images: their mAP@0.5 is the detection protocol.",
    }
    blocks: list = [
        wr.P("Every pipeline run is one W&B group; each stage is one run in it, with job type = stage name. "
             "Panels below show one stage's runs, one line or bar per pipeline run."),
        wr.TableOfContents(),
    ]
    for stage in STAGES[1:]:
        blocks += [wr.H2(f"{stage}"), wr.P(what[stage]),
                   wr.PanelGrid(runsets=[_runset(wr, entity, project, stage, group)], panels=stage_panels(wr, stage))]
    blocks += [
        wr.H2("lineage"),
        wr.P("Each stage logs its outputs as artifacts `<stage>-<output>` and uses its upstream outputs, so the "
             "lineage graph of the detector shows the whole pipeline."),
        wr.PanelGrid(runsets=[_runset(wr, entity, project, "detect", group)], panels=[
            wr.WeavePanelArtifact(artifact=art, tab="lineage", layout=wr.Layout(w=24, h=14)) for art, _ in LINEAGE
        ]),
        wr.H2("wall time"),
        wr.PanelGrid(runsets=[wr.Runset(entity=entity, project=project, name="all stage runs",
                                        filters=f"Group = '{group}'" if group else "", groupby=["jobType"])],
                     panels=[_bars(wr, "wall time per stage (s)", [WALL_TIME])]),
    ]
    title = "fusionlab pipeline" + (f": {group}" if group else "")
    return wr.Report(entity=entity, project=project, title=title, width="fluid",
                     description="Losses, metrics, images and lineage of the fusionlab stages.", blocks=blocks)


# --------------------------------------------------------------------------- export / save


def workspace_spec(workspace) -> dict:
    """The saved-view JSON that `--save` uploads (no network)."""
    view = workspace._to_model()
    return {"entity": view.entity, "project": view.project, "display_name": view.display_name,
            "spec": json.loads(view.spec.model_dump_json(by_alias=True, exclude_none=True))}


def report_spec(report) -> dict:
    """The report JSON that `--save` uploads, built offline.

    A run set normally records its project's internal id, which needs the API; here the run sets
    are serialised without it and then name their project, which is what a reader needs.
    """
    _, wr = _libs()
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    where = [(rs, rs.entity, rs.project) for grid in grids for rs in grid.runsets]
    try:
        for rs, _, _ in where:
            rs.entity, rs.project = "", ""
        model = report._to_model()
    finally:
        for rs, entity, project in where:
            rs.entity, rs.project = entity, project
    spec = json.loads(model.spec.model_dump_json(by_alias=True, exclude_none=True))
    names = {rs._id: (entity, project) for rs, entity, project in where}
    for block in spec["blocks"]:
        for rs in block.get("metadata", {}).get("runSets", []):
            if rs.get("id") in names:
                entity, project = names[rs["id"]]
                rs["project"] = {"entityName": entity, "name": project}
    return {"entity": report.entity, "project": report.project, "title": report.title,
            "description": report.description, "spec": spec}


def outline() -> dict:
    """A short, readable summary of what the dashboard shows (top of the exported JSON)."""
    return {
        "grouping": "W&B group = one pipeline run; job_type = stage name",
        "x_axis": X_AXIS,
        "curves": {s: dict(p) for s, p in CURVES.items()},
        "metric_tables": {s: dict(p) for s, p in TABLES_OF_METRICS.items()},
        "images": {s: dict(p) for s, p in IMAGES.items()},
        "tables": {s: {title: key for title, key in p} for s, p in TABLES.items()},
        "lineage_artifacts": [art for art, _ in LINEAGE],
    }


def stable_ids(spec: dict) -> dict:
    """Replace the random panel and run-set ids by numbered ones, so the files only change with the design."""
    ids: dict[str, str] = {}

    def collect(node):
        if isinstance(node, dict):
            for key in ("__id__", "id"):
                if isinstance(node.get(key), str) and node[key] and node[key] not in ids:
                    ids[node[key]] = f"fusionlab-{len(ids):03d}"
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    def rename(node):
        if isinstance(node, dict):
            return {ids.get(k, k): rename(v) for k, v in node.items()}
        if isinstance(node, list):
            return [rename(v) for v in node]
        return ids.get(node, node) if isinstance(node, str) else node

    collect(spec)
    return rename(spec)


def export(out_dir: Path, entity: str, project: str) -> list[Path]:
    """Write workspace.json and report.json (offline)."""
    workspace = stable_ids(workspace_spec(build_workspace(entity, project)))
    report = stable_ids(report_spec(build_report(entity, project)))
    from fusionlab.artifacts import atomic_write_text

    return [atomic_write_text(out_dir / name, json.dumps({"outline": outline(), **body}, indent=1, ensure_ascii=False) + "\n")
            for name, body in (("workspace.json", workspace), ("report.json", report))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entity", help="W&B entity (user or team); default for --save: your default entity")
    parser.add_argument("--project", default="fusionlab", help="W&B project (stages/pipeline.yaml: wandb.project)")
    parser.add_argument("--group", help="report only this pipeline run (its W&B group)")
    parser.add_argument("--save", action="store_true", help="create the workspace and the report on W&B (online)")
    parser.add_argument("--export", action="store_true", help="write workspace.json and report.json (offline)")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for --export (default: docs/wandb/)")
    args = parser.parse_args(argv)
    if not (args.save or args.export):
        parser.error("choose --export (offline JSON) and/or --save (create on W&B)")
    if args.export:
        for path in export(args.out, args.entity or "your-entity", args.project):
            print(f"wrote {path}")
    if args.save:
        entity = args.entity
        if entity is None:
            import wandb

            entity = wandb.Api().default_entity
        workspace = build_workspace(entity, args.project).save()
        report = build_report(entity, args.project, args.group).save()
        print(f"workspace: {workspace.url}\nreport: {report.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
