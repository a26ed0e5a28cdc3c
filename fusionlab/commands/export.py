"""Export a trained fusion checkpoint to ONNX (IR + VIS RGB in, fused RGB out; dynamic size).

Only presets whose inference needs no CLIP text can be exported (e.g. `baseline`, or a preset
trained with text_guidance: off). The graph includes padding and colour restoration, so it
matches `fusionlab fuse` without tiling.
"""

from __future__ import annotations

import argparse

HELP = "export a fusion checkpoint to ONNX"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="fusion model folder (stage 4's fusion/ output)")
    parser.add_argument("--onnx", required=True, help="output .onnx file")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset version")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --onnx file")


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fusionlab.errors import PipelineError
    from fusionlab.models.fusion import load_fusion_model
    from fusionlab.models.fusion.onnx import export_onnx

    out = Path(args.onnx)
    if out.exists() and not args.overwrite:
        raise PipelineError(f"--onnx '{out}' exists; pass --overwrite to replace it")
    net = load_fusion_model(args.checkpoint)
    export_onnx(net, out, opset=args.opset)
    print(f"exported '{net.config.get('name')}' -> {out}")
    return 0
