"""The one evaluator of fused images: stage 4 (its eval split) and `fusionlab eval` (folders).

Both hand batches of gray 8-bit images (IR, VIS, fused; `Scored`) to an `Evaluator`, which asks
each metric *family* for per-image values, keeps the rows, and accumulates mean/std per method
in torchmetrics state (`MetricStats`, which reduces across DDP ranks). `write_tables` writes the
same files for both: per_image.csv, summary.{md,csv,json} (mean ± std per method) and, for two or
more methods, comparison.{md,csv} (best value in bold).

Adding a metric family is a class with `name`, `columns`, `lower_is_better` and
`values(item: Scored) -> {column: [B] tensor}`, passed in the Evaluator's family list; it can
read whatever else the caller knows about the images from `item.extra` (e.g. the dataset
batch with masks or boxes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fusionlab.metrics.functional import LOWER_IS_BETTER, check_convention, check_metrics, fusion_metrics

CONVENTION_NOTE = {
    "cddfuse": "cddfuse: the Python evaluator most fusion papers use (MI in nats, SSIM = sum of two SSIMs "
    "with data_range=2, SSIM255 with data_range=255, AG mean)",
    "matlab": "matlab: the classic MATLAB scripts (MI in bits, SSIM = mean of two SSIMs with data_range=255, "
    "AG normalised by (r-1)(c-1))",
}


@dataclass
class Scored:
    """One batch to score: gray 0..255 float64 images [B,H,W] of the same size, and their ids."""

    ids: list[str]
    ir: torch.Tensor
    vi: torch.Tensor
    fused: torch.Tensor
    files: list[str] | None = None  # where each fused image is stored (for the per-image table)
    extra: dict = field(default_factory=dict)  # anything else the caller has for these images


class FusionQuality:
    """The standard fusion metrics of fused vs. its sources (EN, SD, ..., Qabf; `docs/metrics.md`)."""

    name = "fusion"
    lower_is_better = LOWER_IS_BETTER

    def __init__(self, metrics=None, convention: str = "cddfuse"):
        self.columns = check_metrics(metrics)
        self.convention = check_convention(convention)

    def values(self, item: Scored) -> dict[str, torch.Tensor]:
        return fusion_metrics(item.fused, item.ir, item.vi, self.convention, self.columns)


class Evaluator:
    """Per-image rows and per-method mean/std of every family's columns.

    `sync=True` reduces the statistics (and gathers the rows) across DDP ranks in `reduce()`,
    which every rank must call, after declaring the same methods in the same order. Leave it
    False when only one process evaluates.
    """

    def __init__(self, families: list, sync: bool = False):
        self.families = list(families)
        self.columns = tuple(c for fam in self.families for c in fam.columns)
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"metric families share column names: {self.columns}")
        self.lower_is_better = frozenset(c for fam in self.families for c in fam.columns if c in fam.lower_is_better)
        self.sync = sync
        self._stats: dict = {}
        self._rows: list[dict] = []
        self._reduced: tuple[list[dict], dict] | None = None

    @property
    def methods(self) -> list[str]:
        return list(self._stats)

    def declare(self, method: str) -> None:
        """Give `method` a row in the tables (methods are listed in the order they first appear)."""
        from fusionlab.metrics.fusion import MetricStats

        if method not in self._stats:
            self._stats[method] = MetricStats(self.columns, self.lower_is_better, sync_on_compute=self.sync)

    def update(self, method: str, item: Scored) -> dict[str, torch.Tensor]:
        """Score one batch of `method`'s fused images; returns {column: [B] values}."""
        values: dict[str, torch.Tensor] = {}
        for fam in self.families:
            values.update(fam.values(item))
        self._reduced = None
        self.declare(method)
        self._stats[method].update(values)
        for k, image in enumerate(item.ids):
            self._rows.append({"method": method, "image": image, "fused_file": item.files[k] if item.files else "",
                               **{c: float(values[c][k]) for c in self.columns}})
        return values

    def reduce(self) -> None:
        """Gather the rows and reduce the statistics over DDP ranks (every rank calls it; with
        `sync=False` it only freezes them). `rows()` and `summary()` then answer from the result."""
        rows = list(self._rows)
        if self.sync and torch.distributed.is_available() and torch.distributed.is_initialized():
            parts: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, rows)
            rows = [row for part in parts for row in part]
        summary = {}
        for method, stats in self._stats.items():
            per = stats.summary()
            summary[method] = {"n": max((v["n"] + v["nonfinite"] for v in per.values()), default=0),
                               "metrics": {c: {k: per[c][k] for k in ("mean", "std", "n", "nonfinite")}
                                           for c in self.columns}}
        self._reduced = (rows, summary)

    def rows(self) -> list[dict]:
        if self._reduced is None:
            self.reduce()
        return self._reduced[0]

    def summary(self) -> dict[str, dict]:
        """{method: {"n": images, "metrics": {column: {"mean", "std", "n", "nonfinite"}}}}."""
        if self._reduced is None:
            self.reduce()
        return self._reduced[1]

    def means(self, method: str) -> dict[str, float]:
        return {c: v["mean"] for c, v in self.summary()[method]["metrics"].items()}


