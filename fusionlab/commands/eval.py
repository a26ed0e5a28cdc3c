"""Score fused images against their infrared and visible sources with the standard fusion metrics.

Writes PREFIX_per_image.csv, PREFIX_summary.{md,csv,json} (mean ± std per method) and, for two or
more methods, PREFIX_comparison.{md,csv} (metrics side by side, best value in bold; MSE and Nabf
are lower-is-better). Every output names the convention the numbers follow. The scoring and the
tables are `fusionlab.metrics.evaluate`, the same code stage 4 scores its eval split with.

Example:
  fusionlab eval --ir data/test/ir --vi data/test/vi --fused ours=out/ours seafusion=ref/seafusion
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fusionlab.commands import _args

HELP = "compute fusion metrics (EN, SD, SF, AG, MI, SCD, VIF, Qabf, SSIM, ...) for fused images"

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
        "--objects",
        type=Path,
        metavar="DATASET",
        help="dataset whose labels / instance masks / scene descriptions give each image's objects (matched by "
        "name, e.g. a `fusionlab data synth` folder): adds object contrast retention split by which modality sees "
        "each object (ground truth, used for scoring only)",
    )
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


class _Objects:
    """The objects of each image from a dataset folder (`--objects`): masks or boxes, and visibility."""

    def __init__(self, dataset, index: dict[str, int]):
        self.dataset, self.index = dataset, index

    def visibility(self, image_id: str):
        return self.dataset.visibility(image_id) if image_id in self.index else None

    def batch(self, image_id: str, shape) -> dict:
        """A one-image batch ({"instances"} and/or {"boxes"}) as the retention metric reads it."""
        import torch

        from fusionlab.errors import DataError

        if image_id not in self.index:
            return {}
        sample = self.dataset[self.index[image_id]]
        if tuple(sample.size) != tuple(shape):
            raise DataError(f"--objects: '{image_id}' is {sample.size[1]}x{sample.size[0]} in the dataset but "
                            f"{shape[1]}x{shape[0]} in --ir; pass the dataset the images came from")
        out = {}
        if sample.instances is not None:
            out["instances"] = sample.instances[None]
        if sample.boxes is not None:
            out["boxes"] = torch.cat([torch.zeros(len(sample.boxes), 1), sample.boxes.float()], 1)
        return out


def _objects(root: Path, ids: list[str]) -> _Objects:
    from fusionlab.data.datasets import open_dataset
    from fusionlab.errors import DataError

    dataset = open_dataset(root, strict=False)
    index = {sid: k for k, sid in enumerate(dataset.ids)}
    if not (dataset.has_boxes or dataset.has_masks):
        raise DataError(f"--objects '{root}': the dataset has neither labels nor instance masks; pass one that has")
    shared = sum(i in index for i in ids)
    if not shared:
        raise DataError(f"--objects '{root}': none of its pair names matches the --ir images; names must match")
    if shared < len(ids):
        print(f"warning: --objects: {len(ids) - shared} of {len(ids)} images are not in '{root}' (no objects scored there)",
              file=sys.stderr)
    return _Objects(dataset, index)


def main(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from fusionlab.errors import DataError
    from fusionlab.metrics.evaluate import Evaluator, FusionQuality, ObjectRetention, Scored, table_path, write_tables
    from fusionlab.metrics.gray import read_gray255

    if args.threads:
        torch.set_num_threads(args.threads)
    evaluator = Evaluator([FusionQuality(args.metrics, args.convention)])
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

    objects = _objects(args.objects, ids) if args.objects else None
    retention = ObjectRetention(objects.visibility) if objects is not None else None
    for m in methods:  # every method gets a row, even one without a single fused image
        evaluator.declare(m)
    total = sum(len(ids) - len(missing[m]) for m in methods)
    with tqdm(total=total, desc=f"eval ({args.convention})", unit="img", file=sys.stderr) as bar:
        for i in ids:
            a, b = read_gray255(ir[i]), read_gray255(vi[i])
            if a.shape != b.shape:
                raise DataError(
                    f"'{ir[i]}' is {a.shape[1]}x{a.shape[0]} but '{vi[i]}' is {b.shape[1]}x{b.shape[0]} "
                    "(WxH); the sources of a pair must be the same size"
                )
            extra = objects.batch(i, a.shape) if objects else {}  # read once per image, shared by every method
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
                gray = [torch.from_numpy(x).double()[None] for x in (a, b, f)]
                try:
                    item = Scored([i], *gray, files=[str(path)], extra=extra)
                    evaluator.update(m, item)
                    if retention is not None:
                        retention.update(m, item)
                except DataError as exc:  # e.g. an image too small for VIF: say which one
                    raise DataError(f"'{path}': {exc}") from None
                bar.update(1)

    written = write_tables(args.out, evaluator, args.convention, missing,
                           retention=retention.compute() if retention is not None else None)
    print(table_path(args.out, "summary.md").read_text())
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
