"""Peak memory of `fusionlab fuse` on one 4096x3072 pair with --tile 512 (goal: < 4 GB RSS).

Runs the real CLI in a child process and reads the child's peak RSS from the OS (ru_maxrss),
so the number includes Python, torch and the decoded images.

    .venv/bin/python benchmarks/bench_fuse_large.py [--tile 512] [--size 4096x3072]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--size", default="4096x3072", help="W x H")
    p.add_argument("--checkpoint", default=None)
    args = p.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))

    import cv2
    import numpy as np

    from fusionlab.models.fusion import build_fusion_model, save_fusion_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = args.checkpoint or str(save_fusion_model(tmp / "fusion", build_fusion_model({"name": "baseline"})))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        (tmp / "ir").mkdir()
        (tmp / "vi").mkdir()
        cv2.imwrite(str(tmp / "ir" / "big.png"), (127 + 100 * np.sin(xx / 37) * np.cos(yy / 53)).astype(np.uint8))
        vi = np.stack([(127 + 100 * np.sin(yy / (29 + 7 * c))).astype(np.uint8) for c in range(3)], axis=2)
        cv2.imwrite(str(tmp / "vi" / "big.png"), vi)
        del yy, xx, vi
        cmd = [sys.executable, "-m", "fusionlab", "fuse", "--checkpoint", ckpt, "--ir", str(tmp / "ir"),
               "--vi", str(tmp / "vi"), "--out", str(tmp / "out"), "--tile", str(args.tile),
               "--overlap", str(args.overlap)]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        wall = time.perf_counter() - t
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: kilobytes
        out_size = cv2.imread(str(tmp / "out" / "big.png")).shape
    result = {"size": f"{w}x{h}", "tile": args.tile, "overlap": args.overlap,
              "peak_rss_mb": round(peak_kb / 1024, 1), "wall_s": round(wall, 1),
              "output_hw": list(out_size[:2])}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
