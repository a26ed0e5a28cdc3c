"""`open_dataset`: any supported layout -> a torch Dataset of `Sample`s, with a CheckReport.

Opening reads only image headers (cheap on large sets) and every annotation file, so corrupt
headers, unpaired files, bad labels and size mismatches are all found before training starts.
`check_dataset` also decodes every image, for bit depth, channels and intensity statistics.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch

from fusionlab.data.checks import CheckReport
from fusionlab.data.formats import Layout, PairRecord, scan
from fusionlab.data.io import probe_image, read_depth, read_instances, read_ir, read_vi
from fusionlab.data.labels import ClassIndex, read_kaist, read_voc, read_yolo
from fusionlab.data.sample import Sample
from fusionlab.data.transforms import _crop_tensor, crop_boxes, resize_to
from fusionlab.errors import DataError

log = logging.getLogger("fusionlab.data")
SIZE_POLICIES = ("error", "resize", "crop")


class PairDataset(torch.utils.data.Dataset):
    """Aligned IR/VIS pairs. `ids`, `classes` and `report` describe what was found."""

    def __init__(
        self,
        layout: Layout,
        records: list[PairRecord],
        boxes: dict,
        sizes: dict,
        report: CheckReport,
        classes: list[str],
        on_size_mismatch: str = "error",
    ):
        self.layout = layout
        self.records = records
        self._boxes = boxes  # id -> float32 [N,5] (only for datasets with annotations)
        self._sizes = sizes  # id -> {"ir": (W,H), "vi": (W,H), "depth": (W,H)|None}
        self.report = report
        self.classes = classes
        self.on_size_mismatch = on_size_mismatch
        self._by_id: dict[str, PairRecord] | None = None  # id -> record, built on first use

    # ------------------------------------------------------------------ views
    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    @property
    def has_boxes(self) -> bool:
        return bool(self._boxes)

    @property
    def has_depth(self) -> bool:
        return bool(self.records) and all(r.depth is not None for r in self.records)

    @property
    def has_masks(self) -> bool:
        return bool(self.records) and all(r.masks is not None for r in self.records)

    def visibility(self, sample_id: str) -> list[dict] | None:
        """Each labelled object's `visible_in` ({"ir": bool, "vi": bool}, in label-row order) from the
        pair's scene description, or None where the dataset does not record it. Ground truth for
        scoring only: it is never part of a Sample, so it cannot reach a model input."""
        from fusionlab.data.scenes import read_visibility

        if self._by_id is None:
            self._by_id = {r.id: r for r in self.records}
        rec = self._by_id.get(sample_id)
        if rec is None:
            raise KeyError(f"no pair '{sample_id}' in '{self.report.root}'")
        return read_visibility(rec.scene) if rec.scene is not None else None

    def image_size(self, index: int) -> tuple[int, int]:
        """(H, W) of sample `index` as returned (after any size fix), without decoding it."""
        s = self._sizes[self.records[index].id]
        (iw, ih), (vw, vh) = s["ir"], s["vi"]
        if self.on_size_mismatch == "crop":
            dw, dh = s["depth"] or (vw, vh)
            return min(ih, vh, dh), min(iw, vw, dw)
        return vh, vw

    @property
    def uniform_size(self) -> bool:
        return len({self.image_size(i) for i in range(len(self))}) <= 1

    def select(self, indices) -> "PairDataset":
        """A dataset over a subset of the pairs (same files, classes and report)."""
        view = copy.copy(self)
        view.records = [self.records[i] for i in indices]
        view._by_id = None
        return view

    def __len__(self) -> int:
        return len(self.records)

    # ------------------------------------------------------------------ loading
    def __getitem__(self, index: int) -> Sample:
        rec = self.records[index]
        ir, ir_info = read_ir(rec.ir)
        vi, vi_info = read_vi(rec.vi)
        ir_t = torch.from_numpy(ir)[None]
        vi_t = torch.from_numpy(vi).permute(2, 0, 1).contiguous()
        depth_t = torch.from_numpy(read_depth(rec.depth))[None] if rec.depth is not None else None
        inst_t = torch.from_numpy(read_instances(rec.masks))[None] if rec.masks is not None else None
        boxes = torch.from_numpy(self._boxes.get(rec.id, np.zeros((0, 5), np.float32))) if self.has_boxes else None
        size = tuple(vi_t.shape[-2:])
        if self.on_size_mismatch == "crop":
            h = min(ir_t.shape[-2], size[0], *(depth_t.shape[-2:-1] if depth_t is not None else ()))
            w = min(ir_t.shape[-1], size[1], *(depth_t.shape[-1:] if depth_t is not None else ()))
            if boxes is not None:
                boxes = crop_boxes(boxes, size, (size[0] - h) // 2, (size[1] - w) // 2, (h, w))
            ir_t, vi_t = _center(ir_t, h, w), _center(vi_t, h, w)
            depth_t = None if depth_t is None else _center(depth_t, h, w)
            inst_t = None if inst_t is None else _center(inst_t, h, w)
        elif self.on_size_mismatch == "resize":  # boxes are normalised to the VIS frame: unchanged
            ir_t = resize_to(ir_t, size)
            depth_t = None if depth_t is None else resize_to(depth_t, size, nearest=True)
            inst_t = None if inst_t is None else resize_to(inst_t, size, nearest=True)
        elif tuple(ir_t.shape[-2:]) != size or (depth_t is not None and tuple(depth_t.shape[-2:]) != size):
            raise DataError(  # header and decoded sizes disagree (rare: EXIF-rotated or odd TIFFs)
                f"'{rec.ir}' ({ir_t.shape[-1]}x{ir_t.shape[-2]}) and '{rec.vi}' ({size[1]}x{size[0]}) differ in size; "
                "set data.on_size_mismatch: resize or crop"
            )
        return Sample(
            id=rec.id,
            ir=ir_t,
            vi=vi_t,
            depth=depth_t,
            boxes=boxes,
            caption=self.layout.captions.get(rec.id),
            instances=inst_t,
            meta={
                "vi_gray": vi_info.gray,
                "bit_depth": max(ir_info.bit_depth, vi_info.bit_depth),
                "ir_bit_depth": ir_info.bit_depth,
                "vi_bit_depth": vi_info.bit_depth,
                "path_ir": str(rec.ir),
                "path_vi": str(rec.vi),
                "format": self.layout.format,
            },
        )


def _center(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    H, W = x.shape[-2:]
    return _crop_tensor(x, (H - h) // 2, (W - w) // 2, h, w)


def _parse_boxes(rec: PairRecord, classes: ClassIndex, n_fixed: int | None, vi_size: tuple[int, int]) -> np.ndarray:
    w, h = vi_size
    if rec.label_format == "yolo":
        return read_yolo(rec.labels, n_fixed)
    if rec.label_format == "voc":
        return read_voc(rec.labels, classes, w, h)
    return read_kaist(rec.labels, classes, w, h)


def open_dataset(
    root,
    format: str = "auto",
    split: str | None = None,
    on_size_mismatch: str = "error",
    *,
    classes: list[str] | None = None,
    deep: bool = False,
    strict: bool = True,
) -> PairDataset:
    """Open the pairs under `root` (any supported layout), skipping and listing bad files.

    Raises DataError when nothing usable is left, or (with `strict`) when partners differ in size
    under `on_size_mismatch="error"`. `deep` decodes every image for the report's statistics.
    """
    if on_size_mismatch not in SIZE_POLICIES:
        raise DataError(f"on_size_mismatch '{on_size_mismatch}' is not one of {', '.join(SIZE_POLICIES)}")
    root = Path(root).expanduser()
    report = CheckReport(root=str(root), deep=deep)
    layout = scan(root, format, split, report)
    class_index = ClassIndex(classes, fixed=True) if classes else layout.classes
    n_fixed = len(class_index.names) if class_index.fixed else None
    has_labels = any(r.labels is not None for r in layout.records)

    kept, boxes, sizes, mismatched = [], {}, {}, []
    for rec in layout.records:
        try:
            size = {"ir": probe_image(rec.ir), "vi": probe_image(rec.vi)}
            size["depth"] = probe_image(rec.depth) if rec.depth is not None else None
            if deep:
                _deep_read(rec, report)
        except DataError as exc:
            report.add("corrupt", _offending_path(exc, rec), f"{exc}; pair '{rec.id}' skipped")
            continue
        if size["ir"] != size["vi"] or (size["depth"] is not None and size["depth"] != size["vi"]):
            other, other_size = (rec.ir, size["ir"]) if size["ir"] != size["vi"] else (rec.depth, size["depth"])
            msg = (
                f"'{other}' is {other_size[0]}x{other_size[1]} but its partner '{rec.vi}' is "
                f"{size['vi'][0]}x{size['vi'][1]}"
            )
            report.add(
                "size_mismatch", other, msg + ("" if on_size_mismatch == "error" else f"; fixed by {on_size_mismatch}")
            )
            mismatched.append(msg)
        if rec.masks is not None:
            rec = _checked_mask(rec, size["vi"], report, deep)
        if rec.labels is not None:
            try:
                boxes[rec.id] = _parse_boxes(rec, class_index, n_fixed, size["vi"])
            except DataError as exc:
                report.add("labels", rec.labels, f"{exc}; pair '{rec.id}' skipped")
                continue
        elif has_labels:
            boxes[rec.id] = np.zeros((0, 5), np.float32)  # no label file: an image without objects
        kept.append(rec)
        sizes[rec.id] = size

    names = class_index.names
    if boxes and not names:  # YOLO labels without classes.txt
        top = max((int(b[:, 0].max()) for b in boxes.values() if len(b)), default=0)
        names = [f"class{i}" for i in range(top + 1)]
    dataset = PairDataset(layout, kept, boxes, sizes, report, list(names), on_size_mismatch)
    report.pairs = len(kept)
    report.sizes.update((w, h) for h, w in (dataset.image_size(i) for i in range(len(kept))))
    report.with_depth = sum(r.depth is not None for r in kept)
    report.with_labels = sum(r.labels is not None for r in kept)
    report.with_captions = sum(r.id in layout.captions for r in kept)
    if not kept:
        raise DataError(f"no usable pairs under '{root}':\n" + "\n".join(report.problem_lines(20)))
    if mismatched and on_size_mismatch == "error" and strict:
        shown = "; ".join(mismatched[:5]) + (f"; and {len(mismatched) - 5} more" if len(mismatched) > 5 else "")
        raise DataError(
            f"{len(mismatched)} pair(s) under '{root}' differ in size: {shown}. Set data.on_size_mismatch: "
            "resize (IR and depth scaled to the visible size) or crop (all centre-cropped to the common size)"
        )
    if report.problems and strict:
        log.warning(
            "%s: %d problem(s), bad files skipped:\n%s", root, len(report.problems), "\n".join(report.problem_lines(10))
        )
    return dataset


def _checked_mask(rec: PairRecord, vi_size: tuple[int, int], report: CheckReport, deep: bool) -> PairRecord:
    """The record, without its instance mask when that is unreadable or not the pair's size: masks
    only serve scoring, so a bad one is reported and dropped, and the pair stays usable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(rec.masks) as im:  # header only: size and pixel format
            mask_size, mode = im.size, im.mode
        if mode not in ("L", "I", "I;16", "I;16B", "I;16L"):
            raise DataError(f"'{rec.masks}' is a {mode} image; instance masks are single-channel 8- or 16-bit "
                            "PNGs of object ids")
        if deep:
            read_instances(rec.masks)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        report.add("masks", rec.masks, f"'{rec.masks}' is not a readable instance mask ({exc}); mask ignored")
        return dataclasses.replace(rec, masks=None)
    except DataError as exc:
        report.add("masks", rec.masks, f"{exc}; mask ignored")
        return dataclasses.replace(rec, masks=None)
    if mask_size != vi_size:
        report.add("masks", rec.masks, f"'{rec.masks}' is {mask_size[0]}x{mask_size[1]} but its pair is "
                   f"{vi_size[0]}x{vi_size[1]}; mask ignored")
        return dataclasses.replace(rec, masks=None)
    return rec


def check_dataset(root, format: str = "auto", split: str | None = None, on_size_mismatch: str = "error") -> CheckReport:
    """Decode every file and return the full report (size mismatches are listed, not raised)."""
    return open_dataset(root, format, split, on_size_mismatch, deep=True, strict=False).report


def _deep_read(rec: PairRecord, report: CheckReport) -> None:
    ir, ir_info = read_ir(rec.ir)
    vi, vi_info = read_vi(rec.vi)
    if rec.depth is not None:
        read_depth(rec.depth)
    for mod, x, info in (("ir", ir, ir_info), ("vi", vi, vi_info)):
        report.bit_depth[mod][info.bit_depth] += 1
        report.channels[mod][info.channels] += 1
        report.stats[mod].add(x[::2, ::2])


def _offending_path(exc: DataError, rec: PairRecord) -> str:
    text = str(exc)
    for p in (rec.ir, rec.vi, rec.depth):
        if p is not None and str(p) in text:
            return str(p)
    return str(rec.ir)
