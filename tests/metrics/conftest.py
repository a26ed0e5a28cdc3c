"""Tiny hand-made and random gray images for the metric tests (no files needed)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def triple():
    """Random but structured 8-bit gray images (ir, vi, fused) of 48x52 as float64 [1,H,W]."""
    g = torch.Generator().manual_seed(0)
    y, x = torch.meshgrid(torch.arange(48.0), torch.arange(52.0), indexing="ij")
    ir = (128 + 80 * torch.sin(x / 5) + 20 * torch.randn(48, 52, generator=g)).round().clamp(0, 255)
    vi = (100 + 60 * torch.cos(y / 4) + 30 * torch.randn(48, 52, generator=g)).round().clamp(0, 255)
    fused = ((ir + vi) / 2 + 10 * torch.randn(48, 52, generator=g)).round().clamp(0, 255)
    return tuple(t.double()[None] for t in (ir, vi, fused))
