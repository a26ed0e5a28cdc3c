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
import torch.nn.functional as F
from torch import nn

from fusionlab.models.fusion.base import FusionNet, register_fusion_model
from fusionlab.models.fusion.contrast import SAMPLE_SIDE, robust_range, stretch


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
        # the percentiles only look at a regular subsample, so take it before computing Y
        small_vi = F.interpolate(vi.float(), size=(SAMPLE_SIDE, SAMPLE_SIDE), mode="nearest")
        y_lo, y_hi = (v.to(vi.dtype) for v in robust_range(self.luma(small_vi), self.stretch))
        return {"ir_lo": ir_lo, "ir_hi": ir_hi, "vi_lo": y_lo, "vi_hi": y_hi}

    def forward(self, ir: torch.Tensor, vi: torch.Tensor, text: dict | None = None,
                stats: dict | None = None) -> torch.Tensor:
        y = self.luma(vi)
        if self.stretch > 0:
            if stats is None:
                stats = self.image_stats(ir, vi)
            ir = stretch(ir, stats["ir_lo"], stats["ir_hi"])
            y = stretch(y, stats["vi_lo"], stats["vi_hi"])
        x = torch.cat([ir, y], dim=1)
        # fp32 inference: the same function computed in a faster order (training and autocast,
        # whose rounding depends on the order, keep the plain one)
        fast = not torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type)
        delta = self._dense_inference(x) if fast else self._dense(x)
        if not self.residual:
            return torch.sigmoid(delta)
        # residual in logit space keeps the output in (0,1) and starts at max(ir, y)
        base = torch.maximum(ir, y).clamp(1e-3, 1 - 1e-3)
        return torch.sigmoid(torch.logit(base) + delta)

    def _dense(self, x: torch.Tensor) -> torch.Tensor:
        """The densely connected body as written: each layer sees the concatenation of all before it."""
        feats = [self.stem(x)]
        for layer in self.body:
            feats.append(layer(torch.cat(feats, dim=1)))
        return self.head(torch.cat(feats, dim=1))

    def _dense_inference(self, x: torch.Tensor) -> torch.Tensor:
        """`_dense` without concatenations, in channels-last layout (about 2x faster on CPU).

        A conv over concatenated features is the sum of convs over each feature with the matching
        slice of the weights. So as soon as feature j exists, its contribution to every later layer
        (and to the 1x1 head) is added to that layer's running sum; a layer's input is complete when
        its last contribution arrives. The result equals `_dense` up to float rounding, and no
        activation is ever copied into a concatenation (the copies cost as much as the convs).
        """
        cl = torch.channels_last
        w, n = self.stem[0].out_channels, len(self.body)
        convs = [layer[0] for layer in self.body]
        slope = self.stem[1].negative_slope
        stem = self.stem[0]
        feat = F.leaky_relu_(F.conv2d(x.contiguous(memory_format=cl), stem.weight.contiguous(memory_format=cl),
                                      stem.bias, padding=1), slope)
        pending: list[torch.Tensor | None] = [None] * n
        head = None
        for j in range(n + 1):
            cols = slice(j * w, (j + 1) * w)
            for i in range(j, n):
                c = F.conv2d(feat, convs[i].weight[:, cols].contiguous(memory_format=cl),
                             convs[i].bias if j == 0 else None, padding=1)
                pending[i] = c if pending[i] is None else pending[i].add_(c)
            # the 1x1 head on channels-last data is a matrix product over the channel axis
            h = F.linear(feat.permute(0, 2, 3, 1), self.head.weight[:, cols].flatten(1),
                         self.head.bias if j == 0 else None)
            head = h if head is None else head.add_(h)
            if j < n:
                feat = F.leaky_relu_(pending[j], slope)
                pending[j] = None
        return head.permute(0, 3, 1, 2).contiguous()
