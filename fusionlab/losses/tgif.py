"""TGIF's infrared-visible loss: L_int + α₁·L_grad with α₁ = 20 and α₂ (SSIM) = 0, as in the paper,
both against the element-wise max of the sources (the CDDFuse setting the paper follows)."""

from __future__ import annotations

import torch

from fusionlab.losses.mci_mcg import sobel_abs


def tgif_loss(fused: torch.Tensor, ir: torch.Tensor, vi_y: torch.Tensor, grad_weight: float = 20.0) -> dict[str, torch.Tensor]:
    """Terms and total for a gray fusion `fused` [B,1,H,W] of `ir` and the visible luma `vi_y`."""
    intensity = (fused - torch.maximum(ir, vi_y)).abs().mean()
    gradient = (sobel_abs(fused) - torch.maximum(sobel_abs(ir), sobel_abs(vi_y))).abs().mean()
    return {"int": intensity, "grad": gradient, "total": intensity + grad_weight * gradient}
