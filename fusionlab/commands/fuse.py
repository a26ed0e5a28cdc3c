"""Fuse folders of infrared + visible pairs with a trained fusion checkpoint.

Pairs are matched by file stem; the fused RGB PNG of `ir/<id>.*` + `vi/<id>.*` is written as
`<out>/<id>.png` at the input size. Large images are fused in overlapping tiles (--tile).
Text-guided presets take captions from --captions (captions.jsonl: {"id", "caption"} per line).
"""

from __future__ import annotations

import argparse

from fusionlab.commands import _args

HELP = "fuse IR + VIS folders with a trained fusion checkpoint (any size, tiled, colour)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="fusion model folder (stage 4's fusion/ output)")
    parser.add_argument("--ir", required=True, help="folder of infrared images")
    parser.add_argument("--vi", required=True, help="folder of visible images (same file stems)")
    parser.add_argument("--out", required=True, help="output folder for fused PNGs")
    parser.add_argument("--tile", type=int, default=0,
                        help="tile size in px for large images (0 = whole image); e.g. 512")
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
    parser.add_argument("--overwrite", action="store_true", help="replace existing PNGs in --out")
    parser.add_argument("--threads", type=_args.threads, default=0,
                        help="CPU threads for the net (default 0 = torch's choice, one per core). On a CPU "
                             "shared with other jobs use 1: extra OpenMP threads spin-wait whenever another "
                             "process holds a core")


def main(args: argparse.Namespace) -> int:
    from fusionlab.inference import fuse_folders

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    n = fuse_folders(
        checkpoint=args.checkpoint, ir_dir=args.ir, vi_dir=args.vi, out_dir=args.out, tile=args.tile,
        overlap=args.overlap, batch_size=args.batch_size, precision=args.precision, device=args.device,
        captions=args.captions, clip=args.clip, overwrite=args.overwrite,
    )
    print(f"fused {n} pair(s) -> {args.out}")
    return 0
