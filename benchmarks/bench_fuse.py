"""Speed of `fusionlab fuse` with the `baseline` network: ms per 640x480 pair on this machine.

Two numbers: the fusion itself (`fuse_image`: contrast stats, net, colour restore) and the whole
command path per pair (read JPEG/PNG, fuse, write PNG) over a folder. Uses ../shared msrs-mini
(640x480) when present, else generated 640x480 pairs. Weights do not change the speed, so a
fresh baseline is used unless --checkpoint is given.

    .venv/bin/python benchmarks/bench_fuse.py [--checkpoint runs/.../fusion] [--device cuda --precision bf16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"


def _pairs_dir(tmp: Path, n: int) -> tuple[Path, Path]:
    msrs = SHARED / "datasets" / "msrs-mini"
    if (msrs / "ir").is_dir():
        return msrs / "ir", msrs / "vi"
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    for d in ("ir", "vi"):
        (tmp / d).mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(tmp / "ir" / f"{i}.png"), rng.integers(0, 255, (480, 640), dtype=np.uint8))
        cv2.imwrite(str(tmp / "vi" / f"{i}.png"), rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    return tmp / "ir", tmp / "vi"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="32", choices=["32", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (default 0 = torch's choice, as `fusionlab fuse`)")
    p.add_argument("--json", default=None, help="also write the numbers here")
    args = p.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from fusionlab.inference import fuse_folders, fuse_image
    from fusionlab.models.fusion import build_fusion_model, load_fusion_model, save_fusion_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = args.checkpoint or save_fusion_model(tmp / "fusion", build_fusion_model({"name": "baseline"}))
        net = load_fusion_model(ckpt).to(args.device)
        ir, vi = torch.rand(1, 1, 480, 640), torch.rand(1, 3, 480, 640)
        for _ in range(3):  # warm-up (allocator, kernels)
            fuse_image(net, ir, vi, device=args.device, precision=args.precision)
        wall, cpu = [], []
        for _ in range(args.repeats):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t, c = time.perf_counter(), time.process_time()
            fuse_image(net, ir, vi, device=args.device, precision=args.precision)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        ir_dir, vi_dir = _pairs_dir(tmp / "pairs", 8)
        n_pairs = len(list(ir_dir.iterdir()))
        t = time.perf_counter()
        fuse_folders(ckpt, ir_dir, vi_dir, tmp / "out", device=args.device, precision=args.precision, progress=False)
        e2e = (time.perf_counter() - t) / n_pairs

    result = {
        "pair": "640x480",
        "device": args.device,
        "precision": args.precision,
        "torch_threads": torch.get_num_threads(),
        "fuse_ms_median": round(1000 * statistics.median(wall), 1),
        "fuse_ms_min": round(1000 * min(wall), 1),
        "fuse_cpu_ms_median": round(1000 * statistics.median(cpu), 1),
        "end_to_end_ms_per_pair": round(1000 * e2e, 1),
        "pairs_end_to_end": n_pairs,
        "params": sum(p.numel() for p in net.parameters()),
    }
    if args.device.startswith("cuda"):
        result["images_per_s"] = round(1.0 / statistics.median(wall), 1)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