class ObjectRetention:
    """Object contrast retention (`fusionlab.metrics.retention`) of every scored method, by visibility.

    It reads the objects from what the caller passed as `Scored.extra` (a dataset batch: `instances`
    masks, else `boxes`) and each object's `visible_in` from `visibility(id)`, ground truth used for
    scoring only. Batches without masks or boxes are skipped, so it is a no-op on plain benchmarks.
    With `sync=True` compute() reduces across DDP ranks (every rank declares the same methods).
    """

    def __init__(self, visibility=None, sync: bool = False):
        self.visibility = visibility
        self.sync = sync
        self.metrics: dict = {}
        self.updated = False

    def declare(self, method: str) -> None:
        from fusionlab.metrics.retention import ContrastRetention

        if method not in self.metrics:
            self.metrics[method] = ContrastRetention(sync_on_compute=self.sync)

    def update(self, method: str, item: Scored) -> None:
        batch = item.extra or {}
        if batch.get("instances") is None and batch.get("boxes") is None:
            return
        self.declare(method)
        seen = [self.visibility(i) for i in item.ids] if self.visibility is not None else None
        self.metrics[method].update(item.fused, item.ir, item.vi, instances=batch.get("instances"),
                                    boxes=batch.get("boxes"), visibility=seen)
        self.updated = True

    def compute(self) -> dict[str, dict[str, float]]:
        """{method: {"retention/<group>/<mean|kept|n|excluded>": value}}; {} when nothing had objects."""
        import torch.distributed as dist

        active = self.updated
        if self.sync and dist.is_available() and dist.is_initialized():
            flags = [None] * dist.get_world_size()
            dist.all_gather_object(flags, active)
            active = any(flags)
        if not active:
            return {}
        return {method: metric.compute() for method, metric in self.metrics.items()}


def retention_markdown(results: dict[str, dict[str, float]]) -> str:
    """The retention split as a Markdown table: kept share and capped mean per visibility group."""
    from fusionlab.metrics.retention import KEEP_THRESHOLD, RETENTION_CAP
    from fusionlab.metrics.visibility import GROUPS
    from fusionlab.tables import markdown_table

    groups = [g for g in GROUPS if any(f"retention/{g}/n" in r for r in results.values())]
    header = ["method", *[f"{g} {stat}" for g in groups for stat in ("kept", "mean", "n")]]
    rows = [[m, *[_fmt(r.get(f"retention/{g}/{stat}", float("nan")), 3) if stat != "n"
                  else str(int(r.get(f"retention/{g}/n", 0))) for g in groups for stat in ("kept", "mean", "n")]]
            for m, r in results.items()]
    return ("Object contrast retention (docs/metrics.md): per object, contrast to its surround in the fused image "
            f"over that in the modality that sees it; kept = share with retention >= {KEEP_THRESHOLD}, mean capped "
            f"at {RETENTION_CAP}.\n\n" + markdown_table(header, rows))


# --------------------------------------------------------------------------- tables


def _fmt(x: float, digits: int = 4) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _best(values: dict[str, float], lower: bool) -> set[str]:
    finite = {k: v for k, v in values.items() if v is not None and not math.isnan(v)}
    if len(finite) < 2:
        return set()
    target = min(finite.values()) if lower else max(finite.values())
    return {k for k, v in finite.items() if v == target}


def table_path(prefix: str | Path, name: str) -> Path:
    """`results/run` + `summary.md` -> results/run_summary.md; a prefix ending in '/' is a folder."""
    prefix = str(prefix)
    return Path(prefix + name) if prefix.endswith(("/", "\\")) else Path(f"{prefix}_{name}")


