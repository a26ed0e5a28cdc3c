"""Bilevel steps of DetectFusionModule under Lightning, for tests/stage5/test_ddp.py.

python ddp_bilevel.py OUT DEVICES   runs two training steps (max_steps=4: two optimizers) per hypergradient option on 8 fixed
samples (DEVICES=2: DDP over two CPU processes with gloo, 4 samples per rank; DEVICES=1: one
process, all 8 in one batch) and saves, per rank, the gradients of the first step and the
parameters after the last one as safetensors (OUT/<option>-rank<r>-{grads,params}.safetensors).

The nets are tiny and every loss is a per-sample mean, so the global-batch gradient is well
defined. BatchNorm is FROZEN (eval mode, running statistics fixed): per-rank batch statistics would
otherwise differ from those of the combined batch (SyncBatchNorm does not run on CPUs).
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from safetensors.torch import save_file
from torch import nn

OPTIONS = ("first_order", "unrolled", "implicit")


class TinyFusion(nn.Module):
    needs_text = False
    multiple = 1

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 3, 3, padding=1)

    def image_stats(self, ir, vi):
        return None

    def forward(self, ir, vi, text=None):
        return torch.sigmoid(self.conv(torch.cat([ir, vi], 1)))


class TinyDetector(nn.Module):
    """Regresses the first box centre of each image; its BatchNorm stays in eval mode."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        self.bn.eval()  # frozen BatchNorm (set here: Lightning restores modes by attribute, not through train())
        return torch.sigmoid(self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3))))


def criterion(preds, boxes):
    """Per-sample mean squared error of the predicted first-box centre."""
    idx = boxes[:, 0].long()
    first = torch.stack([boxes[idx == i][0, 2:4] for i in range(preds.shape[0])])
    return ((preds - first) ** 2).sum(1).mean(), None


def objective(z, batch, text):
    target = torch.maximum(batch["ir"], batch["vi"])
    return {"total": ((z - target) ** 2).mean() * 5}


class Pairs(torch.utils.data.Dataset):
    def __init__(self, n: int = 8):
        g = torch.Generator().manual_seed(0)
        self.ir, self.vi = torch.rand(n, 1, 12, 12, generator=g), torch.rand(n, 3, 12, 12, generator=g)
        self.boxes = torch.rand(n, 4, generator=g) * 0.5 + 0.25

    def __len__(self):
        return len(self.ir)

    def __getitem__(self, i):
        return i


DATA = Pairs()


def collate(indices, data=DATA):
    idx = torch.tensor(indices)
    boxes = torch.cat([torch.arange(len(idx))[:, None].float(), torch.zeros(len(idx), 1), data.boxes[idx]], 1)
    return {"id": [str(i) for i in indices], "ir": data.ir[idx], "vi": data.vi[idx], "boxes": boxes}


def build(hypergrad: str):
    from fusionlab.detection.bilevel import DetectFusionModule

    torch.manual_seed(0)
    optim = {"hypergrad": hypergrad, "lower_steps": 2, "inner_lr": 0.3, "prox": 5.0, "solver_steps": 4,
             "det_weight": 0.5, "lr_fusion": 1e-2, "lr_detector": 1e-2}
    return DetectFusionModule(TinyFusion(), TinyDetector(), objective, optim=optim, criterion=criterion)


class Record(L.Callback):
    """First-step gradients (both nets: one backward per step) and final parameters, per rank."""

    def __init__(self, out: Path, name: str):
        self.out, self.name, self.grads = out, name, None

    def on_before_optimizer_step(self, trainer, module, optimizer):
        if module.steps_done == 0 and self.grads is None:
            self.grads = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}

    def on_train_end(self, trainer, module):
        rank = trainer.global_rank
        save_file(self.grads, str(self.out / f"{self.name}-rank{rank}-grads.safetensors"))
        save_file({n: p.detach().contiguous() for n, p in module.named_parameters()},
                  str(self.out / f"{self.name}-rank{rank}-params.safetensors"))


def run(out: Path, devices: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for option in OPTIONS:
        batch = 8 // devices
        loader = torch.utils.data.DataLoader(Pairs(), batch_size=batch, shuffle=False, collate_fn=collate)
        trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                            max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[Record(out, option)])
        trainer.fit(build(option), train_dataloaders=loader)


if __name__ == "__main__":
    run(Path(sys.argv[1]), int(sys.argv[2]))
