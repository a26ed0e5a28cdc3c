"""Dataset layouts on disk and how to find the pairs in each.

| format  | IR / VIS folders              | boxes                          | extras                  |
|---------|-------------------------------|--------------------------------|-------------------------|
| generic | ir/ + vi/ (TNO, RoadScene, MSRS, synthetic) | labels/*.txt (YOLO) + classes.txt | depth/, masks/, scenes/, captions.jsonl |
| llvip   | infrared/ + visible/ [/<split>] | Annotations/*.xml (VOC)      |                         |
| m3fd    | Ir/ + Vis/                    | labels/*.txt (YOLO) or Annotation(s)/*.xml (VOC) |       |
| kaist   | .../lwir/ + .../visible/ per video | annotations/<set>/<video>/*.txt (bbGt) | depth/ beside lwir/ |

`masks/<id>.png` (instance maps, pixel k+1 = label row k) and `scenes/<id>.json` (scene
descriptions with each object's `visible_in`) are ground truth for scoring only.
Folder names match case-insensitively. A folder that fits no layout gets a DataError that lists
what it found and suggests the renaming that would make it fit.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from fusionlab.data.captions_file import read_captions
from fusionlab.data.checks import CheckReport, pair_by_stem
from fusionlab.data.io import is_image
from fusionlab.data.labels import ClassIndex
from fusionlab.errors import DataError

FORMATS = ("generic", "llvip", "m3fd", "kaist")
MODALITY_DIRS = {
    "generic": ("ir", "vi"),
    "llvip": ("infrared", "visible"),
    "m3fd": ("ir", "vis"),
    "kaist": ("lwir", "visible"),
}
LAYOUT_HELP = (
    "expected ir/ + vi/ (generic: TNO, RoadScene, MSRS, synthetic), infrared/ + visible/ (LLVIP), "
    "Ir/ + Vis/ (M3FD) or <set>/<video>/lwir/ + visible/ (KAIST)"
)
# names people give IR / VIS folders, to suggest the generic names
IR_NAMES = ("ir", "infrared", "thermal", "lwir", "ir_images", "irs", "inf", "therm", "t", "tir", "nir", "flir")
VI_NAMES = ("vi", "vis", "visible", "rgb", "color", "colour", "vis_images", "optical", "v", "eo", "rgb_images")
M3FD_CLASSES = ["people", "car", "bus", "motorcycle", "lamp", "truck"]
KAIST_CLASSES = ["person", "people", "cyclist"]


@dataclass
class PairRecord:
    """Where one pair and its optional extras live on disk."""

    id: str
    ir: Path
    vi: Path
    depth: Path | None = None
    labels: Path | None = None
    label_format: str | None = None  # "yolo" | "voc" | "kaist"
    masks: Path | None = None  # instance map: 8/16-bit PNG, k+1 = the object of label row k
    scene: Path | None = None  # scene description JSON (synthetic scenes: objects' `visible_in`)


@dataclass
class Layout:
    format: str
    root: Path
    records: list[PairRecord]
    classes: ClassIndex
    captions: dict[str, str] = field(default_factory=dict)


def _children(folder: Path) -> dict[str, Path]:
    """Sub-folders by lower-cased name."""
    return {p.name.lower(): p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def _images(folder: Path, recursive: bool = False) -> list[Path]:
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in files if is_image(p))


def _nonempty_images(folder: Path, recursive: bool = False) -> list[Path]:
    found = _images(folder, recursive)
    if not found:
        others = sorted(p.name for p in folder.iterdir())[:5]
        what = f"it holds {', '.join(others)}" if others else "it is empty"
        raise DataError(f"'{folder}' contains no images (.png .jpg .bmp .tif); {what}")
    return found


def _by_stem(folder: Path | None, suffixes: tuple[str, ...]) -> dict[str, Path]:
    if folder is None or not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.rglob("*")) if p.suffix.lower() in suffixes and p.is_file()}


def detect_format(root: Path) -> str | None:
    kids = _children(root)
    if "infrared" in kids and "visible" in kids:
        return "llvip"
    if "ir" in kids and "vis" in kids and "vi" not in kids:
        return "m3fd"
    if "ir" in kids and "vi" in kids:
        return "generic"
    if any(p.is_dir() for p in root.rglob("lwir")):
        return "kaist"
    return None


def layout_error(root: Path, expected: str | None = None) -> DataError:
    """Explain why `root` fits no layout, suggesting the renaming or split that would fix it."""
    if not root.exists():
        return DataError(f"dataset folder '{root}' does not exist")
    if not root.is_dir():
        return DataError(f"dataset root '{root}' is a file; point `data.root` at the folder holding ir/ and vi/")
    kids = _children(root)
    files = [p for p in root.iterdir() if not p.name.startswith(".")]
    if not files:
        return DataError(f"dataset folder '{root}' is empty; {LAYOUT_HELP}")
    splits = [name for name, p in kids.items() if detect_format(p)]
    if splits:
        return DataError(
            f"'{root}' holds splits {', '.join(sorted(splits))}, not pairs: set `data.split: {sorted(splits)[0]}` "
            f"(on the command line `--split {sorted(splits)[0]}`), or point `data.root` at '{root / sorted(splits)[0]}'"
        )
    hint = ""
    ir_guess = next((n for n in kids if n in IR_NAMES or difflib.get_close_matches(n, IR_NAMES, 1, 0.75)), None)
    vi_guess = next(
        (n for n in kids if n != ir_guess and (n in VI_NAMES or difflib.get_close_matches(n, VI_NAMES, 1, 0.75))), None
    )
    if ir_guess and vi_guess:
        hint = f"; rename {kids[ir_guess].name}/ -> ir/ and {kids[vi_guess].name}/ -> vi/ for the generic layout"
    elif ir_guess:
        hint = f"; found an IR folder {kids[ir_guess].name}/ but no visible folder: add vi/ with the partner images"
    elif vi_guess:
        hint = f"; found a visible folder {kids[vi_guess].name}/ but no IR folder: add ir/ with the partner images"
    found = ", ".join(f"{p.name}/" for p in kids.values()) or "no sub-folders (images must sit in ir/ and vi/)"
    what = f"does not look like the {expected} layout" if expected else "has no recognised layout"
    return DataError(f"'{root}' {what}: found {found}; {LAYOUT_HELP}{hint}")


def scan(root: str | Path, format: str = "auto", split: str | None = None, report: CheckReport | None = None) -> Layout:
    """Find the pairs under `root`; problems go to `report`, unusable layouts raise DataError."""
    root = Path(root).expanduser()
    report = report if report is not None else CheckReport(root=str(root))
    if format not in ("auto", *FORMATS):
        raise DataError(f"unknown data.format '{format}'; use auto, {', '.join(FORMATS)}")
    if not root.is_dir():
        raise layout_error(root)
    base = root
    if split and format != "llvip" and not (format == "auto" and detect_format(root) == "llvip"):
        base = _split_dir(root, split)
    fmt = detect_format(base) if format == "auto" else format
    if fmt is None:
        raise layout_error(base)
    layout = {"generic": _scan_generic, "llvip": _scan_llvip, "m3fd": _scan_m3fd, "kaist": _scan_kaist}[fmt](
        base, split if fmt == "llvip" else None, report
    )
    report.format, report.split = fmt, split
    return layout


def _split_dir(root: Path, split: str) -> Path:
    for cand in (root / split, root / "images" / split):
        if cand.is_dir():
            return cand
    kids = sorted(_children(root))
    raise DataError(f"split '{split}' not found under '{root}'; its sub-folders are: {', '.join(kids) or 'none'}")


def _modality_dirs(base: Path, fmt: str) -> tuple[Path, Path]:
    kids = _children(base)
    ir_name, vi_name = MODALITY_DIRS[fmt]
    if ir_name not in kids or vi_name not in kids:
        raise layout_error(base, expected=fmt)
    return kids[ir_name], kids[vi_name]


def _read_classes(base: Path) -> list[str]:
    """The dataset's optional classes.txt: one class name per line (its line order = class ids)."""
    path = base / "classes.txt"
    return [n.strip() for n in path.read_text().splitlines() if n.strip()] if path.is_file() else []