def write_tables(prefix: str | Path, evaluator: Evaluator, convention: str, missing: dict[str, list[str]] | None = None,
                 extra: dict | None = None, retention: dict | None = None) -> list[Path]:
    """Write per_image.csv, summary.{md,csv,json} and (for >= 2 methods) comparison.{md,csv}.

    `missing` lists, per method, images that had no fused file; `extra` is stored in summary.json;
    `retention` ({method: ObjectRetention results}) adds its table to summary.md and summary.json.
    """
    from fusionlab.artifacts import atomic_write_json, atomic_write_text
    from fusionlab.tables import csv_text as _csv
    from fusionlab.tables import markdown_table

    rows, summary, names = evaluator.rows(), evaluator.summary(), evaluator.columns
    lower = evaluator.lower_is_better
    missing = missing or {}
    methods = list(summary)
    arrow = {n: ("↓" if n in lower else "↑") for n in names}
    written = []

    per_image = _csv(["convention", "method", "image", "fused_file", *names],
                     [[convention, r["method"], r["image"], r["fused_file"], *(repr(float(r[n])) for n in names)]
                      for r in rows])
    written.append(atomic_write_text(table_path(prefix, "per_image.csv"), per_image))

    best = {n: _best({m: summary[m]["metrics"][n]["mean"] for m in methods}, n in lower) for n in names}
    header = ["method", "n", *[f"{n} {arrow[n]}" for n in names]]
    md = [f"Convention: {CONVENTION_NOTE[convention]}.", "",
          "Mean ± std over images; ↑ higher is better, ↓ lower is better; **bold** = best.", ""]
    table = []
    for m in methods:
        cells = []
        for n in names:
            s = summary[m]["metrics"][n]
            cell = f"{_fmt(s['mean'])} ± {_fmt(s['std'])}"
            cells.append(f"**{cell}**" if m in best[n] else cell)
        table.append([m, summary[m]["n"], *cells])
    md.append(markdown_table(header, table))
    nonfinite = [f"- {m}: {n} on {s['nonfinite']} image(s)" for m in methods
                 for n, s in summary[m]["metrics"].items() if s["nonfinite"]]
    if nonfinite:
        md += ["", "Not finite (left out of mean and std):", *nonfinite]
    if any(missing.values()):
        md += ["", "Missing fused images (not scored):"]
        md += [f"- {m}: {len(ids)} missing: {', '.join(ids)}" for m, ids in missing.items() if ids]
    if retention:
        md += ["", retention_markdown(retention)]
    written.append(atomic_write_text(table_path(prefix, "summary.md"), "\n".join(md) + "\n"))

    body = []
    for m in methods:
        row = [convention, m, summary[m]["n"], len(missing.get(m, []))]
        for n in names:
            row += [repr(summary[m]["metrics"][n]["mean"]), repr(summary[m]["metrics"][n]["std"])]
        body.append(row)
    written.append(atomic_write_text(table_path(prefix, "summary.csv"), _csv(
        ["convention", "method", "n", "missing", *[f"{n}_{s}" for n in names for s in ("mean", "std")]], body)))
    written.append(atomic_write_json(table_path(prefix, "summary.json"), {
        "convention": convention,
        "convention_note": CONVENTION_NOTE[convention],
        "metrics": list(names),
        "lower_is_better": [n for n in names if n in lower],
        "methods": {m: {**summary[m], "missing": missing.get(m, [])} for m in methods},
        **({"retention": retention} if retention else {}),
        **(extra or {}),
    }))

    if len(methods) >= 2:
        md = [f"Convention: {CONVENTION_NOTE[convention]}.", "",
              "Mean over images; **bold** = best per metric (↑ higher / ↓ lower is better).", ""]
        rows_csv, table = [], []
        for n in names:
            cells = []
            for m in methods:
                v = _fmt(summary[m]["metrics"][n]["mean"])
                cells.append(f"**{v}**" if m in best[n] else v)
            table.append([f"{n} {arrow[n]}", *cells])
            rows_csv.append([n, "lower" if n in lower else "higher",
                             *[repr(summary[m]["metrics"][n]["mean"]) for m in methods], ";".join(sorted(best[n]))])
        md.append(markdown_table(["metric", *methods], table))
        written.append(atomic_write_text(table_path(prefix, "comparison.md"), "\n".join(md) + "\n"))
        written.append(atomic_write_text(table_path(prefix, "comparison.csv"),
                                         _csv(["metric", "better", *methods, "best"], rows_csv)))
    return written


# --------------------------------------------------------------------------- stage 4: a net on a split

REFERENCES = ("ir", "vis", "mean", "max")  # simple fusions every method should beat


def reference_fusions(ir_gray: torch.Tensor, vi_gray: torch.Tensor) -> dict[str, torch.Tensor]:
    """Trivial fusions of the two gray (0..255) sources, scored beside the trained network."""
    return {"ir": ir_gray, "vis": vi_gray, "mean": ((ir_gray + vi_gray) / 2).round(), "max": torch.maximum(ir_gray, vi_gray)}


