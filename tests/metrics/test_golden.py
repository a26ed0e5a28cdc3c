"""Golden test: our `cddfuse` metrics against the published evaluator's numbers in ../shared/reference.

Each value must agree within 1e-4 relative or 1e-3 absolute. The full check (128 rows) is slow;
a few rows run in the normal suite. The worst deviation per metric is printed (`pytest -s`).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from fusionlab.metrics.functional import fusion_metrics
from fusionlab.metrics.gray import read_gray255

GOLDEN = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "SSIM255", "CC", "PSNR", "MSE")
SOURCES = {"roadscene-test": "datasets/roadscene/test", "msrs-mini": "datasets/msrs-mini"}


def _rows(shared: Path) -> list[tuple[Path, Path, Path, dict]]:
    out = []
    for ds, src in SOURCES.items():
        with open(shared / "reference" / ds / "metrics.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                stem = Path(row["image"]).stem
                ir = next((shared / src / "ir").glob(stem + ".*"))
                vi = next((shared / src / "vi").glob(stem + ".*"))
                out.append((ir, vi, shared / "reference" / ds / row["fused_file"], row))
    return out


def _check(rows) -> dict[str, tuple[float, float, str]]:
    worst: dict[str, tuple[float, float, str]] = {}
    failures = []
    for ir, vi, fused, row in rows:
        a, b, f = (torch.from_numpy(read_gray255(p))[None] for p in (ir, vi, fused))
        ours = fusion_metrics(f, a, b, "cddfuse", GOLDEN)
        for name in GOLDEN:
            ref, got = float(row[name]), float(ours[name][0])
            dev, rel = abs(got - ref), abs(got - ref) / max(abs(ref), 1e-12)
            where = f"{row['dataset']}/{row['method']}/{row['image']}"
            if rel > worst.get(name, (0.0, -1.0, ""))[1]:
                worst[name] = (dev, rel, where)
            if not (dev <= 1e-3 or rel <= 1e-4):
                failures.append(f"{name} {where}: ours {got:.6f} vs reference {ref:.6f}")
    print("\nworst deviation per metric (abs, rel, row):")
    for name, (dev, rel, where) in worst.items():
        print(f"  {name:8s} abs {dev:.3g}  rel {rel:.3g}  {where}")
    assert not failures, "\n".join(failures)
    return worst


def test_golden_subset(shared_dir):
    rows = _rows(shared_dir)
    assert len(rows) == 128, "the reference holds 128 (method, image) rows"
    # one row per (dataset, method): both image sizes, both fused kinds (network output and mean)
    picked = {}
    for r in rows:
        picked.setdefault((r[3]["dataset"], r[3]["method"]), r)
    worst = _check(list(picked.values()))
    assert set(worst) == set(GOLDEN)


@pytest.mark.slow
def test_golden_all_rows(shared_dir):
    worst = _check(_rows(shared_dir))
    assert set(worst) == set(GOLDEN)
