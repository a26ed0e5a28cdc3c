"""Stage `detect`: Text2Pixels' bilevel fusion + detection (eq. 7), then the detection protocol.

1. Training (`fusionlab.detection.bilevel`): the stage-4 fusion net is the lower level, solving its
   own stage-4 objective (`fusionlab.detection.objective.lower_objective`); an ultralytics YOLO is
   the upper level, trained on the lower-level solution, whose loss reaches the fusion net through
   the hypergradient chosen by `optim.hypergrad` (`fusionlab.detection.hypergrad`). `mode: joint`
   and `mode: alternating` are the paper's training-strategy ablation.
2. The protocol (`fusionlab.detection.protocol`): ultralytics' DetectionTrainer/Validator train and
   score a fresh detector per image set (IR only, VIS only, stage-4 fused, bilevel-fused) and seed,
   on one split. The manifest and map.md/json give mean ± std over the seeds and the paired
   per-seed differences of each fused set against IR-only and VIS-only.

See docs/stages/detect.md for the formulas.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from pydantic import Field

from fusionlab.data.config import DataConfig
from fusionlab.detection.bilevel import OptimConfig
from fusionlab.detection.protocol import ProtocolConfig
from fusionlab.models.detector import DetectorConfig
from fusionlab.stages.base import StageConfig, StageContext, accelerator_device

log = logging.getLogger("fusionlab.detect")

OUTPUTS = ("detector", "fusion", "protocol", "map.json", "map.csv", "map.md", "boxes.png")
HEADLINE = ("map50/ir", "map50/vis", "map50/fused", "map50/bilevel")
SETS = ("ir", "vis", "fused", "bilevel")  # protocol rows: sources, stage-4 fused, refined by this stage


def code_dependencies(config: dict) -> list[str]:
    """The modules of the preset the stage-4 checkpoint names (imported by name), for the code key."""
    import json
    from pathlib import Path

    try:
        name = json.loads((Path(config["fusion"]) / "config.json").read_text())["model"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return []  # not written yet: its upstream reruns first, and so does this stage
    from fusionlab.presets import preset_modules, preset_names

    return preset_modules(name) if name in preset_names() else []


class Config(StageConfig):
    data: DataConfig
    fusion: str  # stage-4 `fusion/` folder
    embeddings: str | None = None  # stage-3 embedding cache (needed when the fusion net takes text)
    mode: Literal["joint", "alternating", "bilevel"] = "bilevel"
    optim: OptimConfig = OptimConfig()
    # the upper level's detector; Text2Pixels uses YOLOv5 ("we adopt YOLOv5", size not given: s)
    detector: DetectorConfig = DetectorConfig(cfg="yolov5s.yaml", width_multiple=None, depth_multiple=None, imgsz=640)
    protocol: ProtocolConfig = ProtocolConfig()
    panel_images: int = Field(4, ge=0)  # bilevel-fused val images drawn with predicted boxes


def pretrained_parts(cfg: Config) -> list:
    """The YOLO detectors' starting weights (fusionlab.provenance): the bilevel stage's and the protocol's."""
    from fusionlab.provenance import detector_part

    return [detector_part(cfg.detector.pretrained, "detector.pretrained", "the bilevel stage"),
            detector_part(cfg.protocol.pretrained, "protocol.pretrained", "the detection protocol")]


# --------------------------------------------------------------------------- helpers


def _text_fn(path: str | None):
    if path is None:
        return None
    from fusionlab.cache.store import EmbeddingCache

    return EmbeddingCache(path).get


def fuse_batch(net, batch: dict, text_fn) -> torch.Tensor:
    """RGB fused images [B,3,H,W] of a batch; a text-guided net gets its cached caption embeddings."""
    from fusionlab.models.fusion import fuse_rgb

    text = text_fn(batch["id"], batch["ir"].device) if getattr(net, "needs_text", False) else None
    return fuse_rgb(net, batch["ir"], batch["vi"], text)


def fuser(net, text_fn, device):
    """batch -> fused RGB on the CPU, for writing an image set."""

    @torch.no_grad()
    def fuse(batch):
        dev = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        return fuse_batch(net, dev, text_fn).cpu()

    return fuse


def share_frozen_parts(net, source):
    """Give `net` the frozen submodules of `source` (same architecture), e.g. ldnf's diffusion feature
    extractor: one copy in memory, and `frozen_features_once` then serves both nets."""
    for name, child in source.named_children():
        params = list(child.parameters())
        if params and not any(p.requires_grad for p in params):
            setattr(net, name, child)
    return net


