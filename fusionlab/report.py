"""The run report: `<run_dir>/report/index.html` and `report.md`, built from the run's manifests.

Every number shown comes from a stage's `manifest.json` (or a file that manifest lists), never
from constants, so the report always describes this run. Images sit beside the report (PNG),
and the HTML needs no network: no scripts, no external styles or fonts.
"""

from __future__ import annotations

import csv
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from fusionlab.artifacts import atomic_dir
from fusionlab.errors import PipelineError
from fusionlab.pipeline.manifest import read_manifest

REPORT_DIR = "report"
FUSION_KEYS = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "CC", "PSNR", "Nabf")
LOWER_IS_BETTER = {"Nabf", "MSE"}
DETECTION_SETS = ("ir", "vis", "fused", "bilevel")  # stage 5's protocol: one fresh detector per image set


@dataclass
class StageInfo:
    name: str
    status: str
    manifest: dict | None
    out_dir: Path
    deps: list[str] = field(default_factory=list)

    @property
    def metrics(self) -> dict:
        return (self.manifest or {}).get("metrics", {})


# --------------------------------------------------------------------------- collecting


def collect_stages(run_dir: Path) -> list[StageInfo]:
    """Stages in pipeline order (from the last run's summary, else by start time)."""
    summary = run_dir / ".fusionlab" / "summary.json"
    order: list[tuple[str, str]] = []
    if summary.is_file():
        order = [(row["stage"], row["status"]) for row in json.loads(summary.read_text())]
    known = {name for name, _ in order}
    extra = sorted(
        (p.parent for p in run_dir.glob("*/manifest.json") if p.parent.name not in known),
        key=lambda d: (read_manifest(d) or {}).get("started_at", ""),
    )
    order += [(d.name, "ran") for d in extra]
    stages = []
    for name, status in order:
        man = read_manifest(run_dir / name)
        deps = list((man or {}).get("upstream", {}))
        if man is None:
            ctx_file = run_dir / name / ".fusionlab" / "context.json"
            if ctx_file.is_file():
                deps = list(json.loads(ctx_file.read_text()).get("upstream", {}))
        stages.append(StageInfo(name, status if man or status == "FAILED" else "not run", man, run_dir / name, deps))
    return stages


