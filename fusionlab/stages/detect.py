"""Stage `detect`: bilevel fusion + YOLO detection (Text2Pixels eq. 7), then the detection protocol.

The stage-4 fusion net (lower level) and an ultralytics YOLO (upper level) are trained together
in one of three modes — the paper's ablation, recorded in the returned metrics as `mode`:

* `joint`: one summed loss `L_f(z) + w·L_d(ω; z)`, both nets stepped together.
* `alternating`: `k` lower-level fusion steps on `L_f(z) + w·L_d(ω; z)` with the detector held
  fixed, then one detector step on the current fused images (computed without a graph, so no
  gradient reaches the fusion net from detector steps).
* `bilevel` (default): the detector is optimised on z* = fusion output (detached: the upper
  level), and the detection loss reaches the fusion net through a one-step unrolled
  hypergradient: simulate one detector SGD step `ω' = ω − η ∇_ω L_d(ω; z(θ))` (with
  `create_graph`), evaluate `L_d(ω'; z(θ))`, and backpropagate `L_f + w·L_d(ω'; z)` into θ only.
  `hypergrad: first_order` drops the second-order term (ω' computed from a detached gradient),
  DARTS' first-order approximation, cheaper and used when double backward is too costly.

`L_f` is the lower-level fidelity objective: intensity (L1 to max(IR, VIS-Y)), gradient (L1 to
the larger Sobel magnitude) and the paper's structure term `L^str(z, z')` (L1 to the frozen
stage-4 output z', which keeps the refined images close to what stage 4 learned).

Then the field's protocol (fusionlab.detection_protocol): fresh detectors with the same seed,
schedule and split on IR only, VIS only, stage-4 fused and bilevel-fused images; their mAP@0.5
lands in the metrics (manifest) and in map.json|csv|md.
"""

from __future__ import annotations

import copy
import logging
from typing import Literal

import torch
from pydantic import Field

from fusionlab.config import Section
from fusionlab.data.config import DataConfig
from fusionlab.detection_protocol import ProtocolConfig
from fusionlab.models.detector import DetectorConfig
from fusionlab.stages.base import StageConfig, StageContext, accelerator_device

log = logging.getLogger("fusionlab.detect")

OUTPUTS = ("detector", "fusion", "map.json", "map.csv", "map.md", "boxes.png")
HEADLINE = ("map50/ir", "map50/vis", "map50/fused", "map50/bilevel")
SETS = ("ir", "vis", "fused", "bilevel")  # protocol rows: sources, stage-4 fused, refined by this stage


