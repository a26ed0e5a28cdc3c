"""EpochHistory: one per-epoch history for stages depth, denoiser and fusion, kept across a resume."""

from __future__ import annotations

import lightning as L
import torch

from fusionlab.stages.base import StageContext, TrainerConfig, WandbSettings
from fusionlab.stages.history import EpochHistory


class Tiny(L.LightningModule):
    """Logs a training loss per step/epoch and a validation value at validation-epoch end (as depth does)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(2.0))

    def training_step(self, batch, batch_idx):
        loss = (self.w * batch[0]).pow(2).mean()
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        self.log("train/w", self.w.detach(), on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        self.log("val_w", self.w.detach().abs())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader():
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 1)), batch_size=2)


def _fit(ctx, epochs):
    train = EpochHistory(prefix="train/", on="train", name="t")
    val = EpochHistory(prefix="val_", on="validation", name="v")
    trainer = ctx.make_trainer(TrainerConfig(max_epochs=epochs, enable_progress_bar=False, log_every_n_steps=1),
                               callbacks=[train, val], enable_model_summary=False)
    ctx.fit(trainer, Tiny(), None, train_dataloaders=_loader(), val_dataloaders=_loader())
    return train, val


def test_history_survives_a_resume(tmp_path):
    ctx = StageContext(name="t", out_dir=tmp_path, key="k", wandb=WandbSettings(enabled=False))
    train, val = _fit(ctx, 2)
    assert [r["epoch"] for r in train.rows] == [0, 1] and "train/loss_step" not in train.rows[0]
    losses = train.series("train/loss_epoch")
    assert len(losses) == 2 and losses[1] < losses[0]
    assert len(val.series("val_w")) == 2  # logged in the module's epoch-end hook, still recorded
    # a killed run resumes from last.ckpt with fresh callbacks: the first epochs come back from the checkpoint
    train2, val2 = _fit(ctx, 3)
    assert train2.series("train/loss_epoch")[:2] == losses and len(train2.rows) == 3
    assert val2.series("val_w")[:2] == val.series("val_w") and len(val2.rows) == 3