def draw_boxes(images: torch.Tensor, preds: list[torch.Tensor], gts: list[torch.Tensor], names: list[str],
               min_conf: float = 0.25) -> torch.Tensor:
    """uint8 grid [3,H,W]: ground truth in green, predictions [n,6] (x1,y1,x2,y2,conf,class; conf >= min_conf) in red."""
    from torchvision.utils import draw_bounding_boxes, make_grid

    h, w = images.shape[-2:]
    tiles = []
    for img, pred, gt in zip(images, preds, gts, strict=True):
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        cx, cy, bw, bh = (gt[:, 1:] * scale).unbind(1)
        gxy = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        img = draw_bounding_boxes(img, gxy, colors="lime", width=1)
        keep = pred[:, 4] >= min_conf
        labels = [f"{names[int(c)]} {s:.2f}" for c, s in zip(pred[keep, 5], pred[keep, 4], strict=True)]
        if keep.any():
            img = draw_bounding_boxes(img, pred[keep, :4].cpu(), labels=labels, colors="red", width=1)
        tiles.append(img)
    return make_grid(torch.stack(tiles), nrow=min(len(tiles), 4), padding=2)


def _wandb_boxes(run, images, preds, names, min_conf: float = 0.25) -> None:
    import wandb

    panel = []
    for img, pred in zip(images, preds, strict=True):
        rows = [{"position": {"minX": float(x1), "minY": float(y1), "maxX": float(x2), "maxY": float(y2)},
                 "class_id": int(c), "box_caption": f"{names[int(c)]} {s:.2f}", "domain": "pixel",
                 "scores": {"conf": float(s)}}
                for x1, y1, x2, y2, s, c in pred.tolist() if s >= min_conf]
        panel.append(wandb.Image(img.permute(1, 2, 0).numpy(), boxes={
            "predictions": {"box_data": rows, "class_labels": dict(enumerate(names))}}))
    run.log({"detect/boxes_on_fused": panel})


def _panel(data_yaml, predictions: dict, ids: list[str], names: list[str]):
    """Val images of a set with their labels and one unit's predictions (pixels, xyxy)."""
    from fusionlab.data.io import read_vi

    folder = data_yaml.with_suffix("")
    images, preds, gts = [], [], []
    for sid in ids:
        arr, _ = read_vi(folder / "images" / "val" / f"{sid}.png")
        img = torch.from_numpy(arr).permute(2, 0, 1)
        h, w = img.shape[-2:]
        images.append((img * 255).round().to(torch.uint8))
        rows = torch.tensor(predictions.get(sid, []), dtype=torch.float32).reshape(-1, 6)  # cls cx cy w h conf
        c, cx, cy, bw, bh, conf = rows.unbind(1)
        preds.append(torch.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h, conf, c], 1))
        lines = (folder / "labels" / "val" / f"{sid}.txt").read_text().split()
        gts.append(torch.tensor([float(x) for x in lines]).reshape(-1, 5))
    return torch.stack(images), preds, gts


# --------------------------------------------------------------------------- run


class _Phases:
    """Wall time of each phase of the stage: printed as it ends, and kept for the manifest."""

    def __init__(self):
        import time

        self.clock, self.last, self.seconds = time.perf_counter, time.perf_counter(), {}

    def done(self, key: str, what: str) -> None:
        now = self.clock()
        self.seconds[key] = round(now - self.last, 2)
        self.last = now
        print(f"detect: {what}: {self.seconds[key]:.1f} s", flush=True)


