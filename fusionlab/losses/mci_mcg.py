"""LDNF's multi-channel fusion losses (ldnf paper, eq. 9-10): the network writes RGB directly,
so intensity and gradient targets are built per colour channel against the single IR channel."""

from __future__ import annotations

import torch

from fusionlab.losses.gradient import sobel_magnitude


def mci_loss(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """L_MCI = 1/(HW) Σ_i ||I_f^i - max(I_ir, I_vis^i)||_1 over the three channels i (eq. 10).

    Averaged over the batch; with the 1/(HW) the value is the per-pixel L1 summed over channels.
    """
    target = torch.maximum(ir.expand_as(vi), vi)
    return (fused - target).abs().sum(1).mean()


def mcg_loss(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """L_MCG = 1/(HW) Σ_i || |∇I_f^i| - max(|∇I_ir|, |∇I_vis^i|) ||_1 (eq. 9), Sobel gradients."""
    target = torch.maximum(sobel_magnitude(ir).expand_as(vi), sobel_magnitude(vi))
    return (sobel_magnitude(fused) - target).abs().sum(1).mean()
