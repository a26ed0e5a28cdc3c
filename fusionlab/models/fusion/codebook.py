"""Text2pixels' codebook quantisation (text2pixels paper, eq. 5-6, 11; VQ-VAE style).

Every feature vector is replaced by its nearest codebook entry (squared L2, eq. 5-6); gradients
pass straight through the non-differentiable arg-min to the encoder, and the loss g(z) (eq. 11,
`fusionlab.losses.codebook`) pulls features and entries together.
"""

from __future__ import annotations

import torch
from torch import nn

from fusionlab.losses.codebook import codebook_loss


class Codebook(nn.Module):
    """`num_codes` learnable vectors of size `dim`, quantising [B,dim,H,W] maps."""

    def __init__(self, num_codes: int = 64, dim: int = 16):
        super().__init__()
        self.embedding = nn.Embedding(num_codes, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_codes, 1.0 / num_codes)

    def quantise(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest entries for [N,dim] vectors: (q(z) [N,dim], indices [N])."""
        codes = self.embedding.weight.to(vectors.dtype)
        distances = (vectors.pow(2).sum(1, keepdim=True) - 2 * vectors @ codes.t() + codes.pow(2).sum(1)[None])
        index = distances.argmin(1)
        return codes[index], index

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(straight-through quantised map [B,dim,H,W], g(z), indices [B,H,W])."""
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        z_q, index = self.quantise(flat)
        loss = codebook_loss(flat, z_q)
        z_st = z_q.detach() + (flat - flat.detach())  # the value is exactly q(z); the gradient goes to z
        return z_st.view(b, h, w, c).permute(0, 3, 1, 2), loss, index.view(b, h, w)
