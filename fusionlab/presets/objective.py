"""The base of every preset's training objective (see README.md here for the contract).

An Objective turns a fused batch into {"total": scalar, <term>: scalar, ...}. It owns the frozen
networks its losses need (depth nets, CLIP, VGG, the previous epoch's net), loads them from the
stage config's `inputs.*`, and keeps them out of the fusion net's state dict. It is an
`nn.Module` so `.to(device)` moves those helpers; they stay in eval mode and never train.
"""

from __future__ import annotations

import torch
from torch import nn


class Objective(nn.Module):
    """Losses and weights of one preset. Subclasses set `loss_class` and implement `forward`."""

    loss_class: type = None  # the preset's pydantic loss Section (`loss.<preset>.*`)

    def __init__(self, cfg, net):
        super().__init__()
        self.cfg = cfg
        self.lc = self.loss_class.model_validate(cfg.loss[cfg.preset])
        self.luma = net.luma

    def train(self, mode: bool = True):  # frozen helpers stay in eval mode (BN statistics, dropout)
        return super().train(False)

    def frozen(self, module: nn.Module) -> nn.Module:
        """`module` in eval mode without gradients for its weights (gradients still flow through it)."""
        return module.eval().requires_grad_(False)

    def on_train_epoch_start(self, net: nn.Module, epoch: int) -> None:
        """Per-epoch state (e.g. Text2Pixels' z′ network); nothing by default."""

    def forward(self, fused: torch.Tensor, batch: dict, text: dict | None) -> dict[str, torch.Tensor]:
        raise NotImplementedError
