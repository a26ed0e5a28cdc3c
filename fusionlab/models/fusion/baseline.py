"""`baseline`: a compact CNN that fuses luminance, the fast default.

No text, no downsampling (so any size works without padding and tiles blend seamlessly), a
small densely connected body so early edge features reach the output, and a sigmoid head on Y.
The output is a residual over the pixel-wise maximum of the sources: the net starts from a
sensible fusion (keeps bright thermal targets and bright visible texture) and learns corrections,
which makes short CPU training converge.
"""

from __future__ import annotations

import torch
from torch import nn

from fusionlab.models.fusion.base import FusionNet, register_fusion_model


class _ConvAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3):
        super().__init__(nn.Conv2d(cin, cout, k, padding=k // 2, padding_mode="replicate"), nn.LeakyReLU(0.1))


@register_fusion_model("baseline")
class BaselineFusion(FusionNet):
    """IR + VIS-Y -> fused Y. `width` channels, `depth` densely connected 3x3 layers."""

    out_channels = 1
    needs_text = False
    multiple = 1

    def __init__(self, width: int = 16, depth: int = 3, residual: bool = True):
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError("baseline: width and depth must be >= 1")
        self.residual = residual
        self.stem = _ConvAct(2, width)
        self.body = nn.ModuleList(_ConvAct(width * (i + 1), width) for i in range(depth))
        self.head = nn.Conv2d(width * (depth + 1), 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, ir: torch.Tensor, vi: torch.Tensor, text: dict | None = None) -> torch.Tensor:
        y = self.luma(vi)
        feats = [self.stem(torch.cat([ir, y], dim=1))]
        for layer in self.body:
            feats.append(layer(torch.cat(feats, dim=1)))
        delta = self.head(torch.cat(feats, dim=1))
        if not self.residual:
            return torch.sigmoid(delta)
        # residual in logit space keeps the output in (0,1) and starts at max(ir, y)
        base = torch.maximum(ir, y).clamp(1e-3, 1 - 1e-3)
        return torch.sigmoid(torch.logit(base) + delta)
