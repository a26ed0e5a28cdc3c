"""Text FiLM (ldnf paper, sec. III-C): an MLP on the CLIP text embedding predicts, for every
modulated layer i, a scale σ̂_i and a shift μ̂_i, and features become F̂ = (1 + σ̂) ⊙ F + μ̂.

The paper's "no language" ablation fixes σ̂ = 0, μ̂ = 0 (the scale and bias at 1 and 0): that is
`text_guidance: false`, which builds no FiLM at all. `zero_init=True` (not the default; the paper
says nothing about initialisation) starts the last layer at zero, so an untrained FiLM is the identity.
"""

from __future__ import annotations

import torch
from torch import nn


def film(features: torch.Tensor, sigma: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """F̂ = (1 + σ̂) ⊙ F + μ̂ with per-channel σ̂, μ̂ of shape [B,C] broadcast over H, W."""
    return (1 + sigma[..., None, None]) * features + mu[..., None, None]


class TextFiLM(nn.Module):
    """Pooled text embedding [B,D] -> [(σ̂_i [B,C_i], μ̂_i [B,C_i]) for each layer i]."""

    def __init__(self, text_dim: int, channels: list[int], hidden: int = 128, zero_init: bool = False):
        super().__init__()
        self.channels = list(channels)
        self.mlp = nn.Sequential(nn.Linear(text_dim, hidden), nn.SiLU(), nn.Linear(hidden, 2 * sum(self.channels)))
        if zero_init:
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, pooled: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        params = self.mlp(pooled.float())
        out, start = [], 0
        for c in self.channels:
            sigma, mu = params[:, start:start + c], params[:, start + c:start + 2 * c]
            out.append((sigma, mu))
            start += 2 * c
        return out
