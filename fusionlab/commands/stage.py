"""Run one stage in this process (the runner launches every stage this way).

Lightning's DDP launcher re-runs this same command for every rank, so
`fusionlab stage stages/1-depth.yaml --out runs/x/depth trainer.devices=2` scales out; under
torchrun or SLURM, start it once per rank. Only rank 0 writes artifacts and the manifest.
"""

import argparse

HELP = "run one stage YAML into an output folder (used by `fusionlab run`; works under torchrun/SLURM)"


def add_arguments(parser) -> None:
    parser.add_argument("config", help="stage YAML, e.g. stages/1-depth.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides such as trainer.max_epochs=2")
    parser.add_argument("--out", required=True, help="output folder of the stage")
    parser.add_argument("--name", help="stage name (default: the output folder's name)")
    parser.add_argument("--context", help=argparse.SUPPRESS)  # written by `fusionlab run`


def main(args) -> int:
    from fusionlab.config import parse_overrides
    from fusionlab.pipeline.stage_process import run_stage

    manifest = run_stage(args.config, args.out, parse_overrides(args.overrides), args.context, args.name)
    if manifest:
        print(f"stage {manifest['stage']} done in {manifest['wall_time_s']:.1f} s -> {args.out}/manifest.json")
    return 0
