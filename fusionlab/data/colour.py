"""Colour handling for gray fusion networks: fuse on the visible Y channel, restore its CbCr.

Most fusion networks are single-channel. Running them on Y (luma) and re-attaching the visible
image's chroma keeps the colours exactly where the network leaves Y alone. Presets whose network
outputs three channels use `fuse_native_rgb` instead.
"""

from __future__ import annotations

from typing import Callable

import torch


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] RGB in [0,1] -> YCbCr (kornia; Cb and Cr centred on 0.5)."""
    import kornia

    return kornia.color.rgb_to_ycbcr(x)


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] YCbCr -> RGB in [0,1] (clamped: out-of-gamut Y/CbCr combinations clip)."""
    import kornia

    return kornia.color.ycbcr_to_rgb(x).clamp(0.0, 1.0)


def fuse_on_y(
    net_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ir: torch.Tensor, vi: torch.Tensor
) -> torch.Tensor:
    """Run `net_fn(ir [B,1,H,W], vi_y [B,1,H,W]) -> fused_y [B,1,H,W]` and return RGB [B,3,H,W]."""
    ycbcr = rgb_to_ycbcr(vi)
    fused_y = net_fn(ir, ycbcr[:, :1])
    return ycbcr_to_rgb(torch.cat([fused_y, ycbcr[:, 1:]], 1))


def fuse_native_rgb(
    net_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ir: torch.Tensor, vi: torch.Tensor
) -> torch.Tensor:
    """Native RGB path: `net_fn(ir [B,1,H,W], vi [B,3,H,W]) -> rgb [B,3,H,W]`, clamped to [0,1]."""
    out = net_fn(ir, vi)
    if out.shape[1] != 3:
        raise ValueError(f"fuse_native_rgb expects a 3-channel network output, got {out.shape[1]} channel(s); use fuse_on_y")
    return out.clamp(0.0, 1.0)


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """Y of an RGB batch, or the batch itself when it is already one channel."""
    return x if x.shape[1] == 1 else rgb_to_ycbcr(x)[:, :1]
