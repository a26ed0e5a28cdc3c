"""`baseline`: a compact CNN that fuses luminance, the fast default.

No text and no downsampling (any size works without padding, and tiles blend seamlessly), a
small densely connected body so early edge features reach the output, and a sigmoid head on Y.
Each source is first contrast-stretched by its own robust percentiles (`stretch`), so a dim
thermal frame contributes with full contrast. The output is a residual, in logit space, over
the pixel-wise maximum of the stretched sources: the net starts from a sensible fusion (bright
thermal targets and bright visible texture both survive) and learns corrections, which makes
short CPU training converge.
"""

from __future__ import annotations

import torch
from torch import nn

from fusionlab.models.fusion.base import FusionNet, register_fusion_model
from fusionlab.models.fusion.contrast import robust_range, stretch


@register_fusion_model("baseline")
class BaselineFusion(FusionNet):
    """IR + VIS-Y -> fused Y. `width` channels, `depth` densely connected 3x3 layers;
    `stretch` = percentile for the per-source contrast stretch (0 = off)."""

    out_channels = 1
    needs_text = False
    multiple = 1

    def __init__(self, width: int = 8, depth: int = 3, residual: bool = True, stretch: float = 0.005):
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError("baseline: width and depth must be >= 1")
        if not 0.0 <= stretch < 0.5:
            raise ValueError("baseline: stretch is a percentile in [0, 0.5)")
        self.residual, self.stretch = residual, stretch
        self.stem = nn.Sequential(nn.Conv2d(2, width, 3, padding=1), nn.LeakyReLU(0.1))
        self.body = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width * (i + 1), width, 3, padding=1), nn.LeakyReLU(0.1)) for i in range(depth)
        )
        self.head = nn.Conv2d(width * (depth + 1), 1, 1)
        if residual:  # start exactly at the prior
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def image_stats(self, ir: torch.Tensor, vi: torch.Tensor) -> dict | None:
        if self.stretch <= 0:
            return None
        ir_lo, ir_hi = robust_range(ir, self.stretch)
        y_lo, y_hi = robust_range(self.luma(vi), self.stretch)
        return {"ir_lo": ir_lo, "ir_hi": ir_hi, "vi_lo": y_lo, "vi_hi": y_hi}

    def forward(self, ir: torch.Tensor, vi: torch.Tensor, text: dict | None = None,
                stats: dict | None = None) -> torch.Tensor:
        y = self.luma(vi)
        if self.stretch > 0:
            if stats is None:
                stats = self.image_stats(ir, vi)
            ir = stretch(ir, stats["ir_lo"], stats["ir_hi"])
            y = stretch(y, stats["vi_lo"], stats["vi_hi"])
        feats = [self.stem(torch.cat([ir, y], dim=1))]
        for layer in self.body:
            feats.append(layer(torch.cat(feats, dim=1)))
        delta = self.head(torch.cat(feats, dim=1))
        if not self.residual:
            return torch.sigmoid(delta)
        # residual in logit space keeps the output in (0,1) and starts at max(ir, y)
        base = torch.maximum(ir, y).clamp(1e-3, 1 - 1e-3)
        return torch.sigmoid(torch.logit(base) + delta)
