"""Max-intensity loss: the fused image should be as bright as the brighter source.

Thermal targets (people, cars) are bright in IR and lit surfaces are bright in VIS; the
pixel-wise maximum keeps both, which is the intensity term of SeAFusion-style objectives.
"""

from __future__ import annotations

import torch


def max_intensity_loss(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """mean |F - max(IR, VI)| over all pixels (L1)."""
    return (fused - torch.maximum(ir, vi)).abs().mean()
