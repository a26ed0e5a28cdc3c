"""Text2pixels' saliency-weighted content-consistency loss (text2pixels paper, eq. 9).

The saliency of a pixel is how far its intensity lies from the rest of the image:
S(k) = Σ_i H(i)·|x(k) - i| over the 256-level histogram H. Where the infrared pixel is more
salient than the visible one, the fusion should follow the infrared image, and vice versa.
"""

from __future__ import annotations

import torch

from fusionlab.losses.gradient import sobel_magnitude


def saliency_map(x: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """S(k) = Σ_i H(i)|x(k) - i| for [B,1,H,W] in [0,1] on the 0..255 scale, H the normalised histogram."""
    q = (x.detach().clamp(0, 1) * (levels - 1)).round().long().flatten(1)          # [B,N]
    hist = torch.zeros(q.shape[0], levels, device=x.device).scatter_add_(1, q, torch.ones_like(q, dtype=torch.float))
    hist = hist / hist.sum(1, keepdim=True)
    grid = torch.arange(levels, device=x.device, dtype=torch.float)
    per_level = hist @ (grid[:, None] - grid[None, :]).abs()                         # [B,levels]: S for each value
    return per_level.gather(1, q).view_as(x)


def saliency_weights(ir: torch.Tensor, vi: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """ω₁ = S_ir / (S_ir + S_vi), ω₂ = 1 - ω₁, per pixel.

    The paper prints ω₁ = S_x/|S_x - S_y|, which is unbounded (and infinite where the saliencies
    agree); the normalised form keeps ω₁ + ω₂ = 1 in [0,1], which its ω₂ = 1 - ω₁ implies.
    """
    s_ir, s_vi = saliency_map(ir), saliency_map(vi)
    w1 = (s_ir + eps) / (s_ir + s_vi + 2 * eps)
    return w1, 1.0 - w1


def content_consistency_loss(z: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """Eq. 9: Σ_i L^{SSIM,pixel,grad}(z, ω_i I_i), each term weighted per pixel by ω_i."""
    import kornia

    w1, w2 = saliency_weights(ir, vi)
    total = z.new_zeros(())
    for w, src in ((w1, ir), (w2, vi)):
        ssim_map = kornia.metrics.ssim(z, src, window_size=11)
        total = total + (w * (1 - ssim_map)).mean() + (w * (z - src).abs()).mean() \
            + (w * (sobel_magnitude(z) - sobel_magnitude(src)).abs()).mean()
    return total
