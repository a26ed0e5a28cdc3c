"""Fuse folders of infrared + visible pairs with a trained fusion model (by default the shipped one).

Pairs are matched by file stem; the fused RGB PNG of `ir/<id>.*` + `vi/<id>.*` is written
atomically as `<out>/<id>.png` at the input size. A pair that cannot be fused (an unpaired,
unreadable, corrupt, empty or size-mismatched file) is reported and skipped while every good pair
is written; the command then ends with a summary and exit status 1 (`--strict`: stop at the first
problem). `--resume` continues an interrupted run. Images over `--max-pixels` are fused in tiles
by themselves; `--tile` tiles every image larger than it. Text-guided presets take captions from
--captions (captions.jsonl: {"id", "caption"} per line).
"""

from __future__ import annotations

import argparse

from fusionlab.commands import _args

HELP = "fuse IR + VIS folders with a trained fusion model (the shipped one by default); skips and reports bad pairs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None,
                        help="fusion model folder (stage 4's fusion/ output) or a shipped model's name; "
                             "default: the shipped model (`fusionlab models`)")
    parser.add_argument("--ir", required=True, help="folder of infrared images")
    parser.add_argument("--vi", required=True, help="folder of visible images (same file stems)")
    parser.add_argument("--out", required=True, help="output folder for fused PNGs")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run: keep outputs that are complete and newer than their inputs")
    parser.add_argument("--overwrite", action="store_true", help="redo and replace every existing PNG in --out")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad or unpaired input instead of skipping it")
    parser.add_argument("--max-pixels", type=_args.nonnegative, default=None,
                        help="memory budget: an image with more pixels is fused in tiles by itself "
                             "(default 4194304 = 2048x2048, about 1.8 GB for the baseline net; 0 = never)")
    parser.add_argument("--tile", type=int, default=0,
                        help="tile size in px for every image larger than it (0 = only over --max-pixels); e.g. 512")
    parser.add_argument("--overlap", type=int, default=64, help="tile overlap in px, blended with linear ramps")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="pairs (whole-image mode, same size) or tiles (tiled mode) per forward pass")
    parser.add_argument("--precision", default="32", choices=["32", "bf16", "fp16"],
                        help="bf16/fp16 autocast (fp16 needs CUDA)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--captions", default=None,
                        help="captions.jsonl ({'id','caption'} per line) for presets that need text")
    parser.add_argument("--clip", default=None,
                        help="CLIP used to encode captions (folder or spec); default: the one the checkpoint names")
    parser.add_argument("--threads", type=_args.threads, default=0,
                        help="CPU threads for the net (default 0 = torch's choice, one per core). On a CPU "
                             "shared with other jobs use 1: extra OpenMP threads spin-wait whenever another "
                             "process holds a core")


def quiet_openmp() -> None:
    """Let idle OpenMP workers sleep instead of spinning (unless the user chose): fuse overlaps the
    net with decoding and PNG encoding in other threads, and on a CPU shared with other jobs a
    spinning worker steals the core they need (3x less CPU per pair under load here). Must run
    before torch is imported."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(args: argparse.Namespace) -> int:
    import sys

    quiet_openmp()
    from fusionlab.inference import DEFAULT_MAX_PIXELS, fuse_folders

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    report = fuse_folders(
        checkpoint=args.checkpoint, ir_dir=args.ir, vi_dir=args.vi, out_dir=args.out, tile=args.tile,
        overlap=args.overlap, batch_size=args.batch_size, precision=args.precision, device=args.device,
        captions=args.captions, clip=args.clip, overwrite=args.overwrite, resume=args.resume, strict=args.strict,
        max_pixels=DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels,
        progress=sys.stderr.isatty(),
    )
    print(report.summary(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1
