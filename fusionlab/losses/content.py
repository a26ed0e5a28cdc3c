"""The `baseline` objective: intensity + gradient + SSIM against both sources.

Weights follow SeAFusion's intensity/texture balance (texture weighted up, since a plain
intensity loss alone blurs), plus an SSIM term that keeps local structure of each source.
"""

from __future__ import annotations

import torch
from torch import nn

from fusionlab.losses.gradient import max_gradient_loss
from fusionlab.losses.intensity import max_intensity_loss
from fusionlab.losses.ssim import dual_ssim_loss


class ContentLoss(nn.Module):
    """w_int * L_int + w_grad * L_grad + w_ssim * L_ssim on single-channel images.

    `stretch` > 0 compares with the sources contrast-stretched by their own percentiles (the
    same normalisation the `baseline` net applies to its input), so training keeps contrast.

    `forward` returns (total, parts) so each term can be logged.
    """

    def __init__(self, w_int: float = 1.0, w_grad: float = 1.0, w_ssim: float = 1.0, ssim_window: int = 11,
                 ssim_ir_weight: float = 0.5, grad_gain: float = 1.0, stretch: float = 0.005):
        super().__init__()
        self.w_int, self.w_grad, self.w_ssim = w_int, w_grad, w_ssim
        self.ssim_window, self.ssim_ir_weight, self.grad_gain = ssim_window, ssim_ir_weight, grad_gain
        self.stretch = stretch

    def forward(self, fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> tuple[torch.Tensor, dict]:
        if self.stretch > 0:  # targets from contrast-stretched sources (see models/fusion/contrast.py)
            from fusionlab.models.fusion.contrast import stretch_pair

            ir, vi = stretch_pair(ir, vi, self.stretch)
        parts = {
            "int": max_intensity_loss(fused, ir, vi),
            "grad": max_gradient_loss(fused, ir, vi, self.grad_gain),
        }
        if self.w_ssim:
            parts["ssim"] = dual_ssim_loss(fused, ir, vi, self.ssim_window, self.ssim_ir_weight)
        total = self.w_int * parts["int"] + self.w_grad * parts["grad"] + self.w_ssim * parts.get("ssim", 0.0)
        return total, {k: v.detach() for k, v in parts.items()}