def code_dependencies(config: dict) -> list[str]:
    """The module of the fusion net the stage-4 checkpoint names (imported by name), for the code key."""
    import json
    from pathlib import Path

    try:
        name = json.loads((Path(config["fusion"]) / "config.json").read_text())["model"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return []  # not written yet: its upstream reruns first, and so does this stage
    from fusionlab.presets import preset_modules, preset_names

    return preset_modules(name) if name in preset_names() else []


class OptimConfig(Section):
    """The two optimisers and the coupling between the levels."""

    lr_fusion: float = Field(1e-4, gt=0)
    lr_detector: float = Field(2e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    det_weight: float = Field(0.1, ge=0)  # w: weight of the detection term in the fusion net's loss
    inner_lr: float = Field(0.01, gt=0)  # η of the simulated detector SGD step (bilevel)
    hypergrad: Literal["unrolled", "first_order"] = "unrolled"
    k: int = Field(2, gt=0)  # alternating: fusion steps per detector step
    intensity_weight: float = Field(1.0, ge=0)
    gradient_weight: float = Field(1.0, ge=0)
    structure_weight: float = Field(1.0, ge=0)


class Config(StageConfig):
    data: DataConfig
    fusion: str  # stage-4 `fusion/` folder
    embeddings: str | None = None  # stage-3 embedding cache (needed when the fusion net takes text)
    mode: Literal["joint", "alternating", "bilevel"] = "bilevel"
    optim: OptimConfig = OptimConfig()
    detector: DetectorConfig = DetectorConfig()
    protocol: ProtocolConfig = ProtocolConfig()
    panel_images: int = Field(4, ge=0)  # fused val images drawn with predicted boxes


def pretrained_parts(cfg: Config) -> list:
    """The YOLO detectors' starting weights (fusionlab.provenance): `pretrained` of the stage and the protocol."""
    from fusionlab.provenance import detector_part

    return [detector_part(cfg.detector.pretrained, "detector.pretrained", "the bilevel stage"),
            detector_part(cfg.protocol.detector.pretrained, "protocol.detector.pretrained", "the detection protocol")]


# --------------------------------------------------------------------------- lower-level loss


def _gradient(x: torch.Tensor) -> torch.Tensor:
    import kornia

    g = kornia.filters.spatial_gradient(x, mode="sobel")  # [B,C,2,H,W]
    return g.abs().sum(2)


def fidelity_loss(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor, anchor: torch.Tensor | None,
                  cfg: OptimConfig) -> torch.Tensor:
    """Lower-level objective f(z, x, y): intensity + gradient fidelity, plus structure to z'."""
    from fusionlab.data.colour import to_gray

    y, vy = to_gray(fused), to_gray(vi)
    loss = cfg.intensity_weight * torch.nn.functional.l1_loss(y, torch.maximum(ir, vy))
    loss = loss + cfg.gradient_weight * torch.nn.functional.l1_loss(_gradient(y), torch.maximum(_gradient(ir), _gradient(vy)))
    if anchor is not None and cfg.structure_weight > 0:
        loss = loss + cfg.structure_weight * torch.nn.functional.l1_loss(fused, anchor)
    return loss


# --------------------------------------------------------------------------- the LightningModule


def _module_class():
    import lightning as L

    class DetectFusionModule(L.LightningModule):
        """Fusion net (lower level) + YOLO (upper level) under manual optimisation, two optimisers."""

        def __init__(self, fusion_net, detector, mode: str = "bilevel", optim: dict | None = None,
                     det_reduction: str = "mean", imgsz: int | None = None, text_fn=None):
            super().__init__()
            from fusionlab.models.detector import DetectionCriterion

            self.automatic_optimization = False
            self.save_hyperparameters({"mode": mode, "optim": optim or {}, "det_reduction": det_reduction,
                                       "imgsz": imgsz})
            self.mode, self.imgsz = mode, imgsz
            self.optim_cfg = OptimConfig(**(optim or {}))
            self.fusion_net = fusion_net
            self.anchor_net = copy.deepcopy(fusion_net).eval().requires_grad_(False)
            self.detector = detector
            self.criterion = DetectionCriterion(detector, det_reduction)
            self.text_fn = text_fn
            self.steps_done = 0

        # ---------------------------------------------------------------- helpers
        def fuse(self, net, batch) -> torch.Tensor:
            """RGB fused images [B,3,H,W] at the input size (the lower level's z)."""
            return fuse_batch(net, batch, self.text_fn)

        def to_detector(self, fused: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
            """Resize (differentiably) so the long side is `imgsz`, pad to the stride; also the resized size."""
            from fusionlab.models.detector import pad_to_stride

            h, w = fused.shape[-2:]
            if self.imgsz and max(h, w) != self.imgsz:
                s = self.imgsz / max(h, w)
                fused = torch.nn.functional.interpolate(fused, size=(round(h * s), round(w * s)), mode="bilinear",
                                                        align_corners=False)
            size = tuple(fused.shape[-2:])
            return pad_to_stride(fused, int(self.detector.stride.max())), size

        def lower_loss(self, fused, batch) -> torch.Tensor:
            anchor = None
            if self.optim_cfg.structure_weight > 0:
                with torch.no_grad():
                    anchor = self.fuse(self.anchor_net, batch)
            return fidelity_loss(fused, batch["ir"], batch["vi"], anchor, self.optim_cfg)

        def det_params(self) -> list[torch.nn.Parameter]:
            return [p for p in self.detector.parameters() if p.requires_grad]

        def boxes_for(self, batch, z, size) -> torch.Tensor:
            """Boxes re-normalised to the stride-padded canvas."""
            b = batch["boxes"].clone().float()
            (h, w), (ph, pw) = size, z.shape[-2:]
            b[:, [2, 4]] *= w / pw
            b[:, [3, 5]] *= h / ph
            return b

        def fused_for_detector(self, batch):
            fused = self.fuse(self.fusion_net, batch)
            z, size = self.to_detector(fused)
            return fused, z, self.boxes_for(batch, z, size)

        # ---------------------------------------------------------------- steps
        def training_step(self, batch, batch_idx):
            step = {"joint": self.joint_step, "alternating": self.alternating_step, "bilevel": self.bilevel_step}
            logs = step[self.mode](batch)
            self.steps_done += 1
            self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=batch["ir"].shape[0])

        def joint_step(self, batch) -> dict:
            opt_f, opt_d = self.optimizers()
            fused, z, boxes = self.fused_for_detector(batch)
            lf = self.lower_loss(fused, batch)
            ld, _ = self.criterion(self.detector(z), boxes)
            opt_f.zero_grad()
            opt_d.zero_grad()
            self.manual_backward(lf + self.optim_cfg.det_weight * ld)
            opt_f.step()
            opt_d.step()
            return {"loss_fusion": lf.detach(), "loss_det": ld.detach()}

        def fusion_step(self, batch) -> dict:
            """Lower level with the detector held fixed (alternating mode)."""
            opt_f, _ = self.optimizers()
            fused, z, boxes = self.fused_for_detector(batch)
            lf = self.lower_loss(fused, batch)
            ld, _ = self.criterion(self.detector(z), boxes)
            opt_f.zero_grad()
            self.manual_backward(lf + self.optim_cfg.det_weight * ld, inputs=self.fusion_params())
            opt_f.step()
            return {"loss_fusion": lf.detach(), "loss_det": ld.detach()}

        def detector_step(self, batch) -> dict:
            """Upper level on the current fused images; no graph into the fusion net."""
            _, opt_d = self.optimizers()
            with torch.no_grad():
                _, z, boxes = self.fused_for_detector(batch)
            ld, _ = self.criterion(self.detector(z), boxes)
            opt_d.zero_grad()
            self.manual_backward(ld)
            opt_d.step()
            return {"loss_det": ld.detach()}

        def alternating_step(self, batch) -> dict:
            k = self.optim_cfg.k
            return self.fusion_step(batch) if self.steps_done % (k + 1) < k else self.detector_step(batch)

        def fusion_params(self) -> list:
            """Trainable fusion parameters (a preset may hold frozen parts, e.g. ldnf's denoiser)."""
            return [p for p in self.fusion_net.parameters() if p.requires_grad]

        def bilevel_step(self, batch) -> dict:
            """One-step unrolled hypergradient for θ, then the detector's own step on z*."""
            from torch.func import functional_call

            cfg = self.optim_cfg
            opt_f, opt_d = self.optimizers()
            fused, z, boxes = self.fused_for_detector(batch)
            lf = self.lower_loss(fused, batch)
            names = [n for n, p in self.detector.named_parameters() if p.requires_grad]
            params = self.det_params()
            unrolled = cfg.hypergrad == "unrolled"
            ld_inner, _ = self.criterion(self.detector(z if unrolled else z.detach()), boxes)
            grads = torch.autograd.grad(ld_inner, params, create_graph=unrolled, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
            lookahead = {n: p - cfg.inner_lr * (g if unrolled else g.detach()) for n, p, g in zip(names, params, grads, strict=True)}
            lookahead.update(dict(self.detector.named_buffers()))
            lookahead.update({n: p for n, p in self.detector.named_parameters() if not p.requires_grad})
            ld_outer, _ = self.criterion(functional_call(self.detector, lookahead, (z,)), boxes)
            opt_f.zero_grad()
            self.manual_backward(lf + cfg.det_weight * ld_outer, inputs=self.fusion_params())
            opt_f.step()
            # upper level: the detector steps on z* with the gradient it already has
            opt_d.zero_grad()
            for p, g in zip(params, grads, strict=True):
                p.grad = g.detach()
            opt_d.step()
            return {"loss_fusion": lf.detach(), "loss_det": ld_inner.detach(), "loss_det_lookahead": ld_outer.detach()}

        def on_save_checkpoint(self, checkpoint) -> None:
            checkpoint["steps_done"] = self.steps_done  # keeps the alternating schedule on resume

        def on_load_checkpoint(self, checkpoint) -> None:
            self.steps_done = int(checkpoint.get("steps_done", 0))

        def configure_optimizers(self):
            cfg = self.optim_cfg
            opt_f = torch.optim.Adam(self.fusion_params(), lr=cfg.lr_fusion)
            opt_d = torch.optim.AdamW(self.det_params(), lr=cfg.lr_detector, weight_decay=cfg.weight_decay)
            return [opt_f, opt_d]

    return DetectFusionModule


def DetectFusionModule(*args, **kwargs):
    """Build the stage's LightningModule (the class is defined lazily so importing is cheap)."""
    return _module_class()(*args, **kwargs)


# --------------------------------------------------------------------------- helpers for run()


def _samples(dataset):
    """Whole-image batches of a PairDataset in a fixed order (batch 1 when sizes differ)."""
    from fusionlab.data.collate import collate_samples

    bs = 16 if dataset.uniform_size else 1
    return torch.utils.data.DataLoader(dataset, batch_size=bs, shuffle=False, collate_fn=collate_samples)


@torch.no_grad()
def collect(dataset, imgsz: int, fusers: dict, device) -> dict:
    """Letterboxed ImageSets of `dataset` for IR, VIS and each fuser {name: fn(batch) -> rgb}."""
    from fusionlab.detection_protocol import letterbox, to_uint8

    images: dict[str, list[torch.Tensor]] = {"ir": [], "vis": [], **{k: [] for k in fusers}}
    boxes, ids = [], []
    for batch in _samples(dataset):
        n = len(batch["id"])
        ids += batch["id"]
        b = batch.get("boxes", torch.zeros(0, 6))
        boxes += [b[b[:, 0] == i, 1:] for i in range(n)]
        images["ir"] += list(to_uint8(batch["ir"]))
        images["vis"] += list(to_uint8(batch["vi"]))
        dev = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        for name, fn in fusers.items():
            images[name] += list(to_uint8(fn(dev)))
    out = {}
    for name, imgs in images.items():
        out[name] = letterbox(imgs, boxes, imgsz)
        out[name].ids = ids
    return out


def _text_fn(path: str | None):
    if path is None:
        return None
    from fusionlab.cache.store import EmbeddingCache

    cache = EmbeddingCache(path)
    return cache.get


def fuse_batch(net, batch: dict, text_fn) -> torch.Tensor:
    """RGB fused images [B,3,H,W] of a batch; a text-guided net gets its cached caption embeddings."""
    from fusionlab.models.fusion import fuse_rgb

    text = text_fn(batch["id"], batch["ir"].device) if getattr(net, "needs_text", False) else None
    return fuse_rgb(net, batch["ir"], batch["vi"], text)


def _fuser(net, text_fn):
    return lambda batch: fuse_batch(net, batch, text_fn)


def draw_boxes(images: torch.Tensor, preds: list[torch.Tensor], gts: list[torch.Tensor], names: list[str],
               min_conf: float = 0.25) -> torch.Tensor:
    """uint8 grid [3,H,W]: ground truth in green, predictions (conf >= min_conf) in red."""
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

    h, w = images.shape[-2:]
    panel = []
    for img, pred in zip(images, preds, strict=True):
        rows = [{"position": {"minX": float(x1), "minY": float(y1), "maxX": float(x2), "maxY": float(y2)},
                 "class_id": int(c), "box_caption": f"{names[int(c)]} {s:.2f}", "domain": "pixel",
                 "scores": {"conf": float(s)}}
                for x1, y1, x2, y2, s, c in pred.tolist() if s >= min_conf]
        panel.append(wandb.Image(img.permute(1, 2, 0).numpy(), boxes={
            "predictions": {"box_data": rows, "class_labels": dict(enumerate(names))}}))
    run.log({"detect/boxes_on_fused": panel})


# --------------------------------------------------------------------------- run


def run(cfg: Config, ctx: StageContext) -> dict:
    from fusionlab.models.detector import prepare_ultralytics

    prepare_ultralytics(ctx.run_dir or ctx.out_dir)  # before any ultralytics import

    import lightning as L

    from fusionlab import detection_protocol as proto
    from fusionlab.artifacts import atomic_write_bytes
    from fusionlab.data.datamodule import FusionDataModule
    from fusionlab.data.io import encode_png
    from fusionlab.errors import DataError, PipelineError
    from fusionlab.models.detector import build_detector, predict, save_detector
    from fusionlab.models.fusion import load_fusion_model, save_fusion_model

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = FusionDataModule(cfg.data)
    dm.require_eval_split()  # the detection protocol scores the val split
    if not dm.train_set.has_boxes:
        raise DataError(f"data.root '{cfg.data.root}' has no box labels (labels/*.txt); stage 5 trains a detector")
    names = dm.classes
    net = load_fusion_model(cfg.fusion)
    text_fn = _text_fn(cfg.embeddings)
    if getattr(net, "needs_text", False) and text_fn is None:
        raise PipelineError(f"fusion model in '{cfg.fusion}' needs text; set `embeddings:` to stage 3's embeddings/ folder")
    stage4_net = copy.deepcopy(net).eval()

    # --- bilevel / joint / alternating training of fusion net + detector
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    detector = build_detector(cfg.detector, nc=len(names), names=names)
    module = DetectFusionModule(net.train(), detector, mode=cfg.mode, optim=cfg.optim.model_dump(),
                                det_reduction=cfg.detector.loss_reduction, imgsz=cfg.detector.imgsz, text_fn=text_fn)
    trainer = ctx.make_trainer(cfg.trainer, name=cfg.mode, limit_val_batches=0)
    ctx.fit(trainer, module, dm, name=cfg.mode)
    refined = module.fusion_net.eval()
    trained_detector = module.detector.eval()

    if ctx.is_global_zero:
        extra = {k: v for k, v in net.checkpoint_config.items() if k not in ("kind", "model")}
        save_fusion_model(ctx.output("fusion"), refined, {**extra, "refined_by": f"detect ({cfg.mode})"})
        save_detector(ctx.output("detector"), trained_detector, cfg.detector)
    if not ctx.is_global_zero:  # the protocol and reports run once, on rank 0
        return {"mode": cfg.mode}

    # --- the protocol: four fresh detectors on identical splits and seeds
    device = accelerator_device(cfg.trainer.accelerator)
    fusers = {"fused": _fuser(stage4_net.to(device), text_fn), "bilevel": _fuser(refined.to(device), text_fn)}
    imgsz = cfg.protocol.detector.imgsz
    train_sets = collect(dm.train_set, imgsz, fusers, device)
    val_sets = collect(dm.val_set, imgsz, fusers, device)
    protocol_cfg = cfg.protocol.model_copy(update={"seed": cfg.seed})

    def make_trainer(epochs, set_name):
        # one device: the protocol runs on rank 0 only, after the (possibly distributed) training above
        return ctx.make_trainer(cfg.trainer, name=f"protocol-{set_name}", max_epochs=epochs, max_steps=-1,
                                limit_train_batches=None, limit_val_batches=0, devices=1, num_nodes=1,
                                strategy="auto")

    def fit(trainer, module, dataloader, set_name):
        ctx.fit(trainer, module, None, name=f"protocol-{set_name}", train_dataloaders=dataloader)

    models: dict = {}
    results = proto.run_protocol({s: (train_sets[s], val_sets[s]) for s in SETS}, names, protocol_cfg,
                                 make_trainer, fit, device, models)
    joint = proto.evaluate(trained_detector.to(device), val_sets["bilevel"], names, cfg.detector)
    meta = {"mode": cfg.mode, "train_images": len(dm.train_set), "val_images": len(dm.val_set), "seed": cfg.seed,
            "protocol": protocol_cfg.model_dump(), "stage_detector_on_bilevel": joint}
    proto.write_tables(results, ctx.out_dir, meta, title=f"Stage 5 detection protocol (mode: {cfg.mode})")

    # --- predicted boxes on bilevel-fused val images (by the protocol's detector for that set, trained
    # to convergence of the schedule; the upper-level detector saw far fewer steps): PNG + W&B panel
    n = min(cfg.panel_images, len(val_sets["bilevel"]))
    imgs = val_sets["bilevel"].images[:max(n, 1)]
    preds = [p.cpu() for p in predict(models["bilevel"], imgs.to(device).float() / 255.0, protocol_cfg.detector)]
    grid = draw_boxes(imgs, preds, val_sets["bilevel"].boxes[:len(imgs)], names)
    atomic_write_bytes(ctx.output("boxes.png"), encode_png(grid))
    run_wb = ctx.wandb_run()
    if run_wb is not None and n:
        _wandb_boxes(run_wb, imgs[:n], preds[:n], names)

    metrics: dict = {"mode": cfg.mode, "classes": names}
    for set_name, r in results.items():
        for key in ("map50", "map50_95", "precision", "recall"):
            metrics[f"{key}/{set_name}"] = round(r[key], 4)
    metrics["map50/stage_detector"] = round(joint["map50"], 4)
    best_source = max(results["ir"]["map50"], results["vis"]["map50"])
    metrics["fused_beats_sources"] = bool(results["fused"]["map50"] > best_source)
    metrics["bilevel_beats_sources"] = bool(results["bilevel"]["map50"] > best_source)
    logged = trainer.callback_metrics
    for key in ("train/loss_fusion", "train/loss_det"):
        if key in logged:
            metrics[f"{cfg.mode}/{key.split('/')[1]}_last"] = round(float(logged[key]), 4)
    return metrics
