"""Train the `baseline` fusion net on RoadScene train/ under a wall-clock budget, then fuse test/.

This is the quality experiment of issue 7 (CPU, <= 30 min). It uses the same pieces as stage 4
(FusionDataModule, build_fusion_model, ContentLoss, save_fusion_model), so its checkpoint is what
`fusionlab fuse` and `fusionlab export` read.

    .venv/bin/python benchmarks/train_roadscene.py --minutes 25 --out runs/roadscene-baseline
    .venv/bin/python -m fusionlab fuse --checkpoint runs/roadscene-baseline/fusion \
        --ir ../shared/datasets/roadscene/test/ir --vi ../shared/datasets/roadscene/test/vi \
        --out runs/roadscene-baseline/fused
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(SHARED / "datasets" / "roadscene" / "train"))
    p.add_argument("--out", default="runs/roadscene-baseline")
    p.add_argument("--minutes", type=float, default=25.0, help="wall-clock training budget")
    p.add_argument("--crop", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--w-int", type=float, default=1.0)
    p.add_argument("--w-grad", type=float, default=1.0)
    p.add_argument("--w-ssim", type=float, default=1.0)
    p.add_argument("--grad-gain", type=float, default=1.0, help="target edge = gain * max source edge")
    p.add_argument("--stretch", type=float, default=0.005, help="percentile of the per-source contrast stretch")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    os.environ.setdefault("WANDB_MODE", "offline")
    import lightning as L
    import torch

    from fusionlab.data.config import DataConfig
    from fusionlab.data.datamodule import FusionDataModule
    from fusionlab.losses import ContentLoss
    from fusionlab.models.fusion import build_fusion_model, save_fusion_model

    class Module(L.LightningModule):
        def __init__(self, hp: dict):
            super().__init__()
            self.save_hyperparameters(hp)
            self.net = build_fusion_model(hp["model"])
            self.loss = ContentLoss(**hp["loss"])

        def training_step(self, batch, _):
            ir, vi = batch["ir"], batch["vi"]
            vi_y = self.net.luma(vi)
            total, parts = self.loss(self.net(ir, vi), ir, vi_y)
            self.log("train/loss", total, prog_bar=True)
            for k, v in parts.items():
                self.log(f"train/{k}", v)
            return total

        def configure_optimizers(self):
            opt = torch.optim.AdamW(self.parameters(), lr=self.hparams["lr"], weight_decay=1e-4)
            return opt

    L.seed_everything(args.seed)
    out = Path(args.out)
    hp = {
        "model": {"name": "baseline", "width": args.width, "depth": args.depth, "stretch": args.stretch},
        "loss": {"w_int": args.w_int, "w_grad": args.w_grad, "w_ssim": args.w_ssim, "grad_gain": args.grad_gain,
                 "stretch": args.stretch},
        "lr": args.lr,
    }
    data = FusionDataModule(DataConfig(root=args.root, val_fraction=0.0, crop_size=args.crop,
                                       batch_size=args.batch_size, seed=args.seed))
    module = Module(hp)
    trainer = L.Trainer(
        max_time={"minutes": args.minutes}, max_epochs=-1, accelerator="cpu", logger=L.pytorch.loggers.CSVLogger(out),
        enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0, log_every_n_steps=10,
    )
    t0 = time.time()
    trainer.fit(module, train_dataloaders=data.train_dataloader())
    wall = time.time() - t0
    save_fusion_model(out / "fusion", module.net.eval(), extra={"train": {**hp, "root": args.root,
                      "wall_s": round(wall, 1), "epochs": trainer.current_epoch, "steps": trainer.global_step}})
    (out / "train.json").write_text(json.dumps({"wall_s": wall, "steps": trainer.global_step, **hp}, indent=2))
    print(f"trained {trainer.global_step} steps in {wall / 60:.1f} min -> {out / 'fusion'}")


if __name__ == "__main__":
    main()
