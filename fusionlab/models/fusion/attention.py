"""Text2pixels' text-guided attention (text2pixels paper, eq. 2-4), on feature maps.

Intra-domain fusion: multi-head self-attention among the pixels of one modality (Q, K, V all from
the image). Inter-domain fusion: multi-head cross-attention with the image as queries and the
CLIP text tokens as keys and values, so each pixel gathers the caption semantics relevant to it.
Both are pre-norm residual units built on `nn.MultiheadAttention`.
"""

from __future__ import annotations

import torch
from torch import nn


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """[B,C,H,W] -> [B,H*W,C]."""
    return x.flatten(2).transpose(1, 2)


def to_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B,H*W,C] -> [B,C,H,W]."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, height, width)


class SelfAttention2d(nn.Module):
    """x + MHSA(LN(x)) over the spatial positions of [B,C,H,W] (eq. 2-3)."""

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.norm(to_tokens(x))
        out, _ = self.attn(t, t, t, need_weights=False)
        return x + to_map(out, h, w)


class TextCrossAttention2d(nn.Module):
    """x + MHA(Q = LN(x), K = V = text tokens) (eq. 4); padded text tokens are masked out."""

    def __init__(self, dim: int, text_dim: int, heads: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.text_norm = nn.LayerNorm(text_dim)
        self.attn = nn.MultiheadAttention(dim, heads, kdim=text_dim, vdim=text_dim, batch_first=True)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.norm(to_tokens(x))
        kv = self.text_norm(tokens.to(q.dtype))
        pad = None if mask is None else ~mask.bool()
        if pad is not None:
            pad = pad.clone()
            pad[pad.all(1), 0] = False  # a caption with no real token still gets one key
        out, _ = self.attn(q, kv, kv, key_padding_mask=pad, need_weights=False)
        return x + to_map(out, h, w)