def _scalar_metrics(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# --------------------------------------------------------------------------- tables


def stage_table(stages: list[StageInfo]) -> list[list[str]]:
    rows = [["stage", "type", "status", "wall time", "devices", "precision", "key metrics"]]
    for s in stages:
        man = s.manifest or {}
        dev = man.get("devices", {})
        headline = man.get("headline") or list(_scalar_metrics(s.metrics))[:3]
        shown = ", ".join(f"{k}={_fmt(s.metrics[k])}" for k in headline if k in s.metrics)
        rows.append([
            s.name, man.get("type", "–"), s.status,
            f"{man['wall_time_s']:.1f} s" if "wall_time_s" in man else "–",
            f"{dev.get('world_size', '–')}× {dev.get('accelerator', '')}".strip() if dev else "–",
            str(man.get("precision", "–")), shown or "–",
        ])
    return rows


def fusion_table(stages: list[StageInfo]) -> list[list[str]] | None:
    """Fused images against simple references and other fusion stages (e.g. the baseline preset)."""
    rows: list[tuple[str, dict]] = []
    refs: dict[str, dict] = {}
    for s in stages:
        evals = {k[len("eval/"):]: v for k, v in _scalar_metrics(s.metrics).items() if k.startswith("eval/")}
        if not evals:
            continue
        preset = (s.manifest or {}).get("config", {}).get("preset", "")
        rows.append((f"{s.name} ({preset})" if preset else s.name, evals))
        for key, value in _scalar_metrics(s.metrics).items():
            if key.startswith("ref/"):
                _, ref, metric = key.split("/", 2)
                if metric in FUSION_KEYS:  # ref/<ref>/retention/... belongs to retention_table
                    refs.setdefault(ref, {})[metric] = value
    if not rows:
        return None
    rows += [(f"reference: {name}", values) for name, values in refs.items()]
    keys = [k for k in FUSION_KEYS if any(k in values for _, values in rows)]
    best = {}
    for k in keys:
        present = [values[k] for _, values in rows if k in values]
        best[k] = min(present) if k in LOWER_IS_BETTER else max(present)
    table = [["method", *[f"{k} {'↓' if k in LOWER_IS_BETTER else '↑'}" for k in keys]]]
    for name, values in rows:
        table.append([name, *[(("**" + _fmt(values[k]) + "**") if values.get(k) == best[k] else _fmt(values.get(k)))
                              if k in values else "–" for k in keys]])
    return table


DEPTH_INPUTS = {"ir": ("IR", "IR"), "fused-ir-net": ("IR", "fused"), "vis": ("VIS", "VIS"),
                "fused-vis-net": ("VIS", "fused")}  # stage 4's depth/<input>/<metric>: (net, image)


def depth_table(stages: list[StageInfo]) -> list[list[str]] | None:
    """Depth error of the frozen IR and VIS depth nets on their own source and on each fused image
    (lower is better for AbsRel and RMSE): does the fused image carry the depth cues (LDNF's claim)?"""
    values: dict[tuple, dict[str, float]] = {}  # (net, image, stage) -> metrics
    for s in stages:
        for key, value in _scalar_metrics(s.metrics).items():
            if key.startswith("depth/"):
                _, source, metric = (key.split("/", 2) + [""])[:3]
                if metric:
                    net, image = DEPTH_INPUTS.get(source, (source, source))
                    where = s.name if image == "fused" else ""  # a source image is the same for every stage
                    values.setdefault((net, image, where), {}).setdefault(metric, value)
    if not values:
        depth = next((s for s in stages if (s.manifest or {}).get("type") == "depth"), None)
        if depth is None:
            return None
        for net in ("ir", "vis"):
            m = {k.split("/", 1)[1]: v for k, v in _scalar_metrics(depth.metrics).items() if k.startswith(f"{net}/val_")}
            if m:
                values[(net.upper(), net.upper(), "stage depth")] = m
    order = {"IR": 0, "VIS": 1}
    keys = sorted(values, key=lambda k: (order.get(k[0], 2), k[1] == "fused", k[2]))
    metrics = sorted({m for v in values.values() for m in v})
    rows = [["depth net", "on image", *metrics]]
    for net, image, where in keys:
        label = f"{image} ({where})" if where else image
        rows.append([f"{net} net", label, *[_fmt(values[(net, image, where)].get(m)) for m in metrics]])
    return rows


def detection_table(stages: list[StageInfo]) -> list[list[str]] | None:
    for s in stages:
        if (s.manifest or {}).get("type") != "detect":
            continue
        per_set: dict[str, dict[str, float]] = {}
        for key, value in _scalar_metrics(s.metrics).items():
            metric, _, image_set = key.partition("/")  # e.g. map50/ir, precision/bilevel
            if metric in ("map50", "map50_95", "precision", "recall") and image_set in DETECTION_SETS:
                per_set.setdefault(image_set, {})[metric] = value
        if not per_set:
            return None
        metrics = [m for m in ("map50", "map50_95", "precision", "recall") if any(m in v for v in per_set.values())]
        return [["image set", *metrics], *[[name, *[_fmt(per_set[name].get(m)) for m in metrics]]
                                           for name in DETECTION_SETS if name in per_set]]
    return None


# --------------------------------------------------------------------------- evidence: what fusion keeps
# Keys read (any may be absent; a table is left out when none of its keys are there):
#   stage 4 / `fusionlab eval`:  retention/<group>/{mean,kept,n}            (the fused net)
#                                ref/<ir|vis|mean|max>/retention/<group>/... (the simple references)
#   stage 5 / detect-eval:       recall_split/<set>/<group>                  (recall at IoU 0.5, conf 0.25)
#                                recall_split/<set>/<group>/seeds, map50/<set>/seeds  (per-seed lists, optional)
#                                recall_split/n/<group>                      (objects per group)
#   the pipeline YAML:           cpu_sized: [...]                            (settings a paper would not use)
# with <group> in all | ir_only | vis_only | both (fusionlab.metrics.visibility.GROUPS).

RETENTION_GROUPS = (("ir_only", "IR-only"), ("vis_only", "VIS-only"), ("both", "both"), ("all", "all"))


def _no_reference_keys() -> list[str]:
    """EN, SD, SF, AG: the fusion metrics that need no source image, in table order."""
    from fusionlab.metrics.functional import NO_REFERENCE

    return [k for k in FUSION_KEYS if k in NO_REFERENCE]


def retention_table(stages: list[StageInfo]) -> list[list[str]] | None:
    """Per object: the share of the seeing modality's contrast kept (mean, kept ≥ 0.5), by visibility,
    beside the no-reference metrics, for each fused net and the IR / VIS / mean / max references."""
    rows: list[tuple[str, dict[str, float], dict[str, float]]] = []  # (name, retention, no-reference)
    refs: dict[str, tuple[dict, dict]] = {}
    no_ref = _no_reference_keys()
    for s in stages:
        scalars = _scalar_metrics(s.metrics)
        kept = {k[len("retention/"):]: v for k, v in scalars.items() if k.startswith("retention/")}
        if not kept:
            continue
        preset = (s.manifest or {}).get("config", {}).get("preset", "")
        nr = {k: scalars[f"eval/{k}"] for k in no_ref if f"eval/{k}" in scalars}
        rows.append((f"{s.name} ({preset})" if preset else s.name, kept, nr))
        for key, value in scalars.items():
            parts = key.split("/", 2)
            if parts[0] == "ref" and len(parts) == 3:
                ret, nr_ref = refs.setdefault(parts[1], ({}, {}))
                if parts[2].startswith("retention/"):
                    ret[parts[2][len("retention/"):]] = value
                elif parts[2] in no_ref:
                    nr_ref[parts[2]] = value
    if not rows:
        return None
    rows += [(f"reference: {name}", ret, nr) for name, (ret, nr) in refs.items() if ret]
    groups = [(g, label) for g, label in RETENTION_GROUPS if any(f"{g}/mean" in r for _, r, _ in rows)]
    nr_keys = [k for k in no_ref if any(k in nr for _, _, nr in rows)]
    head = ["method", *nr_keys]
    for _, label in groups:
        head += [f"{label} kept", f"{label} mean"]
    table = [head]
    for name, ret, nr in rows:
        cells = [name, *[_fmt(nr.get(k)) for k in nr_keys]]
        for g, _ in groups:
            cells += [_fmt(ret.get(f"{g}/kept")), _fmt(ret.get(f"{g}/mean"))]
        table.append(cells)
    return table


def retention_note(stages: list[StageInfo]) -> str:
    counts = {}
    for s in stages:
        for g, label in RETENTION_GROUPS:
            n = s.metrics.get(f"retention/{g}/n")
            if isinstance(n, (int, float)) and label not in counts:
                counts[label] = int(n)
    what = ", ".join(f"{label} {n}" for label, n in counts.items())
    return ("Object contrast retention (docs/metrics.md): per object, its contrast to its surround in the fused image "
            "over that in the modality that sees it; kept = share of objects with retention ≥ 0.5, mean capped at 2. "
            "EN, SD, SF, AG need no reference image." + (f" Objects scored: {what}." if what else ""))


def _spread(metrics: dict, key: str, seeds_key: str | None = None) -> str:
    """`value`, or `mean ± 95 % interval (n seeds)` when the manifest lists per-seed values."""
    from fusionlab.metrics.intervals import format_interval, mean_interval

    seeds = metrics.get(seeds_key or f"{key}/seeds")
    if isinstance(seeds, list) and seeds:
        stats = mean_interval(v for v in seeds if isinstance(v, (int, float)))
        return f"{format_interval(stats, 3)} ({stats['n']} seeds)"
    return _fmt(metrics.get(key)) if isinstance(metrics.get(key), (int, float)) else "–"


def visibility_detection_table(stages: list[StageInfo]) -> list[list[str]] | None:
    """Recall of each image set's detector on the objects only IR sees, only VIS sees, and both see."""
    for s in stages:
        m = s.metrics
        sets = [name for name in DETECTION_SETS if any(k.startswith(f"recall_split/{name}/") for k in m)]
        if not sets:
            continue
        groups = [(g, label) for g, label in RETENTION_GROUPS if any(f"recall_split/{n}/{g}" in m for n in sets)]
        table = [["image set", "mAP@0.5", *[f"recall {label}" for _, label in groups]]]
        for name in sets:
            table.append([name, _spread(m, f"map50/{name}", f"map50_seeds/{name}"),
                          *[_spread(m, f"recall_split/{name}/{g}") for g, _ in groups]])
        return table
    return None


def visibility_detection_note(stages: list[StageInfo]) -> str:
    counts = next(({label: int(s.metrics[f"recall_split/n/{g}"]) for g, label in RETENTION_GROUPS
                    if isinstance(s.metrics.get(f"recall_split/n/{g}"), (int, float))}
                   for s in stages if any(k.startswith("recall_split/n/") for k in s.metrics)), {})
    what = ", ".join(f"{label} {n}" for label, n in counts.items())
    return ("Share of the eval split's objects each detector finds (IoU ≥ 0.5, same class, confidence ≥ 0.25), "
            "by which modality sees them; ± is the 95 % interval over the stage's seeds."
            + (f" Objects: {what}." if what else ""))


def cpu_sized_line(run_dir: Path, stages: list[StageInfo]) -> str | None:
    """The one line naming the CPU-sized settings, when the pipeline YAML lists them (`cpu_sized:`)."""
    import yaml

    for s in stages:
        ctx = s.out_dir / ".fusionlab" / "context.json"
        try:
            pipeline = Path(json.loads(ctx.read_text())["pipeline"])
            items = (yaml.safe_load(pipeline.read_text()) or {}).get("cpu_sized")
        except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
            continue
        if isinstance(items, list) and items:
            return "CPU-sized settings a paper would not use: " + "; ".join(str(i) for i in items) + "."
    return None


def ablation_links(run_dir: Path) -> tuple[list[list[str]], list[str]] | None:
    """One row per `fusionlab ablate` of this run dir, linking its tables (`ablations/<name>/`)."""
    from fusionlab.pipeline.ablate_table import read_ablations

    found = read_ablations(run_dir)
    if not found:
        return None
    rows = [["ablation", "grid", "seeds", "jobs ok", "tables"]]
    for a in found:
        rel = Path("..") / a["_dir"].relative_to(run_dir)
        jobs = a.get("jobs", [])
        grid = "; ".join(f"{k}={','.join(map(str, v))}" for k, v in a.get("grid", {}).items())
        rows.append([a.get("name", a["_dir"].name), grid or "–", str(a.get("seeds", "–")),
                     f"{sum(j.get('status') == 'ok' for j in jobs)}/{len(jobs)}",
                     f"{rel / 'ablation.html'}, {rel / 'ablation.md'}"])
    return rows, [a.get("command", "") for a in found]


# --------------------------------------------------------------------------- pictures


def pipeline_svg(stages: list[StageInfo]) -> str:
    """The pipeline as boxes and arrows, coloured by status, with time and one key metric."""
    colours = {"ran": "#d8f0d8", "skipped": "#e4ecf7", "kept": "#e4ecf7", "FAILED": "#f7d4d4", "not run": "#eeeeee"}
    w, h, gap, top = 150, 74, 40, 20
    pos = {s.name: (20 + i * (w + gap), top + (i % 2) * 46) for i, s in enumerate(stages)}
    width = 40 + len(stages) * (w + gap)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{top + h + 70}" '
             f'font-family="sans-serif" font-size="12" role="img" aria-label="pipeline diagram">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>']
    for s in stages:
        x2, y2 = pos[s.name]
        for dep in s.deps:
            if dep in pos:
                x1, y1 = pos[dep]
                parts.append(f'<line x1="{x1 + w}" y1="{y1 + h / 2}" x2="{x2}" y2="{y2 + h / 2}" '
                             'stroke="#555" stroke-width="1.2" marker-end="url(#arrow)"/>')
    for s in stages:
        x, y = pos[s.name]
        man = s.manifest or {}
        headline = [k for k in (man.get("headline") or []) if k in s.metrics][:1]
        metric = f"{headline[0].split('/')[-1]}={_fmt(s.metrics[headline[0]])}" if headline else ""
        wall = f"{man['wall_time_s']:.0f} s" if "wall_time_s" in man else ""
        parts += [
            f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="8" fill="{colours.get(s.status, "#eee")}" stroke="#444"/>',
            f'<text x="{x + 8}" y="{y + 18}" font-weight="bold">{html.escape(s.name)}</text>',
            f'<text x="{x + 8}" y="{y + 36}">{html.escape(s.status)} {html.escape(wall)}</text>',
            f'<text x="{x + 8}" y="{y + 54}">{html.escape(metric[:24])}</text>',
        ]
    parts.append("</svg>")
    return "\n".join(parts)