def run(cfg: Config, ctx: StageContext) -> dict:
    from fusionlab.models.detector import prepare_ultralytics

    phases = _Phases()
    prepare_ultralytics(ctx.run_dir or ctx.out_dir)  # before any ultralytics import

    import lightning as L

    from fusionlab.artifacts import atomic_write_bytes
    from fusionlab.data.io import encode_png
    from fusionlab.detection import protocol as proto
    from fusionlab.detection.bilevel import BilevelData, DetectFusionModule, frozen_features_once
    from fusionlab.detection.objective import lower_objective, stage4_config
    from fusionlab.errors import DataError, PipelineError
    from fusionlab.models.detector import build_detector, save_detector
    from fusionlab.models.fusion import load_fusion_model, save_fusion_model

    dm = BilevelData(cfg.data)
    dm.require_eval_split()  # the detection protocol scores the val split
    if not dm.train_set.has_boxes:
        raise DataError(f"data.root '{cfg.data.root}' has no box labels (labels/*.txt); stage 5 trains a detector")
    names = dm.classes
    net = load_fusion_model(cfg.fusion)
    text_fn = _text_fn(cfg.embeddings)
    if getattr(net, "needs_text", False) and text_fn is None:
        raise PipelineError(f"fusion model in '{cfg.fusion}' needs text; set `embeddings:` to stage 3's embeddings/ folder")
    s4_config, s4_source = stage4_config(cfg.fusion, net)
    objective = lower_objective(net, s4_config, data_root=cfg.data.root)
    phases.done("setup", "setup (data, nets, lower objective)")
    device = accelerator_device(cfg.trainer.accelerator)
    yolo_device = "cpu" if device.type == "cpu" else "0"
    work = ctx.checkpoint_dir("protocol")
    splits = {"train": dm.train_set, "val": dm.val_set}

    # --- 1. the bilevel problem (or an ablation mode): fusion net + detector
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    detector = build_detector(cfg.detector, nc=len(names), names=names)
    module = DetectFusionModule(net.train(), detector, objective, mode=cfg.mode, optim=cfg.optim.model_dump(),
                                imgsz=cfg.detector.imgsz, text_fn=text_fn, seed=cfg.seed,
                                det_reduction=cfg.detector.loss_reduction)
    trainer = ctx.make_trainer(cfg.trainer, name=cfg.mode, limit_val_batches=0)
    ctx.fit(trainer, module, dm, name=cfg.mode)
    phases.done("training", f"{cfg.mode} training")
    refined, trained_detector = module.fusion_net.eval(), module.detector.eval()
    if not ctx.is_global_zero:  # the protocol and the reports run once, on rank 0
        return {"mode": cfg.mode}
    extra = {k: v for k, v in net.checkpoint_config.items() if k not in ("kind", "model", "stage4_config")}
    save_fusion_model(ctx.output("fusion"), refined, {**extra, "refined_by": f"detect ({cfg.mode})",
                                                      "stage4_config": s4_config})
    save_detector(ctx.output("detector"), trained_detector, cfg.detector)

    # --- 2. the protocol: the image sets (one pass; the stage-4 net shares the refined net's frozen
    # parts, so ldnf's diffusion features of a batch are computed once for both), then a fresh
    # detector per set and seed through ultralytics' trainer and validator
    stage4 = share_frozen_parts(load_fusion_model(cfg.fusion), refined).to(device).eval()
    with frozen_features_once(refined):
        yamls = proto.write_image_sets(work / "data", splits, names, {
            "ir": lambda b: b["ir"], "vis": lambda b: b["vi"], "fused": fuser(stage4, text_fn, device),
            "bilevel": fuser(refined.to(device), text_fn, device)})
    phases.done("sets", "image sets written (IR, VIS, stage-4 fused, bilevel-fused)")
    results = proto.run_protocol(yamls, names, cfg.protocol, work, device=yolo_device, key=ctx.key,
                                 config_root=ctx.run_dir or ctx.out_dir)
    phases.done("protocol", "protocol units")
    stage_detector = proto.validate_detector(trained_detector, yamls["bilevel"], names, cfg.detector.imgsz,
                                             yolo_device, work)
    proto.publish_units(work, ctx.output("protocol"))
    settings = cfg.protocol.settings()
    random_init = settings["pretrained"] is None
    meta = {"mode": cfg.mode, "hypergrad": cfg.optim.hypergrad if cfg.mode == "bilevel" else None,
            "train_ids": list(dm.train_set.ids), "val_ids": list(dm.val_set.ids), "seeds": cfg.protocol.seeds,
            "protocol": settings, "stage_detector_on_bilevel": stage_detector,
            "detector_init": "random (no pretrained weights)" if random_init else settings["pretrained"]}
    summary = proto.summarize(results)
    predictions = {s: {seed: proto.load_predictions(ctx.output("protocol"), s, seed) for seed in by_seed}
                   for s, by_seed in results.items()}
    recall = proto.visibility_recall(predictions, dm.val_set)  # by which modality sees each object
    proto.write_tables(results, ctx.out_dir, meta, title=f"Stage 5 detection protocol (mode: {cfg.mode})",
                       recall=recall)

    # --- predicted boxes on bilevel-fused val images (the protocol's first-seed bilevel detector)
    n = min(cfg.panel_images, len(dm.val_set))
    ids = list(dm.val_set.ids)[:max(n, 1)]
    first_seed = cfg.protocol.seeds[0]
    images, preds, gts = _panel(yamls["bilevel"], proto.load_predictions(ctx.output("protocol"), "bilevel", first_seed),
                                ids, names)
    atomic_write_bytes(ctx.output("boxes.png"), encode_png(draw_boxes(images, preds, gts, names)))
    run_wb = ctx.wandb_run()
    if run_wb is not None and n:
        _wandb_boxes(run_wb, images[:n], preds[:n], names)

    metrics: dict = {"mode": cfg.mode, "classes": names, "seeds": cfg.protocol.seeds,
                     "protocol_profile": cfg.protocol.profile, "lower_objective": s4_source,
                     "detector_init": meta["detector_init"]}
    if cfg.mode == "bilevel":
        metrics.update({"hypergrad": cfg.optim.hypergrad, "lower_steps": cfg.optim.lower_steps})
    metrics.update(proto.manifest_metrics(summary))
    metrics.update(proto.recall_metrics(recall))
    metrics["map50/stage_detector"] = round(stage_detector["map50"], 4)
    metrics["map50_95/stage_detector"] = round(stage_detector["map50_95"], 4)
    metrics.update({f"{cfg.mode}/{k}_last": round(v, 4) for k, v in module.last_logs.items()})
    # throughput of what ran in this process (a resumed run times only what it redid)
    t = module.timing
    if t["seconds"] > 0:
        metrics["timing/bilevel_images_per_s"] = round(t["images"] / t["seconds"], 2)
    phases.done("tables", "stage detector, tables and panels")
    metrics.update({f"timing/{k}_s": v for k, v in phases.seconds.items()})
    metrics["timing/protocol_unit_s"] = round(sum(r["wall_s"] for u in results.values() for r in u.values())
                                              / sum(len(u) for u in results.values()), 2)
    return metrics
