"""Max-gradient loss: the fused image should carry the stronger edge of the two sources.

Texture lives in VIS by day and in IR at night; comparing Sobel magnitudes with the
element-wise max of both sources rewards keeping whichever edge is there (this is what
edge-based metrics such as Qabf and SF measure).
"""

from __future__ import annotations

import torch


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|Gx| + |Gy| with the unnormalised 3x3 Sobel kernels (kornia; replicated borders).

    The L1 form has a defined gradient where the image is flat, unlike sqrt(Gx^2 + Gy^2).
    """
    import kornia

    g = kornia.filters.spatial_gradient(x, mode="sobel", order=1, normalized=False)  # [B,C,2,H,W]
    return g.abs().sum(dim=2)


def max_gradient_loss(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """mean | |∇F| - gain * max(|∇IR|, |∇VI|) | (L1).

    gain > 1 asks for edges a little stronger than either source (crisper, higher-contrast output).
    """
    target = gain * torch.maximum(sobel_magnitude(ir), sobel_magnitude(vi))
    return (sobel_magnitude(fused) - target).abs().mean()
