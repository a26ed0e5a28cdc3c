"""Stage 4: train the fusion network of a method preset, then fuse the eval split and score it.

`preset:` picks a folder of `fusionlab/presets/` (network, objective, default config, fidelity
table). `expand_config` merges the preset's `preset.yaml` under the stage YAML, so every key can
still be overridden, and checks `model.*` against the preset's network and `loss.<preset>.*`
against its loss class at plan time. Every paper preset has `text_guidance: on|off`, `ldnf` also
`depth_loss: on|off` (the papers' ablations); see docs/presets.md.

Upstream artifacts are read, never recomputed: caption embeddings come from stage 3's cache by
sample id (no text encoder call while training), the frozen depth nets from stage 1, the
denoiser from stage 2. The preset's Objective loads the frozen helpers its losses need (depth
nets, CLIP, VGG); they are training-only and never part of the saved network.

Outputs: `fusion/` (save_fusion_model: what `fusionlab fuse` loads), `fused/` (PNG per eval
image, same stem as the input) and `eval/` (the tables of `fusionlab.metrics.evaluate`, the same
evaluator `fusionlab eval` runs: per_image.csv, summary.{md,csv,json}, comparison.{md,csv}).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from pydantic import Field, model_validator

from fusionlab.config import Section
from fusionlab.data.config import DataConfig
from fusionlab.stages.base import StageConfig, StageContext

OUTPUTS = ("fusion", "fused", "eval")
HEADLINE = ("eval/EN", "eval/SD", "eval/SF", "eval/MI", "eval/VIF", "eval/Qabf", "eval/SSIM")


# --------------------------------------------------------------------------- config


class InputsConfig(Section):
    """Upstream artifacts (`${stage.outputs.name}` in the YAML); a preset needs only some."""

    depth_ir: str | None = None
    depth_vis: str | None = None
    denoiser: str | None = None
    embeddings: str | None = None
    clip: str | None = None
    prompts: str | None = None


class OptimConfig(Section):
    """Adam and the learning-rate schedule (per epoch; the warm-up is per step).

    constant | step: ×gamma at epoch `first_decay` (default `step_epochs`) and every `step_epochs`
    after | exponential: ×gamma every epoch | linear: ×(1 - epoch/(max_epochs + 1)), Dif-Fusion's rule.
    """

    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "step", "exponential", "linear"] = "constant"
    gamma: float = Field(0.5, gt=0)
    step_epochs: int | None = Field(None, gt=0)
    first_decay: int | None = Field(None, ge=0)
    warmup_epochs: float = Field(0.0, ge=0)  # linear warm-up from lr/steps to lr over this many epochs

    @model_validator(mode="before")
    @classmethod
    def _step_implies_schedule(cls, data):
        # `optim.step_epochs: 50` alone has always meant "halve every 50 epochs"
        if isinstance(data, dict) and data.get("step_epochs") and "schedule" not in data:
            data = {**data, "schedule": "step"}
        return data

    @model_validator(mode="after")
    def _step_needs_a_period(self):
        if self.schedule == "step" and not self.step_epochs:
            raise ValueError("optim.schedule: step needs optim.step_epochs (epochs between decays)")
        return self

    def multiplier(self, step: int, per_epoch: int, max_epochs: int) -> float:
        """The learning-rate multiplier after `step` optimiser steps (`per_epoch` steps an epoch)."""
        warmup = self.warmup_epochs * per_epoch
        warm = min(1.0, (step + 1) / warmup) if warmup else 1.0
        return warm * self.factor(step // per_epoch, max_epochs)

    def factor(self, epoch: int, max_epochs: int) -> float:
        """The learning-rate multiplier during `epoch` (0-based), warm-up excluded."""
        if self.schedule == "step":
            first = self.step_epochs if self.first_decay is None else self.first_decay
            return self.gamma ** (1 + (epoch - first) // self.step_epochs) if epoch >= first else 1.0
        if self.schedule == "exponential":
            return self.gamma ** epoch
        if self.schedule == "linear":
            return max(0.0, 1.0 - epoch / float(max_epochs + 1))
        return 1.0


class EvalConfig(Section):
    convention: Literal["cddfuse", "matlab"] = "cddfuse"
    metrics: list[str] = ["EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM"]
    panels: int = 4  # IR | VIS | fused image panels logged to W&B


class Config(StageConfig):
    data: DataConfig
    preset: str = "ldnf"
    profile: str | None = None      # a named set of overrides in the preset's preset.yaml (e.g. cpu-demo)
    text_guidance: bool = True
    depth_loss: bool | None = None  # ldnf only (None for presets without a depth-driven loss)
    model: dict[str, Any] = {}      # constructor arguments of the preset's network (checked by expand_config)
    loss: dict[str, dict[str, Any]] = {}  # {preset: its loss section} (only the chosen preset's)
    inputs: InputsConfig = InputsConfig()
    optim: OptimConfig = OptimConfig()
    eval: EvalConfig = EvalConfig()


def code_dependencies(config: dict) -> list[str]:
    """The preset's modules, which the registry imports by name (for the stage's code key)."""
    from fusionlab.presets import preset_modules

    return preset_modules(config["preset"])


def expand_config(raw: dict) -> dict:
    """The preset's defaults merged under `raw`, checked against the preset (see fusionlab.presets)."""
    from fusionlab.presets import expand_stage_config, get_preset

    cfg = expand_stage_config(raw)
    if get_preset(cfg["preset"]).needs_text and cfg.get("text_guidance", True) is not False:
        # a flip makes a caption's "left"/"right" wrong; the papers use none (docs/stages/captions.md)
        cfg.setdefault("data", {}).setdefault("flip", False)
    return cfg


