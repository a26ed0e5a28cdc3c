"""Inspect, generate and preview datasets.

fusionlab data check DIR                 report pairing problems plus a summary of the pairs
fusionlab data synth --out DIR --n N     write synthetic IR/VIS scenes with depth, boxes, descriptions
fusionlab data preview DIR --out F.png   write an IR | VIS | depth | boxes grid of a few samples
"""

from __future__ import annotations

import argparse
import sys
import time

from fusionlab.commands import _args

HELP = "check, synthesise and preview IR/VIS datasets"


def _formats() -> tuple[str, ...]:
    from fusionlab.data.formats import FORMATS  # numpy only: the CLI stays fast

    return FORMATS


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size '{text}' is not WxH, e.g. 160x128") from None
    return w, h


def _dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", metavar="DIR", help="dataset folder (any supported layout)")
    p.add_argument("--format", choices=("auto", *_formats()), default="auto", help="layout (default: detect)")
    p.add_argument("--split", default=None, help="sub-folder such as train or test, when the layout has one")
    p.add_argument(
        "--on-size-mismatch",
        choices=("error", "resize", "crop"),
        default="error",
        help="what to do with partners of different sizes",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="decode every file; print problems and a summary")
    _dataset_args(check)
    synth = sub.add_parser("synth", help="write synthetic scenes (ir/ vi/ depth/ labels/ scenes/)")
    synth.add_argument("--out", required=True, help="output folder (replaced if written by synth before)")
    synth.add_argument("--n", type=_args.positive, default=200, help="number of scenes (default 200)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (same seed, same scenes)")
    synth.add_argument("--size", type=_size, default=(160, 128), help="W x H (default 160x128)")
    preview = sub.add_parser("preview", help="write an IR | VIS | depth | boxes grid PNG")
    _dataset_args(preview)
    preview.add_argument("--out", required=True, help="PNG file to write")
    preview.add_argument("--n", type=_args.positive, default=4, help="rows (samples) in the grid")
    preview.add_argument("--tile-height", type=_args.positive, default=128, help="height of each tile in pixels")


def main(args: argparse.Namespace) -> int:
    if args.data_command == "check":
        from fusionlab.data.datasets import check_dataset

        report = check_dataset(args.root, args.format, args.split, args.on_size_mismatch)
        print(report.text())
        return 0 if report.ok else 1
    if args.data_command == "synth":
        from fusionlab.data.synth import generate

        start = time.perf_counter()
        out = generate(args.out, args.n, args.seed, args.size, progress=sys.stderr.isatty())
        print(
            f"wrote {args.n} scenes ({args.size[0]}x{args.size[1]}, seed {args.seed}) to {out} "
            f"in {time.perf_counter() - start:.1f} s"
        )
        return 0
    from fusionlab.data.preview import write_preview

    out = write_preview(args.root, args.out, args.n, args.format, args.split, args.on_size_mismatch, args.tile_height)
    print(f"wrote {out}")
    return 0