class DepthProbe:
    """Depth error of the frozen stage-1 nets on IR, VIS and fused inputs (the ldnf claim:
    fused images carry better depth cues). Active only when both nets and GT depth exist."""

    PAIRS = {"ir": ("ir", "ir"), "vis": ("vis", "vi"), "fused-ir-net": ("ir", "fused"), "fused-vis-net": ("vis", "fused")}

    def __init__(self, depth_ir: str | None, depth_vis: str | None, sync: bool = False):
        from fusionlab.metrics.depth import DepthMetrics
        from fusionlab.models.depth import load_depth_estimator

        self.nets = {}
        if depth_ir and depth_vis and Path(depth_ir).exists() and Path(depth_vis).exists():
            self.nets = {"ir": load_depth_estimator(depth_ir), "vis": load_depth_estimator(depth_vis)}
        # (net, image) per probe; with sync every rank calls compute()
        self.metrics = {name: DepthMetrics(sync_on_compute=sync) for name in self.PAIRS}

    def update(self, batch: dict, fused_rgb: torch.Tensor) -> None:
        if not self.nets or batch.get("depth") is None:
            return
        images = {"ir": batch["ir"], "vi": batch["vi"], "fused": fused_rgb}
        with torch.no_grad():
            for name, (net, image) in self.PAIRS.items():
                # the IR net takes the fused RGB image through its own adapt_channels (Y)
                self.metrics[name].update(self.nets[net](images[image]), batch["depth"])

    def compute(self) -> dict[str, float]:
        if not self.nets:
            return {}
        import warnings

        keep = ("AbsRel", "RMSE", "delta1")
        with warnings.catch_warnings():  # a rank (or a run) without GT depth never updated: that is fine
            warnings.simplefilter("ignore")
            out = {f"depth/{name}/{k}": float(v) for name, m in self.metrics.items()
                   for k, v in m.compute().items() if k in keep}
        return out if all(math.isfinite(v) for v in out.values()) else {}  # no image had GT depth


def _panel(ir: torch.Tensor, vi: torch.Tensor, fused: torch.Tensor):
    """IR | VIS | fused side by side, [H, 3W, 3] uint8."""
    row = torch.cat([ir.expand(3, -1, -1), vi, fused], dim=2)
    return (row.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def score_split(net, loader, fused_dir: str | Path, evaluator: Evaluator, method: str, *, text_fn=None,
                depth: DepthProbe | None = None, objects: ObjectRetention | None = None, references: bool = True,
                panels: int = 0, recorded_dir: str | Path | None = None, shard: tuple[int, int] = (0, 1)) -> list:
    """Fuse every batch of `loader` with `net`, write `<fused_dir>/<id>.png`, and score exactly the
    written images as `method` (plus the simple references as `ref/<name>`). The per-image table
    names the files under `recorded_dir` (default `fused_dir`; e.g. the final folder when writing
    to a staging one). `shard=(rank, world)` takes every world-th batch (DDP: each rank a share).
    Returns up to `panels` (id, IR | VIS | fused image) for logging."""
    from tqdm import tqdm

    from fusionlab.data.io import write_image
    from fusionlab.metrics.gray import to_gray255
    from fusionlab.models.fusion import fuse_rgb

    device = next(net.parameters()).device
    net.eval()
    shown = []
    for name in [method, *(f"ref/{r}" for r in REFERENCES if references)]:  # the same order on every rank
        evaluator.declare(name)
        if objects is not None:
            objects.declare(name)
    rank, world = shard
    with torch.no_grad():
        for index, batch in enumerate(tqdm(loader, desc="fuse eval split", leave=False, disable=rank != 0)):
            if index % world != rank:
                continue
            text = text_fn(batch["id"], device) if (net.needs_text and text_fn is not None) else None
            fused = fuse_rgb(net, batch["ir"].to(device), batch["vi"].to(device), text).float().cpu()
            fused = (fused * 255).round() / 255  # score exactly what is written
            for sample_id, image in zip(batch["id"], fused, strict=True):
                write_image(Path(fused_dir) / f"{sample_id}.png", image)
            files = [str(Path(recorded_dir or fused_dir) / f"{sample_id}.png") for sample_id in batch["id"]]
            ir_gray, vi_gray = to_gray255(batch["ir"]), to_gray255(batch["vi"])
            scored = {method: Scored(list(batch["id"]), ir_gray, vi_gray, to_gray255(fused), files, batch)}
            if references:
                for name, ref in reference_fusions(ir_gray, vi_gray).items():
                    scored[f"ref/{name}"] = Scored(list(batch["id"]), ir_gray, vi_gray, ref, None, batch)
            for name, item in scored.items():
                evaluator.update(name, item)
                if objects is not None:
                    objects.update(name, item)
            if depth is not None:
                depth.update(batch, fused)
            for i, sample_id in enumerate(batch["id"]):
                if len(shown) < panels:
                    shown.append((sample_id, _panel(batch["ir"][i], batch["vi"][i], fused[i])))
    return shown
