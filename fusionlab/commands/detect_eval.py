"""The detection protocol of fusion papers: a fresh YOLO per image set and seed, one table.

fusionlab detect-eval --labels DATASET --fused ours=runs/x/fused_all --fused other=DIR --out DIR

Writes an ultralytics dataset per image set (IR only, VIS only, each --fused folder) on one
train/val split, trains each set once per seed with ultralytics' DetectionTrainer and scores it
with its DetectionValidator (`fusionlab.detection.protocol`), and writes DIR/map.md, map.csv and
map.json: P, R, mAP@0.5 and mAP@0.5:0.95 per set and class as mean ± std over the seeds, and the
paired per-seed difference of each fused set against IR-only and VIS-only. Fused folders hold
images named like the labelled dataset's files (same stem, same size); only ids present in every
folder are used. A rerun with the same options keeps the (set, seed) units already finished.
"""

from __future__ import annotations

import argparse

HELP = "train a fresh detector per image set (IR, VIS, each fused set) and seed; tabulate mAP"


def _named_dir(text: str) -> tuple[str, str]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"'{text}' is not NAME=DIR (e.g. ours=runs/demo/fusion/fused)")
    return name, folder


def _train_arg(text: str) -> tuple[str, object]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"'{text}' is not KEY=VALUE (e.g. lr0=0.01)")
    return key, yaml.safe_load(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", required=True, metavar="DIR",
                        help="labelled dataset (ir/, vi/, labels/ or any supported layout)")
    parser.add_argument("--fused", type=_named_dir, action="append", default=[], metavar="NAME=DIR",
                        help="a folder of fused images named like the dataset's files (repeatable)")
    parser.add_argument("--split", default=None, help="sub-folder of --labels such as train or test, when it has one")
    parser.add_argument("--format", default="auto", choices=("auto", "generic", "llvip", "m3fd", "kaist"))
    parser.add_argument("--out", required=True, help="output folder for map.md/csv/json, the units and the datasets")
    parser.add_argument("--val-fraction", type=float, default=0.3, help="held-out fraction (default 0.3)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the train/val split (default 0)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="detector seeds; every set is trained once per seed (default 0 1 2)")
    parser.add_argument("--no-sources", action="store_true", help="skip the IR-only and VIS-only rows")
    parser.add_argument("--profile", default="paper", choices=("paper", "text2pixels", "fast"),
                        help="paper: YOLOv8n with ultralytics' defaults (LDFusion); text2pixels: YOLOv5s; "
                             "fast: a CPU smoke run (default paper)")
    parser.add_argument("--model", default=None, help="ultralytics detection YAML (default: the profile's)")
    parser.add_argument("--width", type=float, default=None, help="width multiple (default: the profile's)")
    parser.add_argument("--depth", type=float, default=None, help="depth multiple (default: the profile's)")
    parser.add_argument("--pretrained", default=None, help="starting weights: fusionlab detector/ folder or a .pt")
    parser.add_argument("--imgsz", type=int, default=None, help="training/validation size (default: the profile's)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per unit (default: the profile's)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default: the profile's)")
    parser.add_argument("--set", dest="train_args", type=_train_arg, action="append", default=[], metavar="KEY=VALUE",
                        help="any other ultralytics train argument, e.g. --set lr0=0.01 --set mosaic=0 (repeatable)")
    parser.add_argument("--processes", type=int, default=1, help="units trained side by side (CPU: one thread each)")
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu or auto (default auto)")


def _folder_files(name: str, folder, ids: set[str]) -> dict:
    from pathlib import Path

    from fusionlab.data.io import IMAGE_SUFFIXES

    return {p.stem: p for p in sorted(Path(folder).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and p.stem in ids}


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
    from pydantic import ValidationError

    from fusionlab.detection import protocol as proto

    try:
        cfg = proto.ProtocolConfig(profile=args.profile, seeds=args.seeds, model=args.model, width_multiple=args.width,
                                   depth_multiple=args.depth, pretrained=args.pretrained, imgsz=args.imgsz,
                                   epochs=args.epochs, batch=args.batch_size, train_args=dict(args.train_args),
                                   processes=args.processes)
    except ValidationError as exc:
        raise ConfigError(f"detect-eval: bad option: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    from fusionlab.data.datamodule import split_indices
    from fusionlab.data.datasets import open_dataset
    from fusionlab.data.io import probe_image

    ds = open_dataset(args.labels, args.format, args.split)
    if not ds.has_boxes:
        raise DataError(f"--labels '{args.labels}' has no box labels (labels/*.txt); detect-eval needs them")
    files = {n: _folder_files(n, d, set(ds.ids)) for n, d in args.fused}
    keep = [i for i, sid in enumerate(ds.ids) if all(sid in f for f in files.values())]
    if len(keep) < 2:
        raise DataError(f"only {len(keep)} of the {len(ds)} labelled ids in '{args.labels}' have an image in every "
                        "--fused folder; fused images must be named like the dataset's files (same stem)")
    ds = ds.select(keep)
    for n, by_id in files.items():
        for i, sid in enumerate(ds.ids):
            w, h = probe_image(by_id[sid])
            if (h, w) != ds.image_size(i):
                raise DataError(f"--fused {n}: '{by_id[sid]}' is {w}x{h}, but its labelled pair is "
                                f"{ds.image_size(i)[1]}x{ds.image_size(i)[0]}; fused images must keep the size")
    train_idx, val_idx = split_indices(len(ds), args.val_fraction, args.split_seed)
    splits = {"train": ds.select(train_idx), "val": ds.select(val_idx)}

    out = Path(args.out)
    prepare_ultralytics(out)  # before ultralytics is imported anywhere
    work = out / "work"
    print(f"detect-eval: {len(train_idx)} train / {len(val_idx)} val images, classes {ds.classes}, "
          f"sets {(['ir', 'vis'] if not args.no_sources else []) + names}, seeds {cfg.seeds}", flush=True)
    sources = {} if args.no_sources else {"ir": lambda b: b["ir"], "vis": lambda b: b["vi"]}
    yamls = proto.write_image_sets(work / "data", splits, ds.classes, {**sources, **files})

    from fusionlab.stages.base import accelerator_device

    device = "cpu" if accelerator_device(args.accelerator).type == "cpu" else "0"
    key = proto._digest({"labels": str(Path(args.labels).resolve()), "split": args.split, "format": args.format,
                         "val_fraction": args.val_fraction, "split_seed": args.split_seed})
    results = proto.run_protocol(yamls, ds.classes, cfg, work, device=device, key=key, config_root=out)
    proto.publish_units(work, out / "protocol")
    meta = {"labels": str(args.labels), "fused": dict(args.fused), "split": args.split, "split_seed": args.split_seed,
            "val_fraction": args.val_fraction, "train_ids": list(splits["train"].ids),
            "val_ids": list(splits["val"].ids), "seeds": cfg.seeds, "protocol": cfg.settings(),
            "detector_init": "random (no pretrained weights)" if cfg.pretrained is None else cfg.pretrained}
    predictions = {s: {seed: proto.load_predictions(out / "protocol", s, seed) for seed in by_seed}
                   for s, by_seed in results.items()}
    recall = proto.visibility_recall(predictions, splits["val"])  # where the labels record visible_in
    paths = proto.write_tables(results, out, meta, recall=recall)
    print(paths["map.md"].read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())} and {out / 'protocol'}/<set>/seed<k>/")
    return 0
