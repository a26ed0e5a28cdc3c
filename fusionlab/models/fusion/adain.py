"""Adaptive instance normalisation with parameters generated from the source images (LDFusion's
feature fusion module, after Huang & Belongie 2017 and MUNIT).

Instead of batch statistics, each fused feature map is normalised per instance and re-styled
with (γ, β) that a small conv net reads off the IR and visible images, which keeps the fused
features' distribution aligned with the sources'.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def adain(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """γ ⊙ (x - mean(x)) / std(x) + β, statistics per sample and channel, γ/β of shape [B,C]."""
    return gamma[..., None, None] * F.instance_norm(x, eps=eps) + beta[..., None, None]


class AdaINParams(nn.Module):
    """Sources [B,in,H,W] -> [(γ_i [B,C_i], β_i [B,C_i])]: strided convs + ReLU, global average
    pooling, linear layers (the dashed box of the paper's fig. 6). γ starts at 1, β at 0."""

    def __init__(self, in_channels: int, channels: list[int], hidden: int = 32):
        super().__init__()
        self.channels = list(channels)
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.ReLU())
        self.linear = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2 * sum(self.channels)))
        nn.init.zeros_(self.linear[-1].weight)
        nn.init.zeros_(self.linear[-1].bias)

    def forward(self, sources: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        params = self.linear(self.convs(sources).mean((2, 3)))
        out, start = [], 0
        for c in self.channels:
            out.append((1 + params[:, start:start + c], params[:, start + c:start + 2 * c]))
            start += 2 * c
        return out
