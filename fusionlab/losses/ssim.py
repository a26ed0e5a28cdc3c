"""Structural similarity to both sources, so the fused image keeps the structure of each."""

from __future__ import annotations

import torch


def ssim_loss(x: torch.Tensor, y: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """1 - mean SSIM(x, y) (kornia, Gaussian window, data range 1)."""
    import kornia

    return 1.0 - kornia.metrics.ssim(x, y, window_size, max_val=1.0).mean()


def dual_ssim_loss(
    fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor, window_size: int = 11, ir_weight: float = 0.5
) -> torch.Tensor:
    """ir_weight * (1 - SSIM(F, IR)) + (1 - ir_weight) * (1 - SSIM(F, VI))."""
    return ir_weight * ssim_loss(fused, ir, window_size) + (1.0 - ir_weight) * ssim_loss(fused, vi, window_size)