def loss_curves(stages: list[StageInfo], out: Path) -> list[str]:
    """One PNG per stage: every logged loss column of its CSV logs against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for s in stages:
        series: dict[str, tuple[list[float], list[float]]] = {}
        for path in sorted((s.out_dir / "logs").glob("*/metrics.csv")):
            phase = path.parent.name
            with open(path, newline="") as fh:
                for row in csv.DictReader(fh):
                    step = row.get("step")
                    for key, value in row.items():
                        if "loss" in key.lower() or "mse" in key.lower() or "absrel" in key.lower():
                            if value not in ("", None) and step not in ("", None):
                                name = key if phase == "main" else f"{phase}/{key}"
                                xs, ys = series.setdefault(name, ([], []))
                                xs.append(float(step))
                                ys.append(float(value))
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
        for name, (xs, ys) in sorted(series.items())[:8]:
            ax.plot(xs, ys, label=name, marker="." if len(xs) < 30 else None)
        ax.set_title(f"stage {s.name}")
        ax.set_xlabel("step")
        if all(min(ys) > 0 for _, ys in series.values()):
            ax.set_yscale("log")
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"curves_{s.name}.png"
        fig.savefig(out / name)
        plt.close(fig)
        written.append(name)
    return written


def image_grid(stages: list[StageInfo], out: Path, rows: int = 4) -> str | None:
    """IR | VIS | depth | caption | fused for a few eval images, as one PNG."""
    fusion = next((s for s in stages if (s.manifest or {}).get("type") == "fusion" and (s.out_dir / "fused").is_dir()), None)
    if fusion is None:
        return None
    fused = sorted((fusion.out_dir / "fused").glob("*.png"))[:rows]
    if not fused:
        return None
    from fusionlab.data.captions_file import read_captions
    from fusionlab.data.formats import scan
    from fusionlab.errors import DataError

    data = (fusion.manifest or {}).get("config", {}).get("data", {})
    root, split = (data.get("val_root"), data.get("val_split")) if data.get("val_root") else \
        (data.get("root", ""), data.get("split"))
    try:  # any supported layout (generic, LLVIP, M3FD, KAIST); paths only, nothing decoded
        records = {r.id: r for r in scan(root, data.get("format", "auto"), split).records}
    except DataError:
        records = {}  # the data moved since the run: the grid keeps the fused column
    captions = {}
    for s in stages:
        path = s.out_dir / "captions.jsonl"
        if path.is_file():
            captions.update(read_captions(path, on_bad=lambda _message: None))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fusionlab.data.io import read_depth, read_image, read_ir, read_vi

    def load(reader, stem: str, field: str):
        path = getattr(records.get(stem), field, None)
        if path is None:
            return None
        try:
            return reader(path) if reader is read_depth else reader(path)[0]
        except DataError:
            return None

    fig, axes = plt.subplots(len(fused), 5, figsize=(13, 2.3 * len(fused)), dpi=90, squeeze=False)
    for r, path in enumerate(fused):
        stem = path.stem
        panels = [("IR", load(read_ir, stem, "ir")), ("VIS", load(read_vi, stem, "vi")),
                  ("depth (m)", load(read_depth, stem, "depth")), ("caption", None), ("fused", read_image(path)[0])]
        for c, (title, img) in enumerate(panels):
            ax = axes[r][c]
            ax.axis("off")
            if r == 0:
                ax.set_title(title, fontsize=9)
            if title == "caption":
                import textwrap

                ax.text(0, 0.5, textwrap.fill(captions.get(stem, "(no caption)"), 38), fontsize=7, va="center")
            elif img is not None:
                ax.imshow(img.squeeze(), cmap="magma" if title.startswith("depth") else "gray")
        axes[r][0].text(-0.05, 0.5, stem, transform=axes[r][0].transAxes, rotation=90, va="center", ha="right", fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "grid.png")
    plt.close(fig)
    return "grid.png"


def weights_section(stages: list[StageInfo]) -> tuple[str, str, str] | None:
    """Which pretrained parts each stage used (manifest `pretrained`), led by the random-weights notice."""
    from fusionlab.provenance import random_notices

    rows = [["stage", "component", "key", "source", "weights sha256"]]
    for s in stages:
        for rec in (s.manifest or {}).get("pretrained", []):
            where = {"hub": f"{rec.get('hub_id')}@{rec.get('revision') or 'unknown revision'}",
                     "url": rec.get("url"), "local": rec.get("path"), "upstream": rec.get("path")
                     }.get(rec.get("source"), rec.get("source"))
            source = "**random-init**" if rec.get("random") else str(where)
            rows.append([s.name, rec.get("component", "?"), rec.get("key", "?"), source,
                         (rec.get("weights_sha256") or "–")[:16]])
    if len(rows) == 1:
        return None
    notices = random_notices({s.name: s.manifest for s in stages})
    lead = ("**Random weights.** These numbers test the mechanism, not the papers' pretrained components:"
            if notices else "Every pretrained part ran on pretrained weights.")
    md = "\n".join([lead, "", *(f"- {n}" for n in notices), "", _md_table(rows)])
    body = (f'<div class="warn"><p><b>{html.escape(lead.replace("**", ""))}</b></p><ul>'
            + "".join(f"<li>{html.escape(n)}</li>" for n in notices) + "</ul></div>" if notices
            else f"<p>{html.escape(lead)}</p>") + _html_table(rows)
    return "Pretrained parts", md, body


# --------------------------------------------------------------------------- rendering


def _md_table(rows: list[list[str]]) -> str:  # the report's tables are lists of rows, header first
    from fusionlab.tables import markdown_table

    return markdown_table(rows[0], rows[1:])


def _html_table(rows: list[list[str]]) -> str:
    from fusionlab.tables import html_table

    return html_table(rows[0], rows[1:])


def section(title: str, rows: list[list[str]] | None = None, notes: list[str] | tuple = (),
            image: str | None = None) -> tuple[str, str, str]:
    """(title, markdown, html) of a report section: note lines, an optional table and image."""
    md = [*notes, *([_md_table(rows)] if rows else []), *([f"![{title}]({image})"] if image else [])]
    page = "".join(f'<p class="note">{_inline_html(n)}</p>' for n in notes)
    page += (_html_table(rows) if rows else "") + (f'<img src="{image}" alt="{html.escape(title)}">' if image else "")
    return title, "\n\n".join(md), page


def _inline_html(text: str) -> str:
    """Escape, then render the only Markdown the notes use: `code` and **bold**."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def render_documents(title: str, intro: str, sections: list[tuple[str, str, str]]) -> tuple[str, str]:
    """Markdown and self-contained HTML (no scripts, styles inline, no network) of titled sections."""
    md = [f"# {title}", "", intro, ""]
    body = [f"<h1>{html.escape(title)}</h1><p class=\"note\">{_inline_html(intro)}</p>"]
    for name, md_text, html_text in sections:
        md += [f"## {name}", "", md_text, ""]
        body.append(f"<h2>{html.escape(name)}</h2>{html_text}")
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
    return "\n".join(md), page


STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.6em 0 1.4em}th,td{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}
th{background:#f3f3f3}img{max-width:100%}h2{border-bottom:1px solid #ddd;padding-bottom:3px}
.note{color:#666;font-size:12px}details{margin:0.3em 0}
.warn{border:2px solid #c60;background:#fff4e6;padding:0.2em 1em;margin:1em 0}"""


def build_report(run_dir: str | Path) -> Path:
    """Write `<run_dir>/report/index.html` and `<run_dir>/report/report.md`; returns the HTML path."""
    run_dir = Path(run_dir).resolve()
    stages = collect_stages(run_dir)
    if not stages:
        raise PipelineError(f"'{run_dir}' holds no stage manifests: run a pipeline into it first (`fusionlab run PIPELINE`)")
    with atomic_dir(run_dir / REPORT_DIR) as tmp:
        out = Path(tmp)
        sections: list[tuple[str, str, str]] = []  # (title, markdown, html)
        (out / "pipeline.svg").write_text(pipeline_svg(stages))
        table = stage_table(stages)
        sections.append(("Pipeline", "![pipeline](pipeline.svg)\n\n" + _md_table(table),
                         '<img src="pipeline.svg" alt="pipeline diagram">' + _html_table(table)))
        cpu_line = cpu_sized_line(run_dir, stages)
        if cpu_line:
            sections.append(("Demo settings", cpu_line, f'<p class="note">{html.escape(cpu_line)}</p>'))
        weights = weights_section(stages)
        if weights:
            sections.append(weights)
        for title, note, rows in (
            ("Fusion quality", "Mean over the eval split; best per metric in bold (↓: lower is better).", fusion_table(stages)),
            ("What fusion keeps, per object", retention_note(stages), retention_table(stages)),
            ("Depth on fused vs source images", "Depth error of the frozen stage-1 nets on their own source and on "
             "each fusion stage's fused eval images (AbsRel, RMSE: lower is better; δ1: higher).", depth_table(stages)),
            ("Detection", "Detectors trained on identical splits and seeds, one per image set.", detection_table(stages)),
            ("Detection by visibility", visibility_detection_note(stages), visibility_detection_table(stages)),
        ):
            if rows:
                sections.append(section(title, rows, [note]))
        ablations = ablation_links(run_dir)
        if ablations:
            rows, commands = ablations
            sections.append(section("Ablations", rows, ["Mean ± 95 % interval over seeds and paired differences; "
                                                        "made by:", *(f"`{c}`" for c in commands if c)]))
        grid = image_grid(stages, out)
        if grid:
            sections.append(("Images", f"![IR, VIS, depth, caption, fused]({grid})",
                             f'<img src="{grid}" alt="IR | VIS | depth | caption | fused">'))
        curves = loss_curves(stages, out)
        if curves:
            sections.append(("Training curves", "\n".join(f"![{c}]({c})" for c in curves),
                             "".join(f'<img src="{c}" alt="{c}">' for c in curves)))
        details_md, details_html = [], []
        for s in stages:
            scalars = _scalar_metrics(s.metrics)
            if scalars:
                rows = [["metric", "value"], *[[k, _fmt(v)] for k, v in scalars.items()]]
                details_md.append(f"### {s.name}\n\n{_md_table(rows)}")
                details_html.append(f"<details><summary>{html.escape(s.name)}: {len(scalars)} metrics</summary>"
                                    f"{_html_table(rows)}</details>")
        sections.append(("All metrics (from the manifests)", "\n\n".join(details_md), "".join(details_html)))

        md, page = render_documents(f"fusionlab run: {run_dir.name}",
                                    f"Run dir: `{run_dir}`. Every number comes from the stages' manifest.json files.",
                                    sections)
        (out / "report.md").write_text(md)
        (out / "index.html").write_text(page)
    return run_dir / REPORT_DIR / "index.html"
