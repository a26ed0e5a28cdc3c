"""Throughput of `fusionlab fuse` on this machine: pairs/s end to end (read, fuse, write PNG) on
640x480 pairs, with the shipped model, and the fusion alone in ms per pair.

Uses ../shared msrs-mini (640x480) when present, else generated 640x480 pairs; the folder is
fused `--rounds` times into fresh output folders and the median round is reported, with the load
average at the time (other jobs on the CPU slow it down; compare runs taken at similar load).

    .venv/bin/python benchmarks/bench_fuse.py [--threads 2] [--checkpoint DIR|NAME] [--device cuda --precision bf16]
"""

from __future__ import annotations

import argparse
import json
import os
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
    p.add_argument("--checkpoint", default=None, help="fusion model folder or shipped name (default: the shipped model)")
    p.add_argument("--rounds", type=int, default=5, help="times the folder is fused end to end")
    p.add_argument("--repeats", type=int, default=20, help="timed calls of the fusion alone")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="32", choices=["32", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (as `fusionlab fuse --threads`)")
    p.add_argument("--json", default=None, help="also write the numbers here")
    args = p.parse_args()

    from fusionlab.commands.fuse import quiet_openmp

    quiet_openmp()  # as `fusionlab fuse` does, before torch loads
    import torch

    torch.set_num_threads(args.threads)
    from fusionlab.inference import _load, fuse_folders, fuse_image

    load = os.getloadavg()
    net = _load(args.checkpoint, echo=lambda *_: None).to(args.device)
    ir, vi = torch.rand(1, 1, 480, 640), torch.rand(1, 3, 480, 640)
    for _ in range(3):  # warm-up (allocator, kernels)
        fuse_image(net, ir, vi, device=args.device, precision=args.precision)
    wall = []
    for _ in range(args.repeats):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        fuse_image(net, ir, vi, device=args.device, precision=args.precision)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ir_dir, vi_dir = _pairs_dir(tmp / "pairs", 16)
        rounds, cpu = [], []
        for r in range(args.rounds):
            t, c = time.perf_counter(), time.process_time()
            report = fuse_folders(args.checkpoint, ir_dir, vi_dir, tmp / f"out{r}", device=args.device,
                                  precision=args.precision, progress=False, echo=lambda *_: None)
            rounds.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            assert report.ok, report.summary()
        n_pairs = len(report.written)

    e2e = statistics.median(rounds) / n_pairs
    result = {
        "pair": "640x480",
        "device": args.device,
        "precision": args.precision,
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15": [round(v, 2) for v in load],
        "pairs_per_s_end_to_end": round(1.0 / e2e, 1),
        "end_to_end_ms_per_pair": round(1000 * e2e, 1),
        "end_to_end_cpu_ms_per_pair": round(1000 * statistics.median(cpu) / n_pairs, 1),
        "pairs_per_round": n_pairs,
        "fuse_ms_median": round(1000 * statistics.median(wall), 1),
        "fuse_ms_min": round(1000 * min(wall), 1),
        "params": sum(p.numel() for p in net.parameters()),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
