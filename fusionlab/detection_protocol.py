"""The field's detection protocol: one fresh detector per image set, identical splits and seeds.

Fusion papers compare methods by training a separate YOLO on each method's fused images and
reporting P, R, mAP@0.5 and mAP@0.5:0.95 (e.g. LDFusion §4.3.3, Table 5). Comparing one
detector trained on one image set against others would measure the detector's domain shift,
not the fusion. So every image set (IR only, VIS only, each fused set) gets a detector with the
same architecture, initial weights (seed), batches and schedule, and is evaluated on the same
validation ids.

Images are held in memory as uint8 `[N,3,H,W]` (IR is repeated to three channels so all sets
use the same network), letterboxed once to a common size that is a multiple of the stride.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import Field

from fusionlab.config import Section
from fusionlab.models.detector import DetectionCriterion, DetectorConfig, build_detector, predict


class ProtocolConfig(Section):
    """How each per-set detector is trained."""

    detector: DetectorConfig = DetectorConfig()
    epochs: int = Field(12, gt=0)
    batch_size: int = Field(8, gt=0)  # small batches: more updates for the same compute on small sets
    lr: float = Field(5e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    flip: bool = True  # random horizontal flips (boxes flipped with the image)
    seed: int = 0


# --------------------------------------------------------------------------- image sets


@dataclass
class ImageSet:
    """Images of one set (uint8 [N,3,H,W]) and, per image, boxes [n,5] (class, cx, cy, w, h) normalised."""

    images: torch.Tensor
    boxes: list[torch.Tensor]
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[B,C,H,W] float in [0,1] -> uint8 [B,3,H,W] (1-channel input repeated)."""
    x = x.detach().float().clamp(0, 1)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return (x * 255).round().to(torch.uint8).cpu()


def letterbox(images: list[torch.Tensor], boxes: list[torch.Tensor], imgsz: int, stride: int = 32) -> ImageSet:
    """Resize each [C,H,W] so its long side is `imgsz` and pad right/bottom to one common
    size that is a multiple of `stride`; boxes are re-normalised to the padded canvas."""
    resized = []
    for img in images:
        h, w = img.shape[-2:]
        s = imgsz / max(h, w)
        if abs(s - 1) > 1e-6:
            size = (max(1, round(h * s)), max(1, round(w * s)))
            img = torch.nn.functional.interpolate(img[None].float(), size=size, mode="bilinear",
                                                  align_corners=False, antialias=True)[0]
            img = img.round().clamp(0, 255).to(torch.uint8) if images[0].dtype == torch.uint8 else img
        resized.append(img)
    ch = max(math.ceil(r.shape[-2] / stride) * stride for r in resized)
    cw = max(math.ceil(r.shape[-1] / stride) * stride for r in resized)
    out = torch.full((len(resized), 3, ch, cw), 127, dtype=torch.uint8)
    new_boxes = []
    for i, (img, b) in enumerate(zip(resized, boxes, strict=True)):
        img = img if img.dtype == torch.uint8 else to_uint8(img[None])[0]
        img = img.repeat(3, 1, 1) if img.shape[0] == 1 else img
        h, w = img.shape[-2:]
        out[i, :, :h, :w] = img
        b = b.clone().float().reshape(-1, 5)
        b[:, [1, 3]] *= w / cw
        b[:, [2, 4]] *= h / ch
        new_boxes.append(b)
    return ImageSet(out, new_boxes)


class _SetDataset(torch.utils.data.Dataset):
    def __init__(self, data: ImageSet, flip: bool):
        self.data, self.flip = data, flip

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        img, b = self.data.images[i].float() / 255.0, self.data.boxes[i].clone()
        if self.flip and bool(torch.rand(()) < 0.5):
            img = img.flip(-1)
            b[:, 1] = 1.0 - b[:, 1]
        return img, b


def collate_boxes(items) -> dict:
    """(image, boxes [n,5]) pairs -> {"image": [B,3,H,W], "boxes": [N,6] with the batch index first}."""
    images = torch.stack([im for im, _ in items])
    rows = [torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, (_, b) in enumerate(items)]
    return {"image": images, "boxes": torch.cat(rows, 0) if rows else torch.zeros(0, 6)}


def loader(data: ImageSet, batch_size: int, *, shuffle: bool, flip: bool, seed: int) -> torch.utils.data.DataLoader:
    """A seeded loader: the same seed gives every image set the same batches in the same order."""
    return torch.utils.data.DataLoader(
        _SetDataset(data, flip), batch_size=min(batch_size, len(data)), shuffle=shuffle,
        collate_fn=collate_boxes, generator=torch.Generator().manual_seed(seed),
    )


# --------------------------------------------------------------------------- training


