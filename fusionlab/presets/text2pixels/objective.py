"""Text2Pixels' fusion objective (sec. 3.3, eq. 8-11): L^f = α₁·L^str(z, z′) + α₂·L^cc + g(z).

L^str compares the fused image z with z′, the previous epoch's output on the same batch (from a
frozen copy of the net taken at each epoch start; there is none in the first epoch). L^cc
compares z with each saliency-weighted source ω_i·I_i (eq. 9). α₁ and α₂ are the mean SSIM of z′
and of z with the two sources (eq. 10), used as constants. g(z) is the codebook loss (eq. 11).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch

from fusionlab.config import Section
from fusionlab.losses.gradient import sobel_magnitude
from fusionlab.presets.objective import Objective

SALIENCY_EPS = 1.0  # |S_x - S_y| below one grey level counts as 1 in the printed ω₁ (it is unbounded at 0)


class Text2PixelsLoss(Section):
    structure: bool = True    # L_str against the previous epoch's output (the "sl" ablation)
    content: bool = True      # saliency-weighted L_cc (the "cl" ablation)
    codebook: float = 1.0     # weight of g(z) (eq. 7 adds it unweighted)
    # ω₁ as printed, S_x/|S_x - S_y| (unbounded; ω₂ = 1 - ω₁ goes negative), or fusionlab's
    # normalised reading S_x/(S_x + S_y), which keeps ω₁, ω₂ in [0, 1]
    weights: Literal["printed", "normalised"] = "printed"
    alpha_floor: float | None = None  # fusionlab: clamp α₂ from below (a random output has SSIM ≈ 0); paper: none


def saliency_map(x: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """S(k) = Σ_i H(i)|x(k) - i| for [B,1,H,W] in [0,1] on the 0..255 scale, H the normalised histogram.

    (Normalising H scales S by 1/HW, which leaves the printed ω₁ and the normalised one unchanged.)
    """
    q = (x.detach().clamp(0, 1) * (levels - 1)).round().long().flatten(1)          # [B,N]
    hist = torch.zeros(q.shape[0], levels, device=x.device).scatter_add_(1, q, torch.ones_like(q, dtype=torch.float))
    hist = hist / hist.sum(1, keepdim=True)
    grid = torch.arange(levels, device=x.device, dtype=torch.float)
    per_level = hist @ (grid[:, None] - grid[None, :]).abs()                         # [B,levels]: S for each value
    return per_level.gather(1, q).view_as(x)


def saliency_weights(ir: torch.Tensor, vi: torch.Tensor, rule: str = "printed",
                     eps: float = SALIENCY_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(ω₁, ω₂) per pixel. "printed": ω₁ = S_x/|S_x - S_y| (|S_x - S_y| floored at `eps`), ω₂ = 1 - ω₁;
    "normalised": ω₁ = S_x/(S_x + S_y), ω₂ = 1 - ω₁."""
    s_ir, s_vi = saliency_map(ir), saliency_map(vi)
    if rule == "printed":
        w1 = s_ir / (s_ir - s_vi).abs().clamp_min(eps)
    elif rule == "normalised":
        w1 = (s_ir + 1e-6) / (s_ir + s_vi + 2e-6)
    else:
        raise ValueError(f"saliency weights: rule must be 'printed' or 'normalised', got {rule!r}")
    return w1, 1.0 - w1


def _ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    import kornia

    return kornia.metrics.ssim(a, b, window_size=11).mean()


def _terms(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_SSIM + L_pixel + L_grad of z against `target` (each a mean over pixels)."""
    return (1 - _ssim(z, target)) + (z - target).abs().mean() + (sobel_magnitude(z) - sobel_magnitude(target)).abs().mean()


def content_consistency_loss(z: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor, rule: str = "printed") -> torch.Tensor:
    """Eq. 9: L^cc = Σ_{i=1,2} L^{SSIM,pixel,grad}(z, ω_i·I_i), the weighted source images as targets."""
    w1, w2 = saliency_weights(ir, vi, rule)
    return _terms(z, w1 * ir) + _terms(z, w2 * vi)


def structure_loss(z: torch.Tensor, z_prev: torch.Tensor) -> torch.Tensor:
    """L_str = L_SSIM(z, z′) + L_pixel(z, z′) + L_grad(z, z′) (eq. 8), z′ treated as a constant."""
    return _terms(z, z_prev.detach())


def alpha_weights(z: torch.Tensor, z_prev: torch.Tensor | None, ir: torch.Tensor, vi: torch.Tensor,
                  floor: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """α₁ = mean SSIM(z′, {x, y}), α₂ = mean SSIM(z, {x, y}) (eq. 10), as constants.
    Without a previous output (first epoch) α₁ = 0; `floor` (fusionlab) clamps α₂ from below."""
    with torch.no_grad():
        a2 = 0.5 * (_ssim(z, ir) + _ssim(z, vi))
        a1 = 0.5 * (_ssim(z_prev, ir) + _ssim(z_prev, vi)) if z_prev is not None else torch.zeros_like(a2)
    return a1, (a2 if floor is None else a2.clamp_min(floor))


class Text2PixelsObjective(Objective):
    loss_class = Text2PixelsLoss

    def __init__(self, cfg, net):
        super().__init__(cfg, net)
        self.previous = None  # z′ network: a frozen copy of the net from the start of the epoch
        object.__setattr__(self, "net", net)  # read for g(z); not a submodule (it is not a helper)

    def on_train_epoch_start(self, net, epoch: int) -> None:
        if self.lc.structure and epoch > 0:
            aux, net.aux_losses = net.aux_losses, {}  # the last g(z) is part of a graph: not copyable
            self.previous = self.frozen(copy.deepcopy(net))
            net.aux_losses = aux

    def forward(self, fused, batch, text):
        ir, y = batch["ir"], self.luma(batch["vi"])
        prev = None
        if self.previous is not None:
            from fusionlab.models.fusion import forward_padded

            with torch.no_grad():
                prev = forward_padded(self.previous, ir, batch["vi"], text).float()
        a1, a2 = alpha_weights(fused, prev, ir, y, self.lc.alpha_floor)
        parts: dict[str, torch.Tensor] = {"alpha1": a1, "alpha2": a2}
        total = fused.new_zeros(())
        if prev is not None:
            parts["structure"] = structure_loss(fused, prev)
            total = total + a1 * parts["structure"]
        if self.lc.content:
            parts["content"] = content_consistency_loss(fused, ir, y, self.lc.weights)
            total = total + a2 * parts["content"]
        if "codebook" in self.net.aux_losses:  # g(z) of the forward pass that produced `fused`
            parts["codebook"] = self.net.aux_losses["codebook"]
            total = total + self.lc.codebook * parts["codebook"]
        return {"total": total, **parts}