def _read_captions(path: Path, report: CheckReport) -> dict[str, str]:
    """The dataset's optional captions.jsonl; bad lines are reported and skipped."""
    if not path.is_file():
        return {}
    return read_captions(path, on_bad=lambda message: report.add("captions", path, f"{message}; ignored"))


def _pairs(ir_dir: Path, vi_dir: Path, report: CheckReport, recursive: bool = False):
    return pair_by_stem(
        _nonempty_images(ir_dir, recursive), _nonempty_images(vi_dir, recursive), report, ir_dir, vi_dir
    )


def _scan_generic(base: Path, _split, report: CheckReport) -> Layout:
    ir_dir, vi_dir = _modality_dirs(base, "generic")
    kids = _children(base)
    depth = _by_stem(kids.get("depth"), (".png",))
    labels = _by_stem(kids.get("labels"), (".txt",))
    masks = _by_stem(kids.get("masks"), (".png",))
    scenes = _by_stem(kids.get("scenes"), (".json",))
    names = _read_classes(base)
    records = [
        PairRecord(
            stem, ir, vi, depth.get(stem), labels.get(stem), "yolo" if stem in labels else None,
            masks.get(stem), scenes.get(stem),
        )
        for stem, ir, vi in _pairs(ir_dir, vi_dir, report)
    ]
    return Layout(
        "generic", base, records, ClassIndex(names, fixed=bool(names)), _read_captions(base / "captions.jsonl", report)
    )