def pretrained_parts(cfg: Config) -> list:
    """Pretrained parts (fusionlab.provenance): ldfusion's VGG-19, and stage 3's CLIP wherever it is used."""
    from fusionlab.losses.perceptual import vgg19_source
    from fusionlab.presets import get_preset
    from fusionlab.provenance import Part, upstream_clip_part

    parts = []
    if cfg.preset == "ldfusion":
        vgg = cfg.loss["ldfusion"].get("vgg_pretrained")
        parts.append(Part("VGG-19", "loss.ldfusion.vgg_pretrained", vgg, "LDFusion's feature-fidelity loss L_v",
                          "L_v matches random features, not ImageNet ones", source=vgg19_source(vgg) if vgg else None))
    clip = cfg.inputs.clip or (str(Path(cfg.inputs.embeddings).parent / "clip") if cfg.inputs.embeddings else None)
    reads_text = get_preset(cfg.preset).needs_text or cfg.preset == "ldfusion"
    if clip and cfg.text_guidance and reads_text:
        role = "LDFusion's language-driven loss" if cfg.preset == "ldfusion" else "text guidance"
        parts.append(upstream_clip_part(clip, "inputs.clip", role))
    return parts


# --------------------------------------------------------------------------- training


class FusionTraining(L.LightningModule):
    """One preset's network trained on its Objective. The objective (with its frozen helpers) is
    held outside the module tree, so checkpoints carry the network only."""

    def __init__(self, config: dict, net=None):
        super().__init__()
        from fusionlab.presets import build_net, build_objective, require_input, required_inputs

        self.save_hyperparameters({"config": config})
        self.cfg = Config.model_validate(config)
        for key, why in required_inputs(self.cfg).items():  # one clear error before any work
            require_input(self.cfg, key, why)
        self.net = net if net is not None else build_net(self.cfg)
        object.__setattr__(self, "objective", build_objective(self.cfg, self.net))
        self.cache = None
        if self.net.needs_text:
            from fusionlab.cache import EmbeddingCache

            self.cache = EmbeddingCache(require_input(self.cfg, "embeddings", f"{self.cfg.preset} with text_guidance"))

    def text_for(self, ids: list[str], device=None) -> dict | None:
        return None if self.cache is None else self.cache.get(ids, device or self.device)

    def on_fit_start(self) -> None:
        self.objective.to(self.device)

    def on_train_epoch_start(self) -> None:
        self.objective.on_train_epoch_start(self.net, self.current_epoch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        from fusionlab.models.fusion import forward_padded

        text = self.text_for(batch["id"])
        fused = forward_padded(self.net, batch["ir"], batch["vi"], text)
        parts = self.objective(fused.float(), batch, text)
        bs = batch["ir"].shape[0]
        self.log("train/loss", parts["total"], prog_bar=True, on_step=True, on_epoch=True, batch_size=bs)
        for name, value in parts.items():
            if name != "total":
                self.log(f"train/{name}", value.detach().float(), on_step=False, on_epoch=True, batch_size=bs)
        return parts["total"]

    def configure_optimizers(self):
        oc = self.cfg.optim
        params = [p for p in self.net.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=oc.lr, weight_decay=oc.weight_decay)
        if oc.schedule == "constant" and not oc.warmup_epochs:
            return opt
        max_epochs = max(int(self.trainer.max_epochs or 1), 1)
        per_epoch = max(1, int(self.trainer.estimated_stepping_batches) // max_epochs)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: oc.multiplier(step, per_epoch, max_epochs))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# --------------------------------------------------------------------------- stage entry point


def run(cfg: Config, ctx: StageContext) -> dict:
    from fusionlab.data.datamodule import FusionDataModule
    from fusionlab.models.fusion import save_fusion_model
    from fusionlab.stages.history import EpochHistory

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = FusionTraining(cfg.model_dump(mode="json"))
    datamodule = FusionDataModule(cfg.data)
    datamodule.require_eval_split()  # the stage ends by fusing and scoring it
    history = EpochHistory(prefix="train/", on="train", name="fusion")
    trainer = ctx.make_trainer(cfg.trainer, name="fusion", callbacks=[history])
    ctx.fit(trainer, module, datamodule, name="fusion")
    epochs = history.series("train/loss_epoch")
    terms = {k[len("train/"):]: history.series(k) for k in dict.fromkeys(k for r in history.rows for k in r)
             if k.startswith("train/") and not k.startswith("train/loss")}
    metrics: dict[str, Any] = {"train/loss_epochs": epochs, "train/terms": terms}
    if epochs:
        metrics["train/loss_first"], metrics["train/loss_last"] = epochs[0], epochs[-1]
    import torch.distributed as dist

    sharded = trainer.world_size > 1 and dist.is_available() and dist.is_initialized()
    if not sharded and not ctx.is_global_zero:
        return metrics
    net = module.net.float().eval()
    if ctx.is_global_zero:
        save_fusion_model(ctx.output("fusion"), net, extra={
            "preset": cfg.preset, "text_guidance": cfg.text_guidance, "depth_loss": cfg.depth_loss,
            "needs_text": bool(net.needs_text),
            "train": {k: v for k, v in metrics.items() if k not in ("train/loss_epochs", "train/terms")}})
    scores = evaluate(cfg, ctx, module, net, datamodule, sharded)
    metrics.update({k: (round(v, 6) if math.isfinite(v) else None) for k, v in scores.items()})
    return metrics


def evaluate(cfg: Config, ctx: StageContext, module: FusionTraining, net, datamodule, sharded: bool) -> dict:
    """Fuse the eval split into `fused/` and score it into `eval/` with the evaluator `fusionlab eval`
    runs. Under DDP every rank fuses a share of the batches and the scores are reduced across ranks;
    rank 0 writes the tables. Returns the manifest metrics."""
    import torch.distributed as dist

    from fusionlab.artifacts import atomic_dir
    from fusionlab.errors import PipelineError
    from fusionlab.metrics.evaluate import (
        DepthProbe,
        Evaluator,
        FusionQuality,
        ObjectRetention,
        score_split,
        write_tables,
    )

    rank, world = (dist.get_rank(), dist.get_world_size()) if sharded else (0, 1)
    evaluator = Evaluator([FusionQuality(cfg.eval.metrics, cfg.eval.convention)], sync=sharded)
    depth = DepthProbe(cfg.inputs.depth_ir, cfg.inputs.depth_vis, sync=sharded)
    loader = datamodule.eval_dataloader()
    # which modality sees each object (synthetic scenes): ground truth, for scoring only
    objects = ObjectRetention(getattr(loader.dataset, "visibility", None), sync=sharded)
    staging = atomic_dir(ctx.output("fused")) if rank == 0 else None
    folder = [str(staging.__enter__()) if staging is not None else None]
    try:
        if sharded:
            dist.broadcast_object_list(folder, src=0)  # every rank writes into rank 0's staging folder
        panels = score_split(net, loader, folder[0], evaluator, cfg.preset,
                             text_fn=module.text_for if module.cache is not None else None, depth=depth,
                             objects=objects,
                             panels=cfg.eval.panels if rank == 0 else 0, recorded_dir=ctx.output("fused"),
                             shard=(rank, world))
        if sharded:
            dist.barrier()
        evaluator.reduce()  # collective under DDP, like depth.compute()
        depth_scores = depth.compute()
        retention = objects.compute()
        if evaluator.summary()[cfg.preset]["n"] == 0:
            raise PipelineError("the eval split is empty: nothing to fuse")
    except BaseException as exc:
        if staging is not None:
            staging.__exit__(type(exc), exc, exc.__traceback__)
        raise
    if staging is not None:
        staging.__exit__(None, None, None)
        with atomic_dir(ctx.output("eval")) as eval_dir:
            write_tables(f"{eval_dir}/", evaluator, cfg.eval.convention, extra={"preset": cfg.preset, "depth": depth_scores},
                         retention=retention)
    means = {m: evaluator.means(m) for m in evaluator.methods}
    run_ = ctx.wandb_run()
    if run_ is not None:
        import wandb

        run_.log({"eval/panels": [wandb.Image(img, caption=f"{sid}: IR | VIS | fused") for sid, img in panels],
                  **{f"eval/{k}": v for k, v in means[cfg.preset].items()}})
    scores = {f"eval/{k}": v for k, v in means[cfg.preset].items()}
    scores.update({f"{m}/{k}": v for m in evaluator.methods if m != cfg.preset for k, v in means[m].items()})
    scores.update(depth_scores)
    for method, values in retention.items():  # retention/<group>/<stat> for the net, ref/<name>/retention/... beside
        prefix = "" if method == cfg.preset else f"{method}/"
        scores.update({f"{prefix}{k}": v for k, v in values.items()})
    return scores
