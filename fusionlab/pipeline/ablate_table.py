"""The results of `fusionlab ablate`: mean ± 95 % interval per point, paired differences against the
first point, as ablation.{md,html,csv,json} and a plot (ablation.png) in the ablation folder.

Intervals are Student-t over seeds (`fusionlab.metrics.intervals`); a difference is computed per
seed (same seed, same eval split) and then summarised, so noise the two points share cancels.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from fusionlab.metrics.intervals import LEVEL, excludes_zero, format_interval, mean_interval, paired_difference

PLOT_METRICS = 16  # the plot shows the first this many metrics; the tables show all


def summarize(ablation, results) -> dict:
    """{"metrics": [...], "values": {metric: {point: {seed: v}}}, "stats": ..., "diffs": ...}."""
    metrics: list[str] = []
    values: dict[str, dict[int, dict[int, float]]] = {}
    for r in results:
        for key, v in r.values.items():
            if key not in values:
                metrics.append(key)
                values[key] = {}
            values[key].setdefault(r.job.point.index, {})[r.job.seed] = v
    stats = {m: {p.index: mean_interval(values[m].get(p.index, {}).values()) for p in ablation.points}
             for m in metrics}
    diffs = {m: {p.index: paired_difference(values[m].get(p.index, {}), values[m].get(0, {}))
                 for p in ablation.points[1:]} for m in metrics}
    return {"metrics": metrics, "values": values, "stats": stats, "diffs": diffs}


def point_rows(ablation, results) -> list[list[str]]:
    rows = [["point", "settings", "seeds finished"]]
    for p in ablation.points:
        ok = sum(r.status == "ok" for r in results if r.job.point.index == p.index)
        rows.append([f"p{p.index}", p.label, f"{ok}/{ablation.seeds}"])
    return rows


def metric_rows(ablation, summary) -> list[list[str]]:
    head = ["metric", *(f"p{p.index}" for p in ablation.points), *(f"Δ p{p.index} − p0" for p in ablation.points[1:])]
    rows = [head]
    for m in summary["metrics"]:
        cells = [m, *(format_interval(summary["stats"][m][p.index]) for p in ablation.points)]
        for p in ablation.points[1:]:
            d = summary["diffs"][m][p.index]
            text = format_interval(d)
            cells.append(f"**{text}**" if excludes_zero(d) else text)
        rows.append(cells)
    return rows


def job_rows(ablation, results) -> list[list[str]]:
    rows = [["job", "point", "seed", "status", "reused (linked) stages", "run dir"]]
    for r in results:
        status = r.status if not r.error else f"{r.status}: {r.error.splitlines()[0][:120]}"
        rows.append([r.job.name, f"p{r.job.point.index}", f"+{r.job.seed}", status,
                     ", ".join(r.linked) or "–", str(r.job.run_dir.relative_to(ablation.out_dir))])
    return rows


def notes(ablation, command: str) -> list[str]:
    pct = f"{LEVEL:.0%}"
    upstream = [n for n in ablation.selected if n not in ablation.measured]
    lines = [
        f"Command: `{command}`",
        f"Cells: mean ± half-width of the {pct} Student-t interval over the seeds (one seed: the value alone). "
        f"Δ: the difference to p0 of the same seed, summarised the same way; **bold**: its interval excludes 0.",
        f"Seeds: {ablation.seeds}; seed +k is added to the `seed` of {', '.join(ablation.seed_stages)}. The train/eval "
        "split (`data.seed`) is the same in every job.",
    ]
    if upstream:
        lines.append(f"Ran once and reused by every job (same key): {', '.join(upstream)}; their metrics are the same "
                     "everywhere and are not listed.")
    sized = getattr(ablation.jobs[0].pipeline, "cpu_sized", None) if ablation.jobs else None
    if sized:
        lines.append("CPU-sized settings a paper would not use: " + "; ".join(sized) + ".")
    return lines


def to_csv(ablation, summary) -> str:
    from fusionlab.tables import csv_text

    rows = []
    for m in summary["metrics"]:
        for p in ablation.points:
            s = summary["stats"][m][p.index]
            d = summary["diffs"][m].get(p.index)
            diff = [d["n"], d["mean"], d["low"], d["high"]] if d else ["", "", "", ""]
            rows.append([m, f"p{p.index}", p.label, s["n"], s["mean"], s["sd"], s["low"], s["high"], *diff])
    return csv_text(["metric", "point", "settings", "n", "mean", "sd", "ci_low", "ci_high",
                     "diff_n", "diff_mean", "diff_ci_low", "diff_ci_high"], rows)


def _finite(x):
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def to_json(ablation, results, summary, command: str) -> dict:
    def clean(stats: dict) -> dict:
        return {k: _finite(v) for k, v in stats.items()}

    return {
        "name": ablation.name,
        "pipeline": ablation.pipeline_file,
        "command": command,
        "grid": {a.key: a.values for a in ablation.axes},
        "fixed_overrides": ablation.fixed,
        "seeds": ablation.seeds,
        "level": LEVEL,
        "stages": ablation.selected,
        "varied_stages": ablation.varied,
        "seed_stages": ablation.seed_stages,
        "points": [{"point": f"p{p.index}", "settings": p.settings} for p in ablation.points],
        "jobs": [{"job": r.job.name, "point": f"p{r.job.point.index}", "seed": r.job.seed, "status": r.status,
                  "error": r.error, "run_dir": str(r.job.run_dir), "reused": {k: str(v) for k, v in r.linked.items()},
                  "values": {k: _finite(v) for k, v in r.values.items()}} for r in results],
        "metrics": {m: {f"p{i}": clean(s) for i, s in summary["stats"][m].items()} for m in summary["metrics"]},
        "differences": {m: {f"p{i}-p0": clean(s) for i, s in summary["diffs"][m].items()} for m in summary["metrics"]},
    }


def plot(ablation, summary, path: Path) -> Path | None:
    """Mean and interval per point (error bars) with every seed's value (dots), one panel per metric."""
    metrics = summary["metrics"][:PLOT_METRICS]
    if not metrics:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), dpi=90, squeeze=False)
    xs = list(range(len(ablation.points)))
    for ax, m in zip(axes.flat, metrics, strict=False):
        for x, p in zip(xs, ablation.points, strict=True):
            seeds = list(summary["values"][m].get(p.index, {}).values())
            ax.plot([x] * len(seeds), seeds, ".", color="#999", ms=4)
            s = summary["stats"][m][p.index]
            if s["n"]:
                err = s["half"] if math.isfinite(s["half"]) else 0.0
                ax.errorbar([x], [s["mean"]], yerr=[err], fmt="o", color="#1f5fa8", capsize=4, ms=5)
        ax.set_title(m, fontsize=8)
        ax.set_xticks(xs, [f"p{p.index}" for p in ablation.points], fontsize=7)
        ax.set_xlim(-0.5, len(xs) - 0.5)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle(f"ablation {ablation.name}: mean ± {LEVEL:.0%} interval over {ablation.seeds} seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(ablation, results, command: str) -> dict[str, Path]:
    """Write ablation.{json,csv,md,html,png} atomically into the ablation folder; returns their paths."""
    from fusionlab.artifacts import atomic_write_json, atomic_write_text
    from fusionlab.report import render_documents, section

    out = ablation.out_dir
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(ablation, results)
    paths = {"json": atomic_write_json(out / "ablation.json", to_json(ablation, results, summary, command)),
             "csv": atomic_write_text(out / "ablation.csv", to_csv(ablation, summary))}
    if plot(ablation, summary, out / ".ablation.tmp.png") is not None:
        paths["png"] = (out / ".ablation.tmp.png").replace(out / "ablation.png")
    metrics = metric_rows(ablation, summary)
    md, page = render_documents(
        f"fusionlab ablate: {ablation.name}",
        f"Pipeline `{ablation.pipeline_file}`, {len(ablation.points)} point(s) × {ablation.seeds} seed(s). "
        "Every number comes from the jobs' stage manifests.",
        [section("Points", point_rows(ablation, results)),
         section("Metrics", metrics if len(metrics) > 1 else None, notes(ablation, command),
                 "ablation.png" if "png" in paths else None),
         section("Jobs", job_rows(ablation, results))],
    )
    paths["md"] = atomic_write_text(out / "ablation.md", md)
    paths["html"] = atomic_write_text(out / "ablation.html", page)
    return paths


def read_ablations(run_dir: Path) -> list[dict]:
    """The ablations recorded under `<run_dir>/ablations/*/ablation.json` (for the run's report)."""
    found = []
    for path in sorted(Path(run_dir).glob("ablations/*/ablation.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        data["_dir"] = path.parent
        found.append(data)
    return found
