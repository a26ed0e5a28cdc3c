"""Restormer transformer block (Zamir et al., CVPR 2022), as TGIF uses it in its encoder and decoder.

Multi-Dconv head Transposed Attention (MDTA) attends across channels rather than pixels, so its
cost grows linearly with image size (a whole 640x480 frame fits on a CPU), and a Gated-Dconv
Feed-forward Network (GDFN) mixes locally. Both are pre-norm residual units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of every pixel of [B,C,H,W]."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class MDTA(nn.Module):
    """Transposed self-attention: per head, a C/h x C/h attention map from L2-normalised q, k."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"restormer: dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.qkv_dw = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in (q, k, v))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(-1)
        return self.proj((attn @ v).reshape(b, c, h, w))


class GDFN(nn.Module):
    """Gated feed-forward: GELU(dwconv(W1 x)) ⊙ dwconv(W2 x), projected back."""

    def __init__(self, dim: int, expansion: float = 2.66):
        super().__init__()
        hidden = int(dim * expansion)
        self.inp = nn.Conv2d(dim, 2 * hidden, 1)
        self.dw = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.out = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.dw(self.inp(x)).chunk(2, dim=1)
        return self.out(F.gelu(a) * g)


class RestormerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, expansion: float = 2.66):
        super().__init__()
        self.norm1, self.attn = ChannelLayerNorm(dim), MDTA(dim, heads)
        self.norm2, self.ffn = ChannelLayerNorm(dim), GDFN(dim, expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))
