"""The detection protocol of fusion papers: a fresh YOLO per image set, one table.

fusionlab detect-eval --labels DATASET --fused ours=runs/x/fusion/fused --fused other=DIR --out DIR

Trains one detector per image set (IR only, VIS only, each --fused folder) with the same
architecture, seed, batches, schedule and train/val split, and writes P, R, mAP@0.5 and
mAP@0.5:0.95 per class and per set to DIR/map.md, map.csv and map.json. Fused folders hold
images named like the labelled dataset's files (same stem, same size); only ids present in
every folder are used.
"""

from __future__ import annotations

import argparse

HELP = "train a fresh detector per image set (IR, VIS, each fused set) and tabulate mAP"


def _named_dir(text: str) -> tuple[str, str]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"'{text}' is not NAME=DIR (e.g. ours=runs/demo/fusion/fused)")
    return name, folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", required=True, metavar="DIR",
                        help="labelled dataset (ir/, vi/, labels/ or any supported layout)")
    parser.add_argument("--fused", type=_named_dir, action="append", default=[], metavar="NAME=DIR",
                        help="a folder of fused images named like the dataset's files (repeatable)")
    parser.add_argument("--split", default=None, help="sub-folder of --labels such as train or test, when it has one")
    parser.add_argument("--format", default="auto", choices=("auto", "generic", "llvip", "m3fd", "kaist"))
    parser.add_argument("--out", required=True, help="output folder for map.md/csv/json and logs")
    parser.add_argument("--val-fraction", type=float, default=0.3, help="held-out fraction (default 0.3)")
    parser.add_argument("--seed", type=int, default=0, help="split, initial weights and batch order (default 0)")
    parser.add_argument("--no-sources", action="store_true", help="skip the IR-only and VIS-only rows")
    parser.add_argument("--model", default="yolov8n.yaml", help="ultralytics detection YAML (default yolov8n.yaml)")
    parser.add_argument("--width", type=float, default=None,
                        help="width multiple (default: the YAML's scale; e.g. 0.125 for a CPU smoke run)")
    parser.add_argument("--depth", type=float, default=None, help="depth multiple (default: the YAML's scale)")
    parser.add_argument("--pretrained", default=None, help="detector weights: fusionlab detector/ folder or a .pt")
    parser.add_argument("--imgsz", type=int, default=640, help="long side the images are resized to (default 640)")
    parser.add_argument("--epochs", type=int, default=50, help="epochs per detector (default 50)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator (cpu, gpu, auto)")
    parser.add_argument("--precision", default="32-true", help="Lightning precision (32-true, bf16-mixed, ...)")


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fusionlab.errors import ConfigError, DataError
    from fusionlab.models.detector import prepare_ultralytics

    # the options first: a typo must not leave an --out folder behind
    names = [n for n, _ in args.fused]
    if len(set(names)) != len(names) or {"ir", "vis"} & set(names) and not args.no_sources:
        raise ConfigError(f"--fused names must be unique and not 'ir'/'vis' (got {names})")
    if not args.fused and args.no_sources:
        raise ConfigError("nothing to evaluate: give --fused NAME=DIR or drop --no-sources")
    for what, folder in [("--labels", args.labels), *((f"--fused {n}", d) for n, d in args.fused)]:
        if not Path(folder).is_dir():
            raise DataError(f"{what} '{folder}' is not a folder; pass an existing folder")
    out = Path(args.out)
    prepare_ultralytics(out)  # before ultralytics is imported anywhere

    import lightning as L
    from lightning.pytorch.loggers import CSVLogger
    from pydantic import ValidationError

    from fusionlab import detection_protocol as proto
    from fusionlab.models.detector import DetectorConfig

    try:
        cfg = proto.ProtocolConfig(
            detector=DetectorConfig(cfg=args.model, width_multiple=args.width, depth_multiple=args.depth,
                                    pretrained=args.pretrained, imgsz=args.imgsz),
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    except ValidationError as exc:
        raise ConfigError(f"detect-eval: bad option: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    sets, classes = proto.load_folder_sets(args.labels, dict(args.fused), format=args.format, split=args.split,
                                           val_fraction=args.val_fraction, seed=args.seed, imgsz=args.imgsz,
                                           sources=not args.no_sources)
    first = next(iter(sets.values()))
    print(f"detect-eval: {len(first[0])} train / {len(first[1])} val images, classes {classes}, "
          f"sets {list(sets)}", flush=True)

    def make_trainer(epochs, set_name):
        return L.Trainer(max_epochs=epochs, accelerator=args.accelerator, devices=1, precision=args.precision,
                         default_root_dir=str(out), logger=CSVLogger(str(out / "logs"), name=set_name, version=""),
                         enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=5)

    from fusionlab.stages.base import accelerator_device

    device = accelerator_device(args.accelerator)
    results = proto.run_protocol(sets, classes, cfg, make_trainer, device=device)
    meta = {"labels": str(args.labels), "fused": dict(args.fused), "split": args.split, "seed": args.seed,
            "val_fraction": args.val_fraction, "train_ids": first[0].ids, "val_ids": first[1].ids,
            "protocol": cfg.model_dump()}
    paths = proto.write_tables(results, out, meta)
    print(paths["map.md"].read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
