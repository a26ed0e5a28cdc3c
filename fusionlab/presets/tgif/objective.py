"""TGIF's infrared-visible loss (eq. 1): L_int + α₁·L_grad + α₂·L_SSIM with α₁ = 20, α₂ = 0, both
terms against the element-wise max of the sources (the CDDFuse setting the paper follows), with
Sobel gradients. With α₂ = 0 the SSIM term is not computed."""

from __future__ import annotations

import torch

from fusionlab.config import Section
from fusionlab.losses.gradient import max_gradient_loss
from fusionlab.losses.intensity import max_intensity_loss
from fusionlab.presets.objective import Objective


class TGIFLoss(Section):
    grad_weight: float = 20.0  # α₁ (IVF task); α₂ (SSIM) = 0


def tgif_loss(fused: torch.Tensor, ir: torch.Tensor, vi_y: torch.Tensor, grad_weight: float = 20.0) -> dict[str, torch.Tensor]:
    """Terms and total for a gray fusion `fused` [B,1,H,W] of `ir` and the visible luma `vi_y`."""
    intensity = max_intensity_loss(fused, ir, vi_y)
    gradient = max_gradient_loss(fused, ir, vi_y)
    return {"int": intensity, "grad": gradient, "total": intensity + grad_weight * gradient}


class TGIFObjective(Objective):
    loss_class = TGIFLoss

    def forward(self, fused, batch, text):
        parts = tgif_loss(fused, batch["ir"], self.luma(batch["vi"]), self.lc.grad_weight)
        return {"total": parts.pop("total"), **parts}
