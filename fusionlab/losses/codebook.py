"""Text2pixels' codebook quantisation loss g(z) (eq. 11)."""

from __future__ import annotations

import torch


def codebook_loss(z: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """g(z) = 1/N Σ_i ||z_i - q(z_i)||² over the N feature vectors (channels-last `[..., C]`).

    Gradients reach both the features (commitment) and the codebook entries (they move towards
    the features they represent), which is what keeps the straight-through estimator honest.
    """
    return (z - z_q).pow(2).sum(-1).mean()
