"""Pairing by file stem and the CheckReport: every bad input is listed with the file it concerns.

Opening a dataset never stops at the first bad file: problems are collected, bad pairs are
skipped, and the report says which files were skipped and why. Only problems that make the
whole dataset unusable (no pairs, sizes that disagree under `on_size_mismatch: error`) raise.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Problem:
    kind: str  # "unpaired" | "duplicate" | "corrupt" | "size_mismatch" | "labels" | "captions" | "masks"
    path: str  # the offending file
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"


@dataclass
class ChannelStats:
    """Running intensity statistics of one modality (values in [0,1])."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    lo: float = 1.0
    hi: float = 0.0

    def add(self, x: np.ndarray) -> None:
        x = x.astype(np.float64, copy=False)
        self.n += x.size
        self.total += float(x.sum())
        self.total_sq += float((x * x).sum())
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))

    def describe(self) -> str:
        if not self.n:
            return "n/a"
        mean = self.total / self.n
        std = max(self.total_sq / self.n - mean * mean, 0.0) ** 0.5
        return f"mean {mean:.3f}  std {std:.3f}  min {self.lo:.3f}  max {self.hi:.3f}"


@dataclass
class CheckReport:
    """What opening (or checking) a dataset found."""

    root: str
    format: str = "?"
    split: str | None = None
    pairs: int = 0
    problems: list[Problem] = field(default_factory=list)
    sizes: Counter = field(default_factory=Counter)  # (W, H) -> count
    # filled by a deep check (every image decoded):
    bit_depth: dict[str, Counter] = field(default_factory=lambda: {"ir": Counter(), "vi": Counter()})
    channels: dict[str, Counter] = field(default_factory=lambda: {"ir": Counter(), "vi": Counter()})
    stats: dict[str, ChannelStats] = field(default_factory=lambda: {"ir": ChannelStats(), "vi": ChannelStats()})
    with_depth: int = 0
    with_labels: int = 0
    with_captions: int = 0
    deep: bool = False

    def add(self, kind: str, path: str | Path, message: str) -> None:
        self.problems.append(Problem(kind, str(path), message))

    def of_kind(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary_lines(self) -> list[str]:
        where = self.root + (f" (split {self.split})" if self.split else "")
        lines = [f"dataset  {where}", f"format   {self.format}", f"pairs    {self.pairs}"]
        if self.sizes:
            common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in self.sizes.most_common(5))
            more = f" and {len(self.sizes) - 5} more" if len(self.sizes) > 5 else ""
            ws = [w for w, _ in self.sizes]
            hs = [h for _, h in self.sizes]
            lines.append(
                f"sizes    {len(self.sizes)} distinct (W x H {min(ws)}-{max(ws)} x {min(hs)}-{max(hs)}): {common}{more}"
            )
        lines.append(f"extras   depth {self.with_depth}, labels {self.with_labels}, captions {self.with_captions}")
        if self.deep:
            for mod in ("ir", "vi"):
                bits = ", ".join(f"{b}-bit ({n})" for b, n in sorted(self.bit_depth[mod].items()))
                chans = ", ".join(f"{'gray' if c == 1 else 'RGB'} ({n})" for c, n in sorted(self.channels[mod].items()))
                lines.append(f"{mod:<8} {bits}; {chans}; {self.stats[mod].describe()}")
        return lines

    def problem_lines(self, limit: int | None = None) -> list[str]:
        shown = self.problems if limit is None else self.problems[:limit]
        lines = [f"  {p}" for p in shown]
        if limit is not None and len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more (run `fusionlab data check {self.root}`)")
        return lines

    def text(self, limit: int | None = None) -> str:
        counts = Counter(p.kind for p in self.problems)
        head = "problems " + (", ".join(f"{k} {n}" for k, n in sorted(counts.items())) if counts else "none")
        return "\n".join(self.summary_lines() + [head] + self.problem_lines(limit))


def pair_folders(ir_dir: str | Path, vi_dir: str | Path, report: CheckReport,
                 labels: tuple[str, str] = ("--ir", "--vi")) -> list[tuple[str, Path, Path]]:
    """The images of two flat folders paired by stem (hidden files ignored); unpaired and duplicate
    files are reported in `report` and left out. A missing folder is a DataError naming it."""
    from fusionlab.data.io import is_image
    from fusionlab.errors import DataError

    ir_dir, vi_dir = Path(ir_dir), Path(vi_dir)
    for label, folder in zip(labels, (ir_dir, vi_dir), strict=True):
        if not folder.is_dir():
            raise DataError(f"{label} '{folder}' is not a folder; pass the folder that holds the images")
    return pair_by_stem(sorted(p for p in ir_dir.iterdir() if is_image(p)),
                        sorted(p for p in vi_dir.iterdir() if is_image(p)), report, ir_dir, vi_dir)


def pair_by_stem(
    ir_files: list[Path], vi_files: list[Path], report: CheckReport, ir_dir: Path, vi_dir: Path
) -> list[tuple[str, Path, Path]]:
    """Match files by stem; unmatched and duplicate stems are reported, never silently dropped."""

    def by_stem(files: list[Path]) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for f in sorted(files):
            if f.stem in found:
                report.add("duplicate", f, f"'{f}' has the same stem as '{found[f.stem]}'; only the latter is used")
                continue
            found[f.stem] = f
        return found

    irs, vis = by_stem(ir_files), by_stem(vi_files)
    for stem in sorted(irs.keys() - vis.keys()):
        report.add("unpaired", irs[stem], f"'{irs[stem]}' has no visible partner '{stem}.*' in '{vi_dir}'; skipped")
    for stem in sorted(vis.keys() - irs.keys()):
        report.add("unpaired", vis[stem], f"'{vis[stem]}' has no infrared partner '{stem}.*' in '{ir_dir}'; skipped")
    return [(stem, irs[stem], vis[stem]) for stem in sorted(irs.keys() & vis.keys())]
