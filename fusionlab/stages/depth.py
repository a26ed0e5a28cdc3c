"""Stage 1 (`depth`): train one depth estimator on IR and one on VIS with the SiLog loss (LDNF III-A).

Both nets learn metric depth from the dataset's ground truth (KAIST LiDAR for real data, the
rendered depth of the synthetic scenes by default). Stage 3 uses them to write depth-aware
captions, and stage 4 passes the fused image through them for the depth-driven loss.

Each net is one resumable training phase (`ir`, then `vis`). Validation logs AbsRel, RMSE and δ1
on the val split every epoch. At the end, a panel (input | prediction | ground truth | error)
goes to W&B and to `val_<net>.png`, and the nets are saved to `depth_ir/` and `depth_vis/`.
The returned metrics record the first- and last-epoch AbsRel of each net, so the manifest shows
how much training helped.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch

from fusionlab.config import Section
from fusionlab.data.config import DataConfig
from fusionlab.stages.base import StageConfig, StageContext, TrainerConfig

NETS = {"ir": "ir", "vis": "vi"}  # net name -> batch key of its input image
OUTPUTS = ("depth_ir", "depth_vis", "val_ir.png", "val_vis.png")
HEADLINE = ("ir/val_absrel_last", "vis/val_absrel_last", "ir/absrel_improvement", "vis/absrel_improvement")


class DepthModelConfig(Section):
    """Backbone of both depth nets (see fusionlab.models.depth)."""

    arch: Literal["compact", "hf"] = "compact"
    base_channels: int = 8  # compact: width of the first level
    levels: int = 3  # compact: stride-2 stages
    min_depth: float = 0.1  # metres; outputs are bounded to [min_depth, max_depth]
    max_depth: float = 120.0
    pretrained: str | None = None  # hf: hub id (e.g. depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf) or folder
    input_size: list[int] | None = None  # hf: [H, W] fed to the transformer; None = input size


class DepthTrainConfig(Section):
    """Optimisation of each net."""

    lr: float = 3e-3
    weight_decay: float = 1e-4
    silog_lambda: float = 0.85  # 1.0 = LDNF eq. 1 (fully scale-invariant, cannot learn metric scale)
    panel_images: int = 4  # val images shown in the panel


class Config(StageConfig):
    stage: str = "depth"
    data: DataConfig
    model: DepthModelConfig = DepthModelConfig()
    train: DepthTrainConfig = DepthTrainConfig()
    trainer: TrainerConfig = TrainerConfig(max_epochs=6)


def pretrained_parts(cfg: Config) -> list:
    """The depth backbone (fusionlab.provenance): a transformers model fine-tuned here, or the compact
    CNN, which starts from random weights (LDNF fine-tunes ZoeDepth)."""
    from fusionlab.provenance import Part
    from fusionlab.weights import hub_source

    role = "stage-1 depth (the captions' ranges, LDNF's depth loss)"
    if cfg.model.arch == "compact":
        return [Part("compact depth CNN", "model.pretrained", None, role,
                     "depth is learned from this dataset alone, not fine-tuned from a pretrained model as in LDNF")]
    spec = cfg.model.pretrained
    if spec is None:  # the hf backbone without weights is a config error, raised when it is built
        return []
    return [Part("transformers depth model", "model.pretrained", spec, role, "", source=hub_source(spec),
                 instead="model.arch=compact (random init)")]


def depth_metric():
    """Depth metrics (AbsRel, RMSE, δ1, ...) as a DDP-reducible torchmetrics Metric."""
    from fusionlab.metrics.depth import DepthMetrics

    return DepthMetrics()


class DepthModule(L.LightningModule):
    """One depth estimator trained with SiLog on the pixels where ground truth is valid."""

    def __init__(self, model: dict, train: dict, net: str):
        super().__init__()
        self.save_hyperparameters()
        from fusionlab.models.depth import build_depth_estimator

        self.key = NETS[net]
        self.estimator = build_depth_estimator(
            {**model, "in_channels": 1 if net == "ir" else 3}, key="model.pretrained"
        )
        self.metric = depth_metric()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.estimator(x)

    def _depth(self, batch: dict) -> torch.Tensor:
        if "depth" not in batch:
            from fusionlab.errors import DataError

            raise DataError("the depth stage needs depth ground truth: the dataset under data.root has no "
                            "depth/ folder for every pair (16-bit PNG, metres x 256); use KAIST with LiDAR "
                            "depth or the synthetic scenes")
        return batch["depth"]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        from fusionlab.losses.silog import silog_loss

        gt = self._depth(batch)
        loss = silog_loss(self(batch[self.key]), gt, lam=self.hparams.train["silog_lambda"])
        self.log("train_silog", loss, prog_bar=True, batch_size=gt.shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        from fusionlab.losses.silog import silog_loss

        gt = self._depth(batch)
        pred = self(batch[self.key]).float()
        self.metric.update(pred, gt)
        loss = silog_loss(pred, gt, lam=self.hparams.train["silog_lambda"])
        self.log("val_silog", loss, batch_size=gt.shape[0], sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        values = {k.lower(): float(v) for k, v in self.metric.compute().items()}
        self.metric.reset()
        for name, value in values.items():
            self.log(f"val_{name}", value, prog_bar=name == "absrel")

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.train["lr"],
                                weight_decay=self.hparams.train["weight_decay"])
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.train["lr"], total_steps=total,
                                                    pct_start=0.15)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _colour_depth(depth: torch.Tensor, valid: torch.Tensor, hi: float) -> torch.Tensor:
    """[1,H,W] metres -> [3,H,W] turbo colours on inverse depth (near = warm); invalid = black."""
    import kornia

    inv = torch.where(valid, 1.0 / depth.clamp(min=1e-3), torch.zeros_like(depth))
    rgb = kornia.color.apply_colormap((inv / hi).clamp(0, 1), kornia.color.ColorMap("turbo"))[0]
    return rgb * valid


@torch.no_grad()
def depth_panel(estimator, images: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """[3, n*H, 4*W] panel: one row per image, columns input | prediction | ground truth | error.

    Depth columns share one colour scale per row (inverse depth). Error is |pred-gt|/gt on valid
    pixels, shown with the "hot" map from 0 to 0.5 (50% relative error and above = brightest).
    """
    import kornia

    pred = estimator(images).float()
    rows = []
    for x, p, g in zip(images, pred, gt, strict=True):
        valid = g > 0
        hi = float((1.0 / g[valid].clamp(min=1e-3)).max()) if valid.any() else float((1.0 / p).max())
        err = torch.where(valid, (p - g).abs() / g.clamp(min=1e-3), torch.zeros_like(g))
        err_rgb = kornia.color.apply_colormap((err / 0.5).clamp(0, 1), kornia.color.ColorMap("hot"))[0] * valid
        tiles = [x.expand(3, -1, -1), _colour_depth(p, torch.ones_like(valid), hi), _colour_depth(g, valid, hi), err_rgb]
        rows.append(torch.cat([t.cpu().float() for t in tiles], dim=2))
    return torch.cat(rows, dim=1).clamp(0, 1)


def _panel_batch(datamodule, key: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, depths = [], []
    for batch in datamodule.val_dataloader():
        if "depth" not in batch:
            break
        images.append(batch[key])
        depths.append(batch["depth"])
        if sum(len(i) for i in images) >= n:
            break
    if not images:
        return torch.empty(0), torch.empty(0)
    return torch.cat(images)[:n], torch.cat(depths)[:n]


def train_net(cfg: Config, ctx: StageContext, net: str, datamodule) -> tuple[DepthModule, dict]:
    """Train (or resume) one net; returns the module and its metrics."""
    from fusionlab.stages.history import EpochHistory

    module = DepthModule(cfg.model.model_dump(), cfg.train.model_dump(), net)
    history = EpochHistory(prefix="val_", on="validation", name=net)  # checkpointed: survives a resume
    trainer = ctx.make_trainer(cfg.trainer, name=net, callbacks=[history])
    ctx.fit(trainer, module, datamodule, name=net)
    rows = [r for r in history.rows if "val_absrel" in r]
    metrics: dict = {}
    if rows:
        first, last = rows[0], rows[-1]
        metrics = {
            f"{net}/val_absrel_first": first["val_absrel"],
            f"{net}/val_absrel_last": last["val_absrel"],
            f"{net}/val_rmse_last": last["val_rmse"],
            f"{net}/val_delta1_last": last["val_delta1"],
            f"{net}/absrel_improvement": (first["val_absrel"] - last["val_absrel"]) / max(first["val_absrel"], 1e-12),
            f"{net}/val_absrel_history": [round(r["val_absrel"], 5) for r in rows],
        }
    return module, metrics


def run(cfg: Config, ctx: StageContext) -> dict:
    from fusionlab.data.datamodule import FusionDataModule
    from fusionlab.data.io import write_image
    from fusionlab.models.depth import save_depth_estimator

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    metrics: dict = {}
    datamodule = FusionDataModule(cfg.data)  # one scan of the dataset for both nets
    for net, key in NETS.items():
        module, net_metrics = train_net(cfg, ctx, net, datamodule)
        metrics.update(net_metrics)
        if not ctx.is_global_zero:
            continue
        estimator = module.estimator.cpu().float().eval()
        save_depth_estimator(ctx.output(f"depth_{net}"), estimator)
        images, gt = _panel_batch(datamodule, key, cfg.train.panel_images)
        if len(images):
            panel = depth_panel(estimator, images, gt)
            write_image(ctx.output(f"val_{net}.png"), panel)
            run_ = ctx.wandb_run()
            if run_ is not None:
                import wandb

                run_.log({f"{net}/val_panel": wandb.Image(panel.permute(1, 2, 0).numpy(),
                                                           caption="input | prediction | ground truth | |error|/gt")})
    return metrics
