"""Stage 2 (`denoiser`): a DDPM on the 4-channel IR+RGB stack (LDNF III-B, eq. 2-8).

The diffusers `UNet2DModel` learns ε-prediction (eq. 8) on random crops of aligned pairs scaled
to [-1, 1]; an exponential moving average (EMA) of its weights is what gets saved and validated,
because EMA weights give steadier features and samples. Validation ε-MSE uses fixed noise and
timesteps (seeded per batch) on centre crops, so epochs are comparable and the curve shows real
progress, not sampling noise.

Outputs: `denoiser/` (diffusers `save_pretrained` pipeline folder, EMA weights) and `samples.png`
(generated pairs, IR | RGB per tile), which shows whether the joint distribution was learned.
Stage 4 reads `denoiser/` through `fusionlab.models.denoiser.DiffusionFeatureExtractor`.
"""

from __future__ import annotations

import copy
from typing import Literal

import lightning as L
import torch

from fusionlab.config import Section
from fusionlab.data.config import DataConfig
from fusionlab.stages.base import StageConfig, StageContext, TrainerConfig

OUTPUTS = ("denoiser", "samples.png")
HEADLINE = ("val_eps_mse_first", "val_eps_mse_last")


class UNetConfig(Section):
    """The SR3-style UNet (diffusers `UNet2DModel`) on 4 channels."""

    block_out_channels: list[int] = [16, 32, 64]
    layers_per_block: int = 1
    attention: bool = True  # self-attention at the lowest resolution
    norm_num_groups: int = 8
    sample_size: int = 64


class ScheduleConfig(Section):
    """The forward process: T and the β schedule (DDPMScheduler)."""

    num_train_timesteps: int = 1000
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"] = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02


class DenoiserTrainConfig(Section):
    lr: float = 1e-3
    weight_decay: float = 0.0
    ema_decay: float = 0.999  # upper bound; the effective decay warms up as (1+n)/(10+n)
    val_crop: int | None = 64  # centre crop for validation ε-MSE (None = whole images)
    samples: int = 8  # generated pairs in samples.png (0 = none)
    sample_size: list[int] = [64, 64]  # [H, W] of generated samples
    sample_steps: int = 25  # DDIM steps for samples.png


class Config(StageConfig):
    stage: str = "denoiser"
    data: DataConfig
    model: UNetConfig = UNetConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: DenoiserTrainConfig = DenoiserTrainConfig()
    trainer: TrainerConfig = TrainerConfig(max_epochs=8)


def _ema_fn(decay: float):
    """In-place EMA with warm-up, so a short run is not dominated by the random initial weights."""

    @torch.no_grad()
    def update(ema_params, params, num_averaged):
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(list(ema_params), list(params), 1.0 - d)

    return update


class DenoiserModule(L.LightningModule):
    """ε-prediction DDPM training with EMA weights (torch AveragedModel)."""

    def __init__(self, model: dict, schedule: dict, train: dict, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        from torch.optim.swa_utils import AveragedModel

        from fusionlab.models.denoiser import build_scheduler, build_unet

        self.unet = build_unet(**model)
        self.scheduler = build_scheduler(**schedule)
        self.ema = AveragedModel(self.unet, multi_avg_fn=_ema_fn(train["ema_decay"]), use_buffers=False)
        self.ema.requires_grad_(False)
        import torchmetrics

        self.val_mse = torchmetrics.MeanMetric()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        from fusionlab.models.denoiser import epsilon_mse, to_model_space

        x0 = to_model_space(batch["ir"], batch["vi"])
        loss = epsilon_mse(self.unet, self.scheduler, x0)
        self.log("train_eps_mse", loss, prog_bar=True, batch_size=x0.shape[0])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.ema.update_parameters(self.unet)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        from fusionlab.models.denoiser import epsilon_mse, to_model_space

        x0 = to_model_space(batch["ir"], batch["vi"])
        crop = self.hparams.train["val_crop"]
        if crop is not None:
            h, w = x0.shape[-2:]
            top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
            x0 = x0[..., top:top + crop, left:left + crop]
        gen = torch.Generator().manual_seed(self.hparams.seed * 7919 + batch_idx)
        loss = epsilon_mse(self.ema.module, self.scheduler, x0, generator=gen)
        self.val_mse.update(loss, weight=x0.shape[0])

    def on_validation_epoch_end(self) -> None:
        value = float(self.val_mse.compute())
        self.val_mse.reset()
        self.log("val_eps_mse", value, prog_bar=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.unet.parameters(), lr=self.hparams.train["lr"],
                                weight_decay=self.hparams.train["weight_decay"])
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.train["lr"], total_steps=total,
                                                    pct_start=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def run(cfg: Config, ctx: StageContext) -> dict:
    from fusionlab.data.datamodule import FusionDataModule
    from fusionlab.data.io import write_image
    from fusionlab.models.denoiser import generate_samples, sample_grid, save_denoiser
    from fusionlab.stages.history import EpochHistory

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = DenoiserModule(cfg.model.model_dump(), cfg.schedule.model_dump(), cfg.train.model_dump(), cfg.seed)
    datamodule = FusionDataModule(cfg.data)
    val = EpochHistory(prefix="val_eps_mse", on="validation")  # checkpointed: survives a resume
    trainer = ctx.make_trainer(cfg.trainer, name="main", callbacks=[val])
    ctx.fit(trainer, module, datamodule, name="main")

    history = val.series("val_eps_mse")
    metrics: dict = {}
    if history:
        metrics = {
            "val_eps_mse_first": history[0],
            "val_eps_mse_last": history[-1],
            "val_eps_mse_history": [round(v, 5) for v in history],
        }
    if not ctx.is_global_zero:
        return metrics
    unet = copy.deepcopy(module.ema.module).cpu().float().eval()
    save_denoiser(ctx.output("denoiser"), unet, module.scheduler)
    if cfg.train.samples > 0:
        x = generate_samples(unet, module.scheduler, n=cfg.train.samples, size=tuple(cfg.train.sample_size),
                             steps=cfg.train.sample_steps, seed=cfg.seed)
        grid = sample_grid(x)
        write_image(ctx.output("samples.png"), grid)
        run_ = ctx.wandb_run()
        if run_ is not None:
            import wandb

            run_.log({"samples": wandb.Image(grid.permute(1, 2, 0).numpy(), caption="generated pairs: IR | RGB")})
    return metrics
