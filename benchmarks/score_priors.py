"""Score the baseline net's starting point against other simple fusion rules on the TRAIN split.

The `baseline` preset starts from the pixel-wise maximum of the two sources, each stretched
between its own 0.5 and 99.5 percentiles. That design was first picked by eye on test pairs;
this script repeats the choice on RoadScene *train* pairs only, so the choice does not rest on
test data. It writes one folder of fused PNGs per rule and scores them with `fusionlab eval`:

    .venv/bin/python benchmarks/score_priors.py --out runs/priors-train
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
METRICS = ("EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM")


def rules(ir, y, q: float):
    """{name: fused Y} for gray IR [1,1,H,W] and visible Y [1,1,H,W] in [0, 1]."""
    import torch

    from fusionlab.models.fusion.contrast import stretch_pair

    s_ir, s_y = stretch_pair(ir, y, q)
    return {
        "mean": (ir + y) / 2,
        "max": torch.maximum(ir, y),
        "stretched-mean": (s_ir + s_y) / 2,
        "stretched-max": torch.maximum(s_ir, s_y),  # the baseline net's starting point
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(SHARED / "datasets" / "roadscene" / "train"))
    p.add_argument("--out", default="runs/priors-train")
    p.add_argument("--percentile", type=float, default=0.005)
    args = p.parse_args()

    import torch

    from fusionlab.data.io import read_ir, read_vi, write_image
    from fusionlab.models.fusion.base import restore_colour, rgb_to_y

    data, out = Path(args.data), Path(args.out)
    if not (data / "ir").is_dir() or not (data / "vi").is_dir():
        raise SystemExit(f"'{data}' needs ir/ and vi/ folders (RoadScene train); pass --data")
    stems = sorted(f.stem for f in (data / "ir").iterdir())
    for stem in stems:
        ir_file = next((data / "ir").glob(f"{stem}.*"))
        vi_file = next((data / "vi").glob(f"{stem}.*"))
        ir = torch.from_numpy(read_ir(ir_file)[0])[None, None]
        vi = torch.from_numpy(read_vi(vi_file)[0]).permute(2, 0, 1)[None]
        for name, fused_y in rules(ir, rgb_to_y(vi), args.percentile).items():
            write_image(out / name / f"{stem}.png", restore_colour(fused_y.clamp(0, 1), vi)[0])
    fused = [f"{name}={out / name}" for name in rules(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), 0.0)]
    cmd = [sys.executable, "-m", "fusionlab", "eval", "--ir", str(data / "ir"), "--vi", str(data / "vi"),
           "--fused", *fused, "--metrics", *METRICS, "--convention", "cddfuse", "--strict", "--out", str(out / "eval")]
    print(" ".join(cmd), flush=True)
    raise SystemExit(subprocess.call(cmd))


if __name__ == "__main__":
    main()
