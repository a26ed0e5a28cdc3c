"""Colour handling: the BT.601 luma (Y) every single-channel path uses.

Most fusion networks are single-channel: they fuse IR with the visible image's Y, and
`models.fusion.base.restore_colour` re-attaches the visible chroma (a YCbCr swap). The depth
nets, the captioner's statistics and the stage-5 fidelity loss read the same Y, so a gray image
means one thing everywhere. Written out (not through kornia) so it traces to a plain ONNX graph;
it equals kornia's YCbCr Y channel (tests/fusion_core/test_base.py).
"""

from __future__ import annotations

import torch


def rgb_to_y(rgb: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] RGB -> [B,1,H,W] luma (BT.601, the Y of YCbCr)."""
    r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """Y of an RGB batch, or the batch itself when it is already one channel."""
    return x if x.shape[1] == 1 else rgb_to_y(x)
