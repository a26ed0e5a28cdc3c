"""A tiny real training stage: linear regression in Lightning, resumable, optionally slow."""

from __future__ import annotations

import time

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from fusionlab.artifacts import save_model
from fusionlab.config import Section
from fusionlab.stages.base import StageConfig, StageContext

OUTPUTS = ("model",)
HEADLINE = ("final_loss",)


class ModelConfig(Section):
    width: int = 4
    step_sleep_s: float = 0.0


class Config(StageConfig):
    model: ModelConfig = ModelConfig()
    n_samples: int = 64
    note: str = ""
    upstream: str | None = None
    fail_after_fit: bool = False  # a failed attempt: trains (checkpoints), writes its model, then raises


class Regression(L.LightningModule):
    def __init__(self, width: int, step_sleep_s: float):
        super().__init__()
        self.save_hyperparameters({"width": width, "step_sleep_s": step_sleep_s})
        self.net = torch.nn.Linear(width, 1)
        self.start_step: int | None = None
        self.last_loss = float("nan")

    def on_train_start(self):
        self.start_step = self.trainer.global_step

    def training_step(self, batch, _):
        if self.hparams.step_sleep_s:
            time.sleep(self.hparams.step_sleep_s)
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        self.last_loss = float(loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def run(cfg: Config, ctx: StageContext) -> dict:
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(cfg.n_samples, cfg.model.width, generator=g)
    y = x.sum(dim=1, keepdim=True)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)
    module = Regression(cfg.model.width, cfg.model.step_sleep_s)
    trainer = ctx.make_trainer(cfg.trainer, enable_progress_bar=False, enable_model_summary=False)
    ctx.fit(trainer, module, train_dataloaders=loader)
    if ctx.is_global_zero:
        save_model(ctx.output("model"), module.net, {"width": cfg.model.width, "upstream": cfg.upstream})
    if cfg.fail_after_fit:
        raise RuntimeError("fail_after_fit: this attempt fails on purpose")
    return {"final_loss": module.last_loss, "start_step": module.start_step,
            "global_step": trainer.global_step, "world_size": trainer.world_size}