def detector_module(model, cfg: ProtocolConfig):
    """A LightningModule that trains `model` with ultralytics' loss (defined lazily: Lightning import)."""
    import lightning as L

    class DetectorModule(L.LightningModule):
        """Plain supervised detector training on one image set."""

        def __init__(self):
            super().__init__()
            self.model = model
            self.criterion = DetectionCriterion(model, cfg.detector.loss_reduction)
            self.save_hyperparameters(cfg.model_dump())

        def training_step(self, batch, batch_idx):
            loss, items = self.criterion(self.model(batch["image"]), batch["boxes"])
            self.log_dict({"train/loss": loss, "train/box": items[0], "train/cls": items[1], "train/dfl": items[2]},
                          prog_bar=False, batch_size=batch["image"].shape[0])
            return loss

        def configure_optimizers(self):
            return torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                     lr=cfg.lr, weight_decay=cfg.weight_decay)

    return DetectorModule()


def train_detector(train: ImageSet, nc: int, names: list[str], cfg: ProtocolConfig, make_trainer,
                   fit=None) -> torch.nn.Module:
    """Train a fresh detector on `train`.

    `make_trainer(max_epochs)` returns a Lightning Trainer; `fit(trainer, module, dataloader)`
    (default: `trainer.fit`) lets a stage resume from its own checkpoints.
    """
    import lightning as L

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_detector(cfg.detector, nc=nc, names=names)
    module = detector_module(model, cfg)
    trainer = make_trainer(cfg.epochs)
    data = loader(train, cfg.batch_size, shuffle=True, flip=cfg.flip, seed=cfg.seed)
    if fit is None:
        trainer.fit(module, train_dataloaders=data)
    else:
        fit(trainer, module, data)
    return model.eval()


# --------------------------------------------------------------------------- evaluation


def evaluate(model, data: ImageSet, names: list[str], cfg: DetectorConfig, batch_size: int = 16) -> dict:
    """P, R, mAP@0.5, mAP@0.5:0.95 overall and per class, with `fusionlab.metrics.DetectionMetrics`
    (ultralytics' matching and AP). Per-class P and R come from the same accumulated matches."""
    from fusionlab.metrics.detection import DetectionMetrics, yolo_to_xyxy

    metric = DetectionMetrics(names)
    device = next(model.parameters()).device
    h, w = data.images.shape[-2:]
    for start in range(0, len(data), batch_size):
        imgs = data.images[start:start + batch_size].to(device).float() / 255.0
        preds = [p.float().cpu() for p in predict(model, imgs, cfg)]
        targets = [yolo_to_xyxy(b.reshape(-1, 5), w, h).float() for b in data.boxes[start:start + len(preds)]]
        metric.update(preds, targets)
    overall = metric.compute()
    counts = torch.cat([b[:, 0] for b in data.boxes]).long().bincount(minlength=len(names)).tolist() \
        if data.boxes else [0] * len(names)
    out = {"precision": overall["precision"], "recall": overall["recall"], "map50": overall["mAP50"],
           "map50_95": overall["mAP50-95"], "images": len(data), "instances": int(sum(counts)), "per_class": {}}
    p_r = _per_class_precision_recall(metric)
    for i, name in enumerate(names):
        if counts[i]:
            p, r = p_r.get(i, (0.0, 0.0))
            out["per_class"][name] = {"precision": p, "recall": r, "map50": overall.get(f"AP50/{name}", 0.0),
                                      "map50_95": overall.get(f"AP50-95/{name}", 0.0), "instances": int(counts[i])}
    return out


def _per_class_precision_recall(metric) -> dict[int, tuple[float, float]]:
    """Per-class P and R at the max-F1 confidence (ultralytics' ap_per_class), from the metric's state."""
    from ultralytics.utils.metrics import ap_per_class

    if not metric.tp or not metric.target_cls:
        return {}
    tp = torch.cat(metric.tp).cpu().numpy()
    target_cls = torch.cat(metric.target_cls).cpu().numpy()
    if tp.shape[0] == 0 or target_cls.size == 0:
        return {}
    res = ap_per_class(tp, torch.cat(metric.conf).cpu().numpy(), torch.cat(metric.pred_cls).cpu().numpy(), target_cls)
    p, r, classes = res[2], res[3], res[6]
    return {int(c): (float(p[i]), float(r[i])) for i, c in enumerate(classes)}


def run_protocol(sets: dict[str, tuple[ImageSet, ImageSet]], names: list[str], cfg: ProtocolConfig, make_trainer,
                 fit=None, device: str | torch.device = "cpu", models: dict | None = None) -> dict[str, dict]:
    """Train + evaluate one fresh detector per set {name: (train, val)}; returns {name: evaluate(...)}.

    `make_trainer(max_epochs, set_name)` and `fit(trainer, module, dataloader, set_name)` as in
    `train_detector`, with the set's name so each set can log and checkpoint on its own.
    `models`, when given, receives the trained detector of each set.
    """
    results = {}
    for set_name, (train, val) in sets.items():
        model = train_detector(train, len(names), names, cfg, lambda e, s=set_name: make_trainer(e, s),
                               None if fit is None else (lambda t, m, d, s=set_name: fit(t, m, d, s)))
        results[set_name] = evaluate(model.to(device), val, names, cfg.detector, cfg.batch_size)
        if models is not None:
            models[set_name] = model
    return results


