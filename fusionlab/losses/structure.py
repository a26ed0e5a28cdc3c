"""Text2pixels' structure loss against the previous epoch's output z′ (eq. 8) and the α-weighting
of the fusion objective (eq. 10).

z′ comes from a frozen copy of the network taken at the end of the previous epoch and run on the
same (augmented) batch, so it always matches the current crop.
"""

from __future__ import annotations

import torch

from fusionlab.losses.gradient import sobel_magnitude


def _ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    import kornia

    return kornia.metrics.ssim(a, b, window_size=11).mean()


def structure_loss(z: torch.Tensor, z_prev: torch.Tensor) -> torch.Tensor:
    """L_str = L_SSIM(z, z′) + L_pixel(z, z′) + L_grad(z, z′) (eq. 8), z′ treated as a constant."""
    z_prev = z_prev.detach()
    return (1 - _ssim(z, z_prev)) + (z - z_prev).abs().mean() + (sobel_magnitude(z) - sobel_magnitude(z_prev)).abs().mean()


def alpha_weights(z: torch.Tensor, z_prev: torch.Tensor | None, ir: torch.Tensor, vi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """α₁ = mean SSIM(z′, {x, y}), α₂ = mean SSIM(z, {x, y}) (eq. 10), as constants.
    Without a previous output (first epoch) α₁ = 0."""
    with torch.no_grad():
        a2 = 0.5 * (_ssim(z, ir) + _ssim(z, vi))
        a1 = 0.5 * (_ssim(z_prev, ir) + _ssim(z_prev, vi)) if z_prev is not None else torch.zeros_like(a2)
    # floor: a random initial output has SSIM ≈ 0 with the sources, which would switch the loss off
    return a1.clamp(0.0, 1.0), a2.clamp(0.1, 1.0)
