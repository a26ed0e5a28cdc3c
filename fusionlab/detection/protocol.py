"""The field's detection protocol, on ultralytics' own machinery.

Fusion papers compare methods by training a separate YOLO on each method's images and reporting
P, R, mAP@0.5 and mAP@0.5:0.95 (LDFusion §4.3.3, Table 5; Text2Pixels Table 1). Here every image
set (IR only, VIS only, each fused set) becomes an ultralytics dataset (a data YAML over
`images/{train,val}` and `labels/{train,val}`) on identical splits, and each (set, seed) unit is
trained by ultralytics' `DetectionTrainer` and scored by its `DetectionValidator`, with its
default schedule, augmentation and metrics. Each set is trained once per seed; a seed fixes the
detector's initial weights and ultralytics' own seeding, so the sets of one seed are paired.

Two things differ from `yolo train`, neither of which changes what is trained or scored:
* Checkpoints stay in memory. ultralytics writes pickled `.pt` files and loads them back for its
  final validation; fusionlab never unpickles, so the best epoch's EMA weights are kept as a
  state dict, validated by the same validator, and saved as safetensors (`save_detector`).
  For the same reason its pickled label caches (`labels/*.cache`) are deleted before and after
  each unit (ultralytics rebuilds them instead of loading them).
* The model is built by `fusionlab.models.detector.build_detector` (the YAML, optional
  width/depth multiples for CPU runs, optional starting weights) and handed to the trainer.

Runs, settings and fonts stay inside the run dir (`prepare_ultralytics`), offline.
Each unit's result is written atomically into `units/<set>-seed<k>/` when it is done (result.json,
predictions.json on the val images, detector/), so an interrupted protocol skips finished units
and re-trains the interrupted one from scratch, deterministically.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from pydantic import Field

from fusionlab.config import Section

SPLITS = ("train", "val")
METRICS = ("map50", "map50_95", "precision", "recall")
SOURCES = ("ir", "vis")

# Profiles: the ultralytics settings of one kind of run. Anything else is ultralytics' default.
PROFILES: dict[str, dict[str, Any]] = {
    # LDFusion §4.3.3: "YOLOv8 ... separate instances ... using the fused images of each method";
    # ultralytics' defaults for everything (100 epochs, 640 px, batch 16, mosaic, SGD/AdamW auto).
    "paper": {"model": "yolov8n.yaml", "imgsz": 640, "epochs": 100, "batch": 16, "train_args": {}},
    # Text2Pixels §3.3: "we adopt YOLOv5 as our backbone" (size not given: YOLOv5's own default, s).
    "text2pixels": {"model": "yolov5s.yaml", "imgsz": 640, "epochs": 100, "batch": 16, "train_args": {}},
    # The CPU demo (synthetic 160x128 scenes, 2 cores): a 1/16-width yolov8n at the native size, three
    # epochs, one optimizer step per batch (nbs = batch: ultralytics' nominal batch of 64 would
    # accumulate 4 batches, ~2 steps per epoch on 160 images), no plots, validation only after the
    # last epoch, decoded images cached in RAM. Smoke-sized: it shows the protocol runs, its mAPs are
    # near 0 and comparable with no paper's.
    "fast": {"model": "yolov8n.yaml", "width_multiple": 0.0625, "depth_multiple": 0.33, "imgsz": 160, "epochs": 3,
             "batch": 16, "train_args": {"nbs": 16, "plots": False, "val": False, "cache": "ram"}},
}


class ProtocolConfig(Section):
    """Which detector and schedule every (set, seed) unit gets; `profile` gives the defaults."""

    profile: Literal["paper", "text2pixels", "fast"] = "paper"
    seeds: list[int] = Field([0, 1, 2], min_length=1)  # every set is trained once per seed
    model: str | None = None  # ultralytics detection YAML (yolov8n.yaml, yolov5s.yaml, yolo11n.yaml, a path)
    width_multiple: float | None = Field(None, gt=0)  # override the YAML's scale (CPU runs)
    depth_multiple: float | None = Field(None, gt=0)
    pretrained: str | None = None  # starting weights: a fusionlab detector/ folder or a release imported by `fusionlab weights import`; null: random
    imgsz: int | None = Field(None, gt=0)
    epochs: int | None = Field(None, gt=0)
    batch: int | None = Field(None, gt=0)
    train_args: dict[str, Any] = {}  # any other ultralytics train argument (lr0, mosaic, patience, ...), applied last
    processes: int = Field(1, ge=1)  # units trained side by side in worker processes (CPU: one thread each)

    def settings(self) -> dict[str, Any]:
        """The profile with this config's overrides applied: everything a unit is trained with."""
        out = {"model": None, "width_multiple": None, "depth_multiple": None, **PROFILES[self.profile]}
        out["train_args"] = {**out["train_args"], **self.train_args}
        for key in ("model", "width_multiple", "depth_multiple", "imgsz", "epochs", "batch"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["pretrained"] = self.pretrained
        return out


def detector_config(settings: dict):
    from fusionlab.models.detector import DetectorConfig

    return DetectorConfig(cfg=settings["model"], width_multiple=settings["width_multiple"],
                          depth_multiple=settings["depth_multiple"], pretrained=settings["pretrained"],
                          imgsz=settings["imgsz"])


# --------------------------------------------------------------------------- image sets on disk


def _digest(obj) -> str:
    from fusionlab.artifacts import json_digest

    return json_digest(obj)[:16]


def _batches(dataset, batch_size: int = 16):
    from fusionlab.data.collate import collate_samples

    bs = batch_size if dataset.uniform_size else 1
    return torch.utils.data.DataLoader(dataset, batch_size=bs, shuffle=False, collate_fn=collate_samples)


def _label_text(boxes: torch.Tensor) -> str:
    return "".join(f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in boxes.reshape(-1, 5).tolist())


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _files_digest(files: dict[str, Path]) -> str:
    return _digest({k: [str(v), v.stat().st_size, v.stat().st_mtime_ns] for k, v in sorted(files.items())})


def write_image_sets(root: Path, splits: dict, class_names: list[str],
                     sources: dict[str, Callable[[dict], torch.Tensor] | dict[str, Path]]) -> dict[str, Path]:
    """Image sets as ultralytics datasets: `root/<set>/{images,labels}/{train,val}` + `root/<set>.yaml`.

    `splits` = {"train": PairDataset, "val": PairDataset}, the same for every set; `sources` maps a
    set name to a function batch -> [B,C,H,W] in [0,1] (written as PNG) or to {id: file} (linked as
    is). All sets are written in one pass over the data (fusers of one batch run back to back, so
    frozen features shared by their nets are computed once). Labels come from the dataset, so every
    set has the same boxes. A set already written with the same ids and files is kept (its
    `.complete` record); each set folder appears atomically. Returns {set: data YAML}.
    """
    import hashlib
    import json

    import yaml

    from fusionlab.artifacts import atomic_dir, atomic_write_text
    from fusionlab.data.io import encode_png

    planned = {split: list(ds.ids) for split, ds in splits.items()}
    yamls = {name: root / f"{name}.yaml" for name in sources}
    records = {name: {"ids": planned, "files": None if callable(src) else _files_digest(src)}
               for name, src in sources.items()}
    todo = {}
    for name, src in sources.items():
        marker = root / name / ".complete"
        if marker.is_file() and yamls[name].is_file():
            done = json.loads(marker.read_text())
            if done.get("ids") == records[name]["ids"] and done.get("files") == records[name]["files"]:
                continue
        todo[name] = src
    if not todo:
        return yamls
    digests: dict[str, dict[str, str]] = {name: {} for name in todo}
    with contextlib.ExitStack() as stack:  # every set folder appears at once: no per-file fsync
        tmp = {name: stack.enter_context(atomic_dir(root / name)) for name in todo}
        for split, ds in splits.items():
            for folder in tmp.values():
                (folder / "images" / split).mkdir(parents=True)
                (folder / "labels" / split).mkdir(parents=True)
            for batch in _batches(ds):
                labels = {sid: _label_text(batch["boxes"][batch["boxes"][:, 0] == i, 1:] if "boxes" in batch
                                           else torch.zeros(0, 5)) for i, sid in enumerate(batch["id"])}
                for name, src in todo.items():
                    for sid, text in labels.items():
                        (tmp[name] / "labels" / split / f"{sid}.txt").write_text(text)
                    if callable(src):
                        for sid, img in zip(batch["id"], src(batch), strict=True):
                            data = encode_png(img.detach().float().cpu())
                            (tmp[name] / "images" / split / f"{sid}.png").write_bytes(data)
                            digests[name][sid] = hashlib.sha256(data).hexdigest()[:16]
                    else:
                        for sid in batch["id"]:
                            file = Path(src[sid])
                            _link_or_copy(file, tmp[name] / "images" / split / f"{sid}{file.suffix.lower()}")
    for name in todo:
        folder = root / name
        atomic_write_text(yamls[name], yaml.safe_dump({"path": str(folder.resolve()), "train": "images/train",
                                                       "val": "images/val", "names": dict(enumerate(class_names))}))
        atomic_write_text(folder / ".complete", json.dumps({**records[name], "images": _digest(digests[name])}))
    return yamls


@contextlib.contextmanager
def no_label_caches(data_yaml: Path):
    """ultralytics pickles its label index to `labels/*.cache` and np.load(allow_pickle=True)s it on the
    next run; fusionlab never unpickles, so the caches are removed before (it rebuilds them) and after."""
    def remove():
        for cache in data_yaml.with_suffix("").glob("labels/*.cache"):
            cache.unlink()

    remove()
    try:
        yield
    finally:
        remove()


def set_digest(data_yaml: Path) -> str:
    """What a unit trained on: the set's ids and image content (from its `.complete` record)."""
    marker = data_yaml.with_suffix("") / ".complete"
    return _digest(marker.read_text())


# --------------------------------------------------------------------------- one (set, seed) unit


def _trainer_class():
    from ultralytics.models.yolo.detect import DetectionTrainer

    class ProtocolTrainer(DetectionTrainer):
        """ultralytics' DetectionTrainer with its checkpoints kept in memory (never pickled, never
        unpickled): the best epoch's EMA weights are a state dict and are validated at the end by
        the trainer's own validator, which is what ultralytics' final_eval does with best.pt."""

        best_state: dict | None = None
        best_epoch: int = -1

        def save_model(self):
            if self.best_fitness == self.fitness:
                self.best_state = {k: v.detach().clone() for k, v in self.ema.ema.state_dict().items()}
                self.best_epoch = self.epoch
            return False  # no on_model_save callbacks: there is no .pt file

        def final_eval(self):
            if self.best_state is not None and self.best_epoch != self.epoch:
                self.ema.ema.load_state_dict(self.best_state)
                self.metrics, self.fitness = self.validate()

    return ProtocolTrainer


def _unit_args(settings: dict, data_yaml: Path, seed: int, runs: Path, name: str, device: str) -> dict:
    """ultralytics train arguments of one unit: the profile, then what fusionlab must control."""
    # amp: ultralytics' fp16 AMP self-check downloads a model, so GPUs use bf16 autocast (no check), CPUs fp32
    args = {"imgsz": settings["imgsz"], "epochs": settings["epochs"], "batch": settings["batch"],
            "amp": False if device == "cpu" else "bf16", **settings["train_args"]}
    args.update({"data": str(data_yaml), "model": str(settings["model"]), "seed": seed, "deterministic": True,
                 "device": device, "project": str(runs), "name": name, "exist_ok": True, "resume": False,
                 "save_txt": True, "save_conf": True, "verbose": False, "pretrained": False})
    return args


def _read_predictions(labels_dir: Path, ids: list[str]) -> dict[str, list[list[float]]]:
    """The validator's save_txt output: per val image, rows (class, cx, cy, w, h, conf), normalised."""
    out = {}
    for sid in ids:
        f = labels_dir / f"{sid}.txt"
        rows = [line.split() for line in f.read_text().splitlines()] if f.is_file() else []
        out[sid] = [[int(r[0]), *(round(float(x), 5) for x in r[1:6])] for r in rows if len(r) >= 6]
    return out


def _results(metrics, class_names: list[str], n_images: int) -> dict:
    """P, R, mAP@0.5, mAP@0.5:0.95 overall and per class from ultralytics' DetMetrics."""
    box = metrics.box
    counts = metrics.nt_per_class if metrics.nt_per_class is not None else [0] * len(class_names)
    out = {"precision": float(box.mp), "recall": float(box.mr), "map50": float(box.map50),
           "map50_95": float(box.map), "images": n_images, "instances": int(sum(counts)), "per_class": {}}
    for i, c in enumerate(metrics.ap_class_index):
        p, r, ap50, ap = metrics.class_result(i)
        out["per_class"][class_names[int(c)]] = {"precision": float(p), "recall": float(r), "map50": float(ap50),
                                                 "map50_95": float(ap), "instances": int(counts[int(c)])}
    return out


def train_unit(set_name: str, seed: int, data_yaml: Path, class_names: list[str], settings: dict, work: Path,
               device: str, key: str) -> dict:
    """Train and score one (set, seed) unit; its folder `work/units/<set>-seed<k>` appears atomically."""
    import json
    import time

    from fusionlab.artifacts import atomic_dir
    from fusionlab.models.detector import build_detector, save_detector

    started = time.perf_counter()
    name = f"{set_name}-seed{seed}"
    runs = work / "runs"
    shutil.rmtree(runs / name, ignore_errors=True)  # an interrupted attempt starts again from scratch
    with no_label_caches(data_yaml):
        trainer = _trainer_class()(overrides=_unit_args(settings, data_yaml, seed, runs, name, device))
        # built after the trainer seeded everything: one seed, the same initial weights for every set
        trainer.model = build_detector(detector_config(settings), nc=len(class_names), names=class_names,
                                       key="protocol.pretrained")
        trainer.train()
    val_ids = sorted(Path(p).stem for p in trainer.validator.dataloader.dataset.im_files)
    result = {"set": set_name, "seed": seed, "key": key, "best_epoch": trainer.best_epoch + 1,
              "epochs": trainer.epochs, **_results(trainer.validator.metrics, class_names, len(val_ids)),
              "wall_s": round(time.perf_counter() - started, 2)}
    predictions = _read_predictions(Path(trainer.save_dir) / "labels", val_ids)
    with atomic_dir(work / "units" / name) as tmp:
        (tmp / "result.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        (tmp / "predictions.json").write_text(json.dumps(predictions, separators=(",", ":")) + "\n")
        save_detector(tmp / "detector", trainer.ema.ema, detector_config(settings))
    return result


def validate_detector(model, data_yaml: Path, class_names: list[str], imgsz: int, device: str, work: Path) -> dict:
    """Score a trained detector on a set's val split with ultralytics' DetectionValidator (the same
    metrics as the units); the model itself is left untouched."""
    import copy

    from ultralytics.models.yolo.detect import DetectionValidator

    validator = DetectionValidator(args={"data": str(data_yaml), "imgsz": imgsz, "batch": 16, "device": device,
                                         "split": "val", "plots": False, "verbose": False, "project": str(work),
                                         "name": "stage-detector", "exist_ok": True})
    with no_label_caches(data_yaml):
        validator(model=copy.deepcopy(model).float().eval())
    return _results(validator.metrics, class_names, len(validator.dataloader.dataset))


def _worker_init(config_dir: str, threads: int) -> None:
    from fusionlab.models.detector import prepare_ultralytics

    torch.set_num_threads(threads)
    prepare_ultralytics(config_dir)


def _train_in_worker(job: tuple) -> dict:
    return train_unit(*job)


def run_protocol(data_yamls: dict[str, Path], class_names: list[str], cfg: ProtocolConfig, work: Path, *,
                 device: str = "cpu", key: str = "", config_root: str | os.PathLike | None = None) -> dict[str, dict[int, dict]]:
    """Every (set, seed) unit; finished units (same key) are read back, not trained again.

    Returns {set: {seed: result}}. `key` identifies everything a unit depends on besides the set
    and seed (e.g. the stage key); `config_root` is where ultralytics' settings live (the run dir).
    """
    import json

    settings = cfg.settings()
    jobs, results = [], {s: {} for s in data_yamls}
    for seed in cfg.seeds:
        for set_name, data_yaml in data_yamls.items():
            unit_key = _digest({"key": key, "settings": settings, "data": set_digest(data_yaml), "names": class_names})
            done = work / "units" / f"{set_name}-seed{seed}" / "result.json"
            if done.is_file() and json.loads(done.read_text()).get("key") == unit_key:
                results[set_name][seed] = json.loads(done.read_text())
                print(f"protocol: {set_name} seed {seed}: done earlier, kept", flush=True)
            else:
                jobs.append((set_name, seed, data_yaml, class_names, settings, work, device, unit_key))
    if cfg.processes > 1 and len(jobs) > 1:
        import concurrent.futures
        import multiprocessing

        root = str(config_root or work)
        with concurrent.futures.ProcessPoolExecutor(min(cfg.processes, len(jobs)), multiprocessing.get_context("spawn"),
                                                    initializer=_worker_init, initargs=(root, 1)) as pool:
            for job, result in zip(jobs, pool.map(_train_in_worker, jobs), strict=True):
                results[job[0]][job[1]] = result
                print(f"protocol: {job[0]} seed {job[1]}: mAP@0.5 {result['map50']:.3f}", flush=True)
    else:
        for job in jobs:
            result = train_unit(*job)
            results[job[0]][job[1]] = result
            print(f"protocol: {job[0]} seed {job[1]}: mAP@0.5 {result['map50']:.3f}", flush=True)
    return {s: dict(sorted(r.items())) for s, r in results.items()}


def publish_units(work: Path, out: Path) -> Path:
    """Copy (hard-link where possible) the finished units to `out/<set>/seed<k>/` atomically."""
    from fusionlab.artifacts import atomic_dir

    with atomic_dir(out) as tmp:
        for unit in sorted((work / "units").iterdir()):
            if not (unit / "result.json").is_file():
                continue
            set_name, _, seed = unit.name.rpartition("-seed")
            for src in unit.rglob("*"):
                if src.is_file():
                    _link_or_copy(src, tmp / set_name / f"seed{seed}" / src.relative_to(unit))
    return out


def load_predictions(protocol_dir: str | os.PathLike, set_name: str, seed: int) -> dict[str, list[list[float]]]:
    """The val-image predictions of one unit: {id: [[class, cx, cy, w, h, conf], ...]} (normalised,
    every box NMS kept at ultralytics' validation threshold conf ≥ 0.001)."""
    import json

    return json.loads((Path(protocol_dir) / set_name / f"seed{seed}" / "predictions.json").read_text())


def _xyxy(rows: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = rows.unbind(1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


def visibility_recall(predictions: dict[str, dict[int, dict[str, list]]], val_set) -> dict[str, dict[str, dict]]:
    """Recall on the objects only IR sees, only VIS sees and both see (`fusionlab.metrics.visibility`),
    per image set and seed, from the units' val predictions and the val split's labels.

    predictions: {set: {seed: load_predictions(...)}}; val_set: the PairDataset of the val split
    (its labels are the targets, its `visibility(id)` the ground-truth `visible_in`, scoring only).
    Returns {set: {group: {"recall": mean over seeds, "per_seed": [...], "n": objects}}}; {} when
    the split records no visibility. Boxes compare in normalised coordinates (IoU does not change
    under a per-axis scale).
    """
    from fusionlab.metrics.visibility import split_recall

    ids = list(val_set.ids)
    seen = [val_set.visibility(i) for i in ids]
    if all(v is None for v in seen):
        return {}
    targets = []
    for k in range(len(ids)):
        boxes = val_set[k].boxes
        boxes = torch.zeros(0, 5) if boxes is None else boxes.double()
        targets.append(torch.cat([boxes[:, :1], _xyxy(boxes[:, 1:5])], 1))
    out: dict[str, dict[str, dict]] = {}
    for set_name, by_seed in predictions.items():
        per_group: dict[str, dict] = {}
        for _seed, preds in by_seed.items():
            rows = [torch.tensor(preds.get(i, []), dtype=torch.float64).reshape(-1, 6) for i in ids]
            # [class, cx, cy, w, h, conf] -> [x1, y1, x2, y2, conf, class]
            pred = [torch.cat([_xyxy(r[:, 1:5]), r[:, 5:6], r[:, :1]], 1) for r in rows]
            for group, row in split_recall(pred, targets, seen).items():
                entry = per_group.setdefault(group, {"per_seed": [], "n": row["n"]})
                entry["per_seed"].append(row["recall"])
        for entry in per_group.values():
            finite = [v for v in entry["per_seed"] if math.isfinite(v)]
            entry["recall"] = sum(finite) / len(finite) if finite else float("nan")
        out[set_name] = per_group
    return out


def recall_metrics(recall: dict[str, dict[str, dict]]) -> dict:
    """Manifest keys: `recall_split/<set>/<group>` (mean over seeds), `.../seeds` (per seed), and
    `recall_split/n/<group>` (objects of the group in the val split)."""
    out: dict[str, Any] = {}
    for set_name, groups in recall.items():
        for group, e in groups.items():
            out[f"recall_split/{set_name}/{group}"] = round(e["recall"], 4) if math.isfinite(e["recall"]) else None
            out[f"recall_split/{set_name}/{group}/seeds"] = [round(v, 4) if math.isfinite(v) else None
                                                              for v in e["per_seed"]]
            out[f"recall_split/n/{group}"] = e["n"]
    return out


def recall_markdown(recall: dict[str, dict[str, dict]]) -> str:
    from fusionlab.metrics.visibility import GROUPS
    from fusionlab.tables import markdown_table

    groups = [g for g in GROUPS if any(g in r for r in recall.values())]
    n = {g: next(r[g]["n"] for r in recall.values() if g in r) for g in groups}
    rows = [[s, *(_pm(_stats([v for v in r[g]["per_seed"] if math.isfinite(v)] or [float("nan")])) if g in r else "–"
                  for g in groups)] for s, r in recall.items()]
    return ("Recall by which modality sees the object (IoU >= 0.5, same class, confidence >= 0.25; "
            "mean ± std over seeds):\n\n" + markdown_table(["set", *(f"{g} (n={n[g]})" for g in groups)], rows))


# --------------------------------------------------------------------------- seeds: mean ± std, paired differences


def _stats(values: list[float]) -> dict:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    out = {"mean": mean, "std": std, "n": n, "per_seed": values}
    if n > 1:
        from scipy.stats import t

        half = float(t.ppf(0.975, n - 1)) * std / math.sqrt(n)
        out["ci95"] = [mean - half, mean + half]
    return out


def summarize(results: dict[str, dict[int, dict]]) -> dict:
    """Per set: mean ± std over seeds of every metric (and per class); per fused set: the paired
    per-seed difference against IR-only and VIS-only, with its std and 95 % t-interval."""
    sets: dict[str, dict] = {}
    for set_name, by_seed in results.items():
        runs = list(by_seed.values())
        entry = {m: _stats([r[m] for r in runs]) for m in METRICS}
        classes = sorted({c for r in runs for c in r["per_class"]})
        entry["per_class"] = {c: {m: _stats([r["per_class"].get(c, {}).get(m, 0.0) for r in runs]) for m in METRICS}
                              for c in classes}
        entry["seeds"] = list(by_seed)
        sets[set_name] = entry
    paired = {}
    for fused in (s for s in results if s not in SOURCES):
        for src in (s for s in SOURCES if s in results):
            seeds = [k for k in results[fused] if k in results[src]]
            paired[f"{fused}-{src}"] = {m: _stats([results[fused][k][m] - results[src][k][m] for k in seeds])
                                        for m in ("map50", "map50_95")}
    return {"sets": sets, "paired": paired}


def _pm(s: dict) -> str:
    return f"{s['mean']:.3f} ± {s['std']:.3f}" if s["n"] > 1 else f"{s['mean']:.3f} (1 seed)"


def to_markdown(summary: dict, title: str) -> str:
    from fusionlab.tables import markdown_table

    sets = summary["sets"]
    n = max(e["map50"]["n"] for e in sets.values())
    lines = [f"# {title}", "", f"Mean ± std over {n} seed(s); every set trained once per seed on the same split.", "",
             markdown_table(["set", "mAP@0.5", "mAP@0.5:0.95", "P", "R"],
                            [[f"**{s}**", *(_pm(e[m]) for m in METRICS)] for s, e in sets.items()])]
    if summary["paired"]:
        rows = [[name, *(_pm(d[m]) + (f" [{d[m]['ci95'][0]:+.3f}, {d[m]['ci95'][1]:+.3f}]" if "ci95" in d[m] else "")
                         for m in ("map50", "map50_95"))] for name, d in summary["paired"].items()]
        lines += ["", "Paired difference per seed (fused − source), mean ± std [95 % t-interval]:", "",
                  markdown_table(["comparison", "Δ mAP@0.5", "Δ mAP@0.5:0.95"], rows)]
    classes = sorted({c for e in sets.values() for c in e["per_class"]})
    if classes:
        rows = [[s, *(_pm(e["per_class"][c]["map50"]) if c in e["per_class"] else "–" for c in classes)]
                for s, e in sets.items()]
        lines += ["", "Per class, mAP@0.5 (mean ± std):", "", markdown_table(["set", *classes], rows)]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("set", "seed", "class", "images", "instances", "precision", "recall", "map50", "map50_95")


def to_csv(results: dict[str, dict[int, dict]]) -> str:
    """One row per set, seed and class ('all' first): the raw per-seed numbers."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for set_name, by_seed in results.items():
        for seed, r in by_seed.items():
            rows = [("all", r["instances"], r)] + [(c, v["instances"], v) for c, v in r["per_class"].items()]
            for cls, instances, v in rows:
                writer.writerow({"set": set_name, "seed": seed, "class": cls, "images": r["images"],
                                 "instances": instances, **{m: f"{v[m]:.4f}" for m in METRICS}})
    return buf.getvalue()


def write_tables(results: dict[str, dict[int, dict]], out_dir: str | os.PathLike, meta: dict | None = None,
                 title: str = "Detection protocol", recall: dict | None = None) -> dict[str, Path]:
    """map.json (per-seed results, summary, meta, visibility-split recall), map.csv and map.md,
    atomically, into `out_dir`."""
    from fusionlab.artifacts import atomic_write_json, atomic_write_text

    out_dir = Path(out_dir)
    summary = summarize(results)
    paths = {"map.json": out_dir / "map.json", "map.csv": out_dir / "map.csv", "map.md": out_dir / "map.md"}
    atomic_write_json(paths["map.json"], {"sets": list(results), "results": {s: {str(k): v for k, v in r.items()}
                                                                             for s, r in results.items()},
                                          "summary": summary, **({"meta": meta} if meta else {}),
                                          **({"recall_split": recall} if recall else {})})
    atomic_write_text(paths["map.csv"], to_csv(results))
    md = to_markdown(summary, title)
    atomic_write_text(paths["map.md"], md + ("\n" + recall_markdown(recall) + "\n" if recall else ""))
    return paths


def manifest_metrics(summary: dict) -> dict:
    """Flat keys for the manifest: `map50/<set>` = mean over seeds, `map50_std/<set>`, per-seed lists,
    and `map50_diff/<fused>-<source>` (+ `_std`, `_ci95`) for the paired differences."""
    out: dict[str, Any] = {}
    for set_name, e in summary["sets"].items():
        for m in METRICS:
            out[f"{m}/{set_name}"] = round(e[m]["mean"], 4)
            out[f"{m}_std/{set_name}"] = round(e[m]["std"], 4)
        out[f"map50_seeds/{set_name}"] = [round(v, 4) for v in e["map50"]["per_seed"]]
    for name, d in summary["paired"].items():
        for m in ("map50", "map50_95"):
            out[f"{m}_diff/{name}"] = round(d[m]["mean"], 4)
            out[f"{m}_diff_std/{name}"] = round(d[m]["std"], 4)
            if "ci95" in d[m]:
                out[f"{m}_diff_ci95/{name}"] = [round(v, 4) for v in d[m]["ci95"]]
    return out
