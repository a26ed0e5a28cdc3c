"""Padding an image batch up to a size multiple: the one helper behind every net that needs it
(the fusion nets' `multiple`, the DDPM UNet's levels, the detector's largest stride)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_multiple(x: torch.Tensor, multiple: int, value: float | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad [B,C,H,W] on the bottom/right to a multiple of `multiple`; returns (padded, (H, W)).

    `value=None` reflects (a zero pad would teach a net a dark border), falling back to edge
    replication for a side too small to reflect; a number pads with that constant (the detector's
    gray letterbox, as ultralytics pads).
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    # an ONNX trace must record the padding even when the example size needs none
    if multiple == 1 or (ph == 0 and pw == 0 and not torch.jit.is_tracing()):
        return x, (h, w)
    if value is not None:
        return F.pad(x, (0, pw, 0, ph), value=value), (h, w)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)
