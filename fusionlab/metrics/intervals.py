"""Spread over repeated seeds: mean with a Student-t confidence interval, and paired differences.

A difference between two configurations counts only with several seeds and an interval: with n
seeds, the interval is mean ± t_{(1+level)/2, n-1} · sd / sqrt(n) (sd with n-1 in the
denominator). One seed gives no interval (NaN half-width), never a zero one. Differences are
paired by seed (same seed, same data split), which removes the part of the run-to-run noise the
two configurations share.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

LEVEL = 0.95


def mean_interval(values: Iterable[float], level: float = LEVEL) -> dict:
    """{"mean", "sd", "n", "half", "low", "high"} of the finite values; NaN fields where undefined."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    nan = float("nan")
    if n == 0:
        return {"mean": nan, "sd": nan, "n": 0, "half": nan, "low": nan, "high": nan}
    mean = sum(xs) / n
    if n == 1:
        return {"mean": mean, "sd": nan, "n": 1, "half": nan, "low": nan, "high": nan}
    from scipy.special import stdtrit  # the Student-t quantile (lighter to import than scipy.stats)

    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stdtrit(n - 1, (1 + level) / 2)) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "n": n, "half": half, "low": mean - half, "high": mean + half}


def paired_difference(values: dict, reference: dict, level: float = LEVEL) -> dict:
    """mean_interval of values[s] - reference[s] over the seeds s both have a finite value for."""
    diffs = []
    for seed, v in values.items():
        r = reference.get(seed)
        if v is not None and r is not None and math.isfinite(float(v)) and math.isfinite(float(r)):
            diffs.append(float(v) - float(r))
    return mean_interval(diffs, level)


def excludes_zero(stats: dict) -> bool:
    """True when the interval exists and does not contain 0."""
    return stats["n"] >= 2 and math.isfinite(stats["half"]) and (stats["low"] > 0 or stats["high"] < 0)


def format_interval(stats: dict, digits: int = 4) -> str:
    """`0.512 ± 0.031` (`0.512` alone for one seed, `–` for none)."""
    if stats["n"] == 0:
        return "–"
    mean = f"{stats['mean']:.{digits}g}"
    return mean if not math.isfinite(stats["half"]) else f"{mean} ± {stats['half']:.2g}"