def _scan_llvip(base: Path, split: str | None, report: CheckReport) -> Layout:
    if split and (base / split).is_dir() and detect_format(base / split) == "llvip":
        base, split = base / split, None  # <root>/<split>/infrared/ variant
    ir_dir, vi_dir = _modality_dirs(base, "llvip")
    if split:
        ir_dir, vi_dir = ir_dir / split, vi_dir / split
        for d in (ir_dir, vi_dir):
            if not d.is_dir():
                raise DataError(f"LLVIP split folder '{d}' does not exist; LLVIP keeps splits as infrared/<split>/")
    kids = _children(base)
    notes = _by_stem(kids.get("annotations") or kids.get("annotation"), (".xml",))
    records = [
        PairRecord(stem, ir, vi, None, notes.get(stem), "voc" if stem in notes else None)
        for stem, ir, vi in _pairs(ir_dir, vi_dir, report, recursive=True)
    ]
    return Layout("llvip", base, records, ClassIndex(["person"]))


def _scan_m3fd(base: Path, _split, report: CheckReport) -> Layout:
    ir_dir, vi_dir = _modality_dirs(base, "m3fd")
    kids = _children(base)
    yolo = _by_stem(kids.get("labels"), (".txt",))
    voc = _by_stem(kids.get("annotation") or kids.get("annotations"), (".xml",))
    records = []
    for stem, ir, vi in _pairs(ir_dir, vi_dir, report):
        fmt = "yolo" if stem in yolo else "voc" if stem in voc else None
        records.append(PairRecord(stem, ir, vi, None, yolo.get(stem) or voc.get(stem), fmt))
    names = _read_classes(base) or M3FD_CLASSES
    return Layout("m3fd", base, records, ClassIndex(names, fixed=True))


def _scan_kaist(base: Path, _split, report: CheckReport) -> Layout:
    """Every `lwir/` folder with a sibling `visible/` is one video; ids are `<set>_<video>_<frame>`."""
    lwir_dirs = sorted(p for p in base.rglob("lwir") if p.is_dir())
    if not lwir_dirs:
        raise layout_error(base, expected="kaist")
    # annotations/ sits beside images/, possibly above `base` when a split (set00) was chosen
    ann_root = next((d / "annotations" for d in (base, *list(base.parents)[:3]) if (d / "annotations").is_dir()), None)
    records = []
    for lwir in lwir_dirs:
        video = lwir.parent
        vis = video / "visible"
        if not vis.is_dir():
            report.add("unpaired", lwir, f"'{lwir}' has no sibling 'visible/' folder; skipped")
            continue
        rel_parts = video.relative_to(ann_root.parent if ann_root is not None else base).parts
        if rel_parts and rel_parts[0].lower() == "images":  # images/set00/V000 -> (set00, V000)
            rel_parts = rel_parts[1:]
        prefix = "_".join(rel_parts)
        notes = {}
        for cand in ([ann_root / Path(*rel_parts)] if ann_root is not None and rel_parts else []) + [
            video / "annotations"
        ]:
            notes.update(_by_stem(cand, (".txt",)))
        depth = _by_stem(video / "depth", (".png",))
        for stem, ir, vi in _pairs(lwir, vis, report):
            rid = f"{prefix}_{stem}" if prefix else stem
            records.append(
                PairRecord(rid, ir, vi, depth.get(stem), notes.get(stem), "kaist" if stem in notes else None)
            )
    if not records:
        raise DataError(f"'{base}': no KAIST lwir/ + visible/ pairs found; {LAYOUT_HELP}")
    return Layout(
        "kaist", base, records, ClassIndex(KAIST_CLASSES, aliases={"person?": "person", "person?a": "person"})
    )
