"""Box annotations in the formats datasets ship: YOLO txt, Pascal VOC XML, KAIST bbGt txt.

All become float32 [N,5] (class, cx, cy, w, h) normalised to the image size. A malformed file
raises DataError naming the file and the line, so the dataset can skip that pair and list it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fusionlab.errors import DataError

EMPTY = np.zeros((0, 5), np.float32)


class ClassIndex:
    """Maps class names to indices; `fixed` lists refuse unknown names, open ones grow."""

    def __init__(self, names: list[str] | None = None, *, fixed: bool = False, aliases: dict | None = None):
        self.names = list(names or [])
        self.fixed = fixed
        self.aliases = {k.lower(): v for k, v in (aliases or {}).items()}

    def index(self, name: str, path: Path) -> int:
        key = self.aliases.get(name.strip().lower(), name.strip().lower())
        lowered = [n.lower() for n in self.names]
        if key in lowered:
            return lowered.index(key)
        if self.fixed:
            raise DataError(
                f"'{path}': class '{name}' is not one of {self.names}; set `data.classes` to the full list of class names"
            )
        self.names.append(key)
        return len(self.names) - 1


def _xyxy_to_yolo(rows: list[tuple[int, float, float, float, float]], width: int, height: int) -> np.ndarray:
    if not rows:
        return EMPTY.copy()
    a = np.array(rows, np.float32)
    x0 = np.clip(a[:, 1], 0, width)
    y0 = np.clip(a[:, 2], 0, height)
    x1 = np.clip(a[:, 3], 0, width)
    y1 = np.clip(a[:, 4], 0, height)
    keep = (x1 - x0 >= 1) & (y1 - y0 >= 1)
    out = np.stack([a[:, 0], (x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height], 1)
    return out[keep].astype(np.float32)


def read_yolo(path: Path, num_classes: int | None = None) -> np.ndarray:
    """`cls cx cy w h` per line, already normalised."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) != 5:
                raise ValueError(f"expected 5 numbers, got {len(parts)}")
            cls, *box = float(parts[0]), *map(float, parts[1:])
            if cls != int(cls) or cls < 0 or (num_classes is not None and cls >= num_classes):
                raise ValueError(f"class {parts[0]} is not an index below {num_classes}")
            if not all(0.0 <= v <= 1.0 for v in box):
                raise ValueError("coordinates must be normalised to [0, 1]")
        except ValueError as exc:
            raise DataError(f"'{path}' line {n}: {exc} (YOLO format: `class cx cy w h`)") from None
        rows.append([cls, *box])
    return np.array(rows, np.float32).reshape(-1, 5)


def read_voc(path: Path, classes: ClassIndex, width: int, height: int) -> np.ndarray:
    """Pascal VOC XML (LLVIP, M3FD): <object><name/><bndbox><xmin/>...</bndbox></object>."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
        rows = []
        for obj in root.iter("object"):
            name = obj.findtext("name")
            bb = obj.find("bndbox")
            if name is None or bb is None:
                raise ValueError("an <object> lacks <name> or <bndbox>")
            coords = [float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
            rows.append((classes.index(name, path), *coords))
    except (ET.ParseError, ValueError, TypeError) as exc:
        raise DataError(f"'{path}' is not valid Pascal VOC XML: {exc}") from None
    return _xyxy_to_yolo(rows, width, height)


def read_kaist(path: Path, classes: ClassIndex, width: int, height: int) -> np.ndarray:
    """KAIST bbGt: a `% bbGt version=3` header, then `label x y w h ...` in pixels."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("%"):
            continue
        try:
            x, y, w, h = map(float, parts[1:5])
        except ValueError:
            raise DataError(f"'{path}' line {n}: expected `label x y w h ...` (KAIST bbGt format)") from None
        rows.append((classes.index(parts[0], path), x, y, x + w, y + h))
    return _xyxy_to_yolo(rows, width, height)
