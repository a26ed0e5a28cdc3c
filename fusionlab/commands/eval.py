"""Score fused images against their infrared and visible sources with the standard fusion metrics.

Writes PREFIX_per_image.csv, PREFIX_summary.{md,csv,json} (mean ± std per method) and, for two or
more methods, PREFIX_comparison.{md,csv} (metrics side by side, best value in bold; MSE and Nabf
are lower-is-better). Every output names the convention the numbers follow.

Example:
  fusionlab eval --ir data/test/ir --vi data/test/vi --fused ours=out/ours seafusion=ref/seafusion
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from fusionlab.commands import _args

HELP = "compute fusion metrics (EN, SD, SF, AG, MI, SCD, VIF, Qabf, SSIM, ...) for fused images"

CONVENTION_NOTE = {
    "cddfuse": "cddfuse: the Python evaluator most fusion papers use (MI in nats, SSIM = sum of two SSIMs "
    "with data_range=2, SSIM255 with data_range=255, AG mean)",
    "matlab": "matlab: the classic MATLAB scripts (MI in bits, SSIM = mean of two SSIMs with data_range=255, "
    "AG normalised by (r-1)(c-1))",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ir", required=True, type=Path, help="folder of infrared source images")
    parser.add_argument("--vi", required=True, type=Path, help="folder of visible source images")
    parser.add_argument(
        "--fused",
        required=True,
        nargs="+",
        metavar="NAME=DIR",
        help="fused image folders, one per method (NAME= is optional; default name = folder name)",
    )
    parser.add_argument("--metrics", nargs="+", default=None, help="subset of metrics (default: all)")
    parser.add_argument(
        "--convention",
        choices=("cddfuse", "matlab"),
        default="cddfuse",
        help="which evaluator's conventions to follow (default: cddfuse)",
    )
    parser.add_argument(
        "--out",
        default="eval",
        metavar="PREFIX",
        help="output prefix, e.g. results/run1 -> results/run1_summary.md (default: eval)",
    )
    parser.add_argument("--strict", action="store_true", help="fail if any fused image is missing")
    parser.add_argument(
        "--threads",
        type=_args.threads,
        default=0,
        help="torch CPU threads (default 0 = torch's choice; 1 is faster on a busy shared machine)",
    )


def _images(folder: Path, what: str) -> dict[str, Path]:
    from fusionlab.data.io import IMAGE_SUFFIXES, is_image
    from fusionlab.errors import DataError

    if not folder.is_dir():
        raise DataError(f"{what} folder '{folder}' does not exist; pass an existing folder of images")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if is_image(p):
            if p.stem in found:
                raise DataError(
                    f"{what} folder '{folder}' has two images named '{p.stem}' ({found[p.stem].name}, {p.name}); keep one"
                )
            found[p.stem] = p
    if not found:
        raise DataError(f"{what} folder '{folder}' contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return found


def _parse_methods(specs: list[str]) -> dict[str, Path]:
    from fusionlab.errors import ConfigError

    methods: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep:
            name, folder = Path(spec).name, spec
        if not name or not folder:
            raise ConfigError(f"--fused '{spec}' is not NAME=DIR; e.g. --fused ours=out/fused")
        if name in methods:
            raise ConfigError(f"--fused: method name '{name}' is given twice; give each folder its own NAME=")
        methods[name] = Path(folder)
    return methods


def _fmt(x: float, digits: int = 4) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _best(values: dict[str, float], lower: bool) -> set[str]:
    finite = {k: v for k, v in values.items() if v is not None and not math.isnan(v)}
    if len(finite) < 2:
        return set()
    target = min(finite.values()) if lower else max(finite.values())
    return {k for k, v in finite.items() if v == target}


def _summaries(rows: list[dict], methods: list[str], names: tuple[str, ...]) -> dict[str, dict]:
    import statistics

    out = {}
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        stats = {}
        for n in names:
            vals = [r[n] for r in mine]
            stats[n] = {
                "mean": statistics.fmean(vals) if vals else float("nan"),
                "std": statistics.pstdev(vals) if vals else float("nan"),
            }
        out[m] = {"n": len(mine), "metrics": stats}
    return out


def _write_outputs(prefix: str, rows, summary, missing, names, convention, lower) -> list[Path]:
    import csv
    import io

    from fusionlab.artifacts import atomic_write_json, atomic_write_text

    methods = list(summary)
    arrow = {n: ("↓" if n in lower else "↑") for n in names}
    written = []

    def csv_text(header, body):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(body)
        return buf.getvalue()

    per_image = csv_text(
        ["convention", "method", "image", "fused_file", *names],
        [[convention, r["method"], r["image"], r["fused_file"], *(repr(float(r[n])) for n in names)] for r in rows],
    )
    written.append(atomic_write_text(f"{prefix}_per_image.csv", per_image))

    best = {n: _best({m: summary[m]["metrics"][n]["mean"] for m in methods}, n in lower) for n in names}
    header = ["method", "n", *[f"{n} {arrow[n]}" for n in names]]
    md = [
        f"Convention: {CONVENTION_NOTE[convention]}.",
        "",
        "Mean ± std over images; ↑ higher is better, ↓ lower is better; **bold** = best.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for m in methods:
        cells = []
        for n in names:
            s = summary[m]["metrics"][n]
            cell = f"{_fmt(s['mean'])} ± {_fmt(s['std'])}"
            cells.append(f"**{cell}**" if m in best[n] else cell)
        md.append(f"| {m} | {summary[m]['n']} | " + " | ".join(cells) + " |")
    if any(missing.values()):
        md += ["", "Missing fused images (not scored):"]
        md += [f"- {m}: {len(ids)} missing: {', '.join(ids)}" for m, ids in missing.items() if ids]
    written.append(atomic_write_text(f"{prefix}_summary.md", "\n".join(md) + "\n"))

    body = []
    for m in methods:
        row = [convention, m, summary[m]["n"], len(missing.get(m, []))]
        for n in names:
            row += [repr(summary[m]["metrics"][n]["mean"]), repr(summary[m]["metrics"][n]["std"])]
        body.append(row)
    written.append(
        atomic_write_text(
            f"{prefix}_summary.csv",
            csv_text(
                ["convention", "method", "n", "missing", *[f"{n}_{s}" for n in names for s in ("mean", "std")]], body
            ),
        )
    )
    written.append(
        atomic_write_json(
            f"{prefix}_summary.json",
            {
                "convention": convention,
                "convention_note": CONVENTION_NOTE[convention],
                "metrics": list(names),
                "lower_is_better": [n for n in names if n in lower],
                "methods": {m: {**summary[m], "missing": missing.get(m, [])} for m in methods},
            },
        )
    )

    if len(methods) >= 2:
        md = [
            f"Convention: {CONVENTION_NOTE[convention]}.",
            "",
            "Mean over images; **bold** = best per metric (↑ higher / ↓ lower is better).",
            "",
            "| metric | " + " | ".join(methods) + " |",
            "|" + "---|" * (len(methods) + 1),
        ]
        rows_csv = []
        for n in names:
            cells = []
            for m in methods:
                v = _fmt(summary[m]["metrics"][n]["mean"])
                cells.append(f"**{v}**" if m in best[n] else v)
            md.append(f"| {n} {arrow[n]} | " + " | ".join(cells) + " |")
            rows_csv.append(
                [
                    n,
                    "lower" if n in lower else "higher",
                    *[repr(summary[m]["metrics"][n]["mean"]) for m in methods],
                    ";".join(sorted(best[n])),
                ]
            )
        written.append(atomic_write_text(f"{prefix}_comparison.md", "\n".join(md) + "\n"))
        written.append(
            atomic_write_text(f"{prefix}_comparison.csv", csv_text(["metric", "better", *methods, "best"], rows_csv))
        )
    return written


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from fusionlab.errors import DataError
    from fusionlab.metrics.functional import LOWER_IS_BETTER, check_metrics
    from fusionlab.metrics.fusion import compute_fusion_metrics
    from fusionlab.metrics.gray import read_gray255

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    names = check_metrics(args.metrics)
    methods = _parse_methods(args.fused)
    ir, vi = _images(args.ir, "--ir"), _images(args.vi, "--vi")
    unpaired = sorted(set(ir) ^ set(vi))
    if unpaired:
        print(
            f"warning: {len(unpaired)} source images lack a partner in the other folder and are skipped: "
            f"{', '.join(unpaired[:10])}{' ...' if len(unpaired) > 10 else ''}",
            file=sys.stderr,
        )
    ids = sorted(set(ir) & set(vi))
    if not ids:
        raise DataError(f"no image name appears in both --ir '{args.ir}' and --vi '{args.vi}'; names must match")
    fused = {m: _images(d, f"--fused {m}") for m, d in methods.items()}
    missing = {m: [i for i in ids if i not in fused[m]] for m in methods}
    for m, gone in missing.items():
        if gone:
            print(
                f"warning: {m}: {len(gone)} of {len(ids)} fused images missing in '{methods[m]}': {', '.join(gone)}",
                file=sys.stderr,
            )
    if args.strict and any(missing.values()):
        raise DataError("fused images are missing (listed above); produce them or drop --strict")

    rows = []
    total = sum(len(ids) - len(missing[m]) for m in methods)
    with tqdm(total=total, desc=f"eval ({args.convention})", unit="img", file=sys.stderr) as bar:
        for i in ids:
            a, b = read_gray255(ir[i]), read_gray255(vi[i])
            if a.shape != b.shape:
                raise DataError(
                    f"'{ir[i]}' is {a.shape[1]}x{a.shape[0]} but '{vi[i]}' is {b.shape[1]}x{b.shape[0]} "
                    "(WxH); the sources of a pair must be the same size"
                )
            for m in methods:
                if i not in fused[m]:
                    continue
                path = fused[m][i]
                f = read_gray255(path)
                if f.shape != a.shape:
                    raise DataError(
                        f"fused image '{path}' is {f.shape[1]}x{f.shape[0]} but its sources are "
                        f"{a.shape[1]}x{a.shape[0]} (WxH); fuse at the source size (no resizing)"
                    )
                try:
                    values = compute_fusion_metrics(a, b, f, args.convention, names, value_range=255)
                except DataError as exc:  # e.g. an image too small for VIF: say which one
                    raise DataError(f"'{path}': {exc}") from None
                rows.append({"method": m, "image": i, "fused_file": str(path), **values})
                bar.update(1)

    summary = _summaries(rows, list(methods), names)
    written = _write_outputs(args.out, rows, summary, missing, names, args.convention, LOWER_IS_BETTER)
    print((Path(f"{args.out}_summary.md")).read_text())
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
