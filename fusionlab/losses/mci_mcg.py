"""LDNF's multi-channel fusion losses (ldnf paper, eq. 9-10): the network writes RGB directly,
so intensity and gradient targets are built per colour channel against the single IR channel."""

from __future__ import annotations

import torch


def sobel_abs(x: torch.Tensor) -> torch.Tensor:
    """|∇x| per channel as |Sobel_x| + |Sobel_y| (kornia), the usual fusion-loss gradient."""
    import kornia

    grad = kornia.filters.spatial_gradient(x, mode="sobel", normalized=False)  # [B,C,2,H,W]
    return grad.abs().sum(2)


def mci_loss(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """L_MCI = 1/(HW) Σ_i ||I_f^i - max(I_ir, I_vis^i)||_1 over the three channels i (eq. 10).

    Averaged over the batch; with the 1/(HW) the value is the per-pixel L1 summed over channels.
    """
    target = torch.maximum(ir.expand_as(vi), vi)
    return (fused - target).abs().sum(1).mean()


def mcg_loss(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """L_MCG = 1/(HW) Σ_i || |∇I_f^i| - max(|∇I_ir|, |∇I_vis^i|) ||_1 (eq. 9), Sobel gradients."""
    target = torch.maximum(sobel_abs(ir).expand_as(vi), sobel_abs(vi))
    return (sobel_abs(fused) - target).abs().sum(1).mean()
