"""TGIF's infrared-visible loss: L_int + α₁·L_grad with α₁ = 20 and α₂ (SSIM) = 0 as in the paper,
both against the element-wise max of the sources (the CDDFuse setting the paper follows), with
Sobel gradients."""

from __future__ import annotations

import torch

from fusionlab.losses.gradient import max_gradient_loss
from fusionlab.losses.intensity import max_intensity_loss


def tgif_loss(fused: torch.Tensor, ir: torch.Tensor, vi_y: torch.Tensor, grad_weight: float = 20.0) -> dict[str, torch.Tensor]:
    """Terms and total for a gray fusion `fused` [B,1,H,W] of `ir` and the visible luma `vi_y`."""
    intensity = max_intensity_loss(fused, ir, vi_y)
    gradient = max_gradient_loss(fused, ir, vi_y)
    return {"int": intensity, "grad": gradient, "total": intensity + grad_weight * gradient}