# --------------------------------------------------------------------------- tables

COLUMNS = ("set", "class", "images", "instances", "precision", "recall", "map50", "map50_95")


def table_rows(results: dict[str, dict]) -> list[dict]:
    """One row per set ('all' classes) followed by its per-class rows."""
    rows = []
    for set_name, r in results.items():
        rows.append({"set": set_name, "class": "all", **{k: r[k] for k in COLUMNS[2:]}})
        for cls, c in r["per_class"].items():
            rows.append({"set": set_name, "class": cls, "images": r["images"],
                         **{k: c[k] for k in ("instances", "precision", "recall", "map50", "map50_95")}})
    return rows


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def to_markdown(rows: list[dict], title: str = "Detection protocol") -> str:
    head = ["set", "class", "images", "instances", "P", "R", "mAP@0.5", "mAP@0.5:0.95"]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in COLUMNS]
        if row["class"] == "all":
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(results: dict[str, dict], out_dir: str | Path, meta: dict | None = None,
                 title: str = "Detection protocol") -> dict[str, Path]:
    """Write map.json (results + meta), map.csv and map.md atomically into `out_dir`."""
    from fusionlab.artifacts import atomic_write_json, atomic_write_text

    out_dir = Path(out_dir)
    rows = table_rows(results)
    paths = {"map.json": out_dir / "map.json", "map.csv": out_dir / "map.csv", "map.md": out_dir / "map.md"}
    atomic_write_json(paths["map.json"], {"sets": list(results), "results": results, "rows": rows,
                                          **({"meta": meta} if meta else {})})
    atomic_write_text(paths["map.csv"], to_csv(rows))
    atomic_write_text(paths["map.md"], to_markdown(rows, title))
    return paths


# --------------------------------------------------------------------------- folders (detect-eval)


def load_folder_sets(labels_root: str | Path, fused: dict[str, str | Path], *, format: str = "auto",
                     split: str | None = None, val_fraction: float = 0.3, seed: int = 0, imgsz: int = 160,
                     sources: bool = True) -> tuple[dict[str, tuple[ImageSet, ImageSet]], list[str]]:
    """Image sets for `fusionlab detect-eval`: IR / VIS (from the labelled dataset) and each fused
    folder (images named like the dataset's ids), restricted to the ids every set has, split into
    train/val once by `seed` so every set sees exactly the same images."""
    from fusionlab.data.datamodule import split_indices
    from fusionlab.data.datasets import open_dataset
    from fusionlab.data.io import IMAGE_SUFFIXES, read_vi
    from fusionlab.errors import DataError

    ds = open_dataset(labels_root, format, split)
    if not ds.has_boxes:
        raise DataError(f"--labels '{labels_root}' has no box labels (labels/*.txt); detect-eval needs them")
    files: dict[str, dict[str, Path]] = {}
    for name, folder in fused.items():
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"--fused {name}={folder}: folder does not exist")
        files[name] = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    keep = [i for i, sid in enumerate(ds.ids) if all(sid in f for f in files.values())]
    if len(keep) < 2:
        raise DataError(
            f"only {len(keep)} of the {len(ds)} labelled ids in '{labels_root}' have an image in every --fused "
            "folder; fused images must be named like the dataset's files (same stem)")
    ds = ds.select(keep)
    train_idx, val_idx = split_indices(len(ds), val_fraction, seed)
    sets: dict[str, tuple[ImageSet, ImageSet]] = {}
    names = ["ir", "vis"] if sources else []
    per_set: dict[str, list[list[torch.Tensor]]] = {n: [[], []] for n in [*names, *fused]}
    boxes: list[list[torch.Tensor]] = [[], []]
    ids: list[list[str]] = [[], []]
    for part, indices in enumerate((train_idx, val_idx)):
        for i in indices:
            s = ds[i]
            ids[part].append(s.id)
            boxes[part].append(s.boxes if s.boxes is not None else torch.zeros(0, 5))
            if sources:
                per_set["ir"][part].append(to_uint8(s.ir[None])[0])
                per_set["vis"][part].append(to_uint8(s.vi[None])[0])
            for name in fused:
                arr, _ = read_vi(files[name][s.id])
                img = torch.from_numpy(arr).permute(2, 0, 1) if arr.ndim == 3 else torch.from_numpy(arr)[None]
                if tuple(img.shape[-2:]) != s.size:
                    raise DataError(f"--fused {name}: '{files[name][s.id]}' is {img.shape[-1]}x{img.shape[-2]}, "
                                    f"but its labelled pair is {s.size[1]}x{s.size[0]}; fused images must keep the size")
                per_set[name][part].append(to_uint8(img.float()[None])[0])
    for name, (tr, va) in per_set.items():
        train, val = letterbox(tr, boxes[0], imgsz), letterbox(va, boxes[1], imgsz)
        train.ids, val.ids = ids[0], ids[1]
        sets[name] = (train, val)
    return sets, ds.classes
