"""Caption files: one reader for the dataset's `captions.jsonl`, stage 3's output and user files.

A caption file maps a sample id (the image's file stem) to its text: JSONL with one
`{"id": ..., "caption": ...}` object per line, or CSV with an `id` column. A row may give
`caption_ir` / `caption_vi` instead of (or beside) `caption`, as stage 3 writes them.

Strict callers (`fuse --captions`, the `file` captioner) stop at the first bad row with its
line number; the dataset scanner passes `on_bad` to report the row and keep the rest.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

from fusionlab.errors import DataError

TEXT_KEYS = ("caption", "caption_ir", "caption_vi")
ROW_HINT = '{"id": ..., "caption": ...}'


def _rows(path: Path) -> list[tuple[int, object]]:
    """(line number, parsed row or the JSON error message) for every non-empty row."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as fh:
            return [(n, row) for n, row in enumerate(csv.DictReader(fh), start=2)]
    out: list[tuple[int, object]] = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError as exc:
            out.append((n, f"not valid JSON ({exc.msg})"))
    return out


def read_caption_rows(path: str | Path, *, on_bad: Callable[[str], None] | None = None,
                      missing_hint: str = "") -> dict[str, dict[str, str]]:
    """id -> {"caption" and/or "caption_ir", "caption_vi"} (non-empty texts only).

    A bad row raises DataError naming `path:line`, or is passed to `on_bad(message)` and skipped.
    A missing file raises DataError ending with `missing_hint` (e.g. which option to fix).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"captions file '{path}' does not exist{'; ' + missing_hint if missing_hint else ''}")
    out: dict[str, dict[str, str]] = {}
    for n, row in _rows(path):
        problem = row if isinstance(row, str) else None
        if problem is None and (not isinstance(row, dict) or "id" not in row
                                or not any(row.get(k) not in (None, "") for k in TEXT_KEYS)):
            problem = "needs 'id' and 'caption' (or 'caption_ir' / 'caption_vi')"
        if problem is not None:
            message = f"{path}:{n}: {problem}; one object per line: {ROW_HINT}"
            if on_bad is None:
                raise DataError(message)
            on_bad(message)
            continue
        out[str(row["id"])] = {k: str(row[k]) for k in TEXT_KEYS if row.get(k) not in (None, "")}
    return out


def caption_text(row: dict[str, str], separator: str = " ") -> str:
    """The caption of a row: `caption`, else the IR and VIS captions joined."""
    if "caption" in row:
        return row["caption"]
    return separator.join(t for t in (row.get("caption_ir", ""), row.get("caption_vi", "")) if t)


def read_captions(path: str | Path, *, on_bad: Callable[[str], None] | None = None,
                  missing_hint: str = "") -> dict[str, str]:
    """id -> caption text (see `read_caption_rows` for the row format and errors)."""
    rows = read_caption_rows(path, on_bad=on_bad, missing_hint=missing_hint)
    return {sample_id: caption_text(row) for sample_id, row in rows.items()}
