"""`text2pixels`: multi-level feature extractor (eq. 1) per modality, intra-domain self-attention
(eq. 2-3) and inter-domain cross-attention to the CLIP caption tokens (eq. 4), codebook
quantisation of the fused features (eq. 5-6), and a conv decoder to the fused Y.

When the codebook is on, the decoder receives exactly the quantised features q(z) (straight-through
gradients), so quantisation constrains what is decoded; `codebook: false` decodes the continuous
features. Attention runs on a grid average-pooled by `attn_stride` (the paper does not say at
which resolution; full-resolution self-attention over every pixel does not fit in memory), and
its update is upsampled and added. fusionlab addition, off by default: `prior: max` makes the
output a zero-initialised logit residual over max(IR, Y). The codebook loss g(z) of the last
forward pass is left in `self.aux_losses` for the objective.
Ablations: `text_guidance: false` (no cross-attention, Att_C), `self_attention: false` (Att_S),
`codebook: false`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusionlab.models.fusion.attention import SelfAttention2d, TextCrossAttention2d
from fusionlab.models.fusion.base import FusionNet, register_fusion_model
from fusionlab.models.fusion.codebook import Codebook


class MultiLevelExtractor(nn.Module):
    """f_out = ReLU(Σ_{i=1..6} W_i ⊙ G_i + b_i) (eq. 1): 3x3 conv paths, each fed the
    concatenation of f_in and all previous paths, combined with learnt per-channel weights."""

    def __init__(self, in_channels: int, width: int, paths: int = 6):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, padding_mode="replicate")
        self.paths = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width * (i + 1), width, 3, padding=1, padding_mode="replicate"), nn.LeakyReLU(0.1))
            for i in range(paths))
        self.weight = nn.Parameter(torch.full((paths, width, 1, 1), 1.0 / paths))
        self.bias = nn.Parameter(torch.zeros(paths, width, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [self.stem(x)]
        total = 0
        for i, path in enumerate(self.paths):
            g = path(torch.cat(feats, 1))
            feats.append(g)
            total = total + self.weight[i] * g + self.bias[i]
        return F.relu(total)


@register_fusion_model("text2pixels")
class Text2Pixels(FusionNet):
    """IR + VIS-Y (+ caption tokens) -> fused Y."""

    out_channels = 1

    def __init__(self, width: int = 64, paths: int = 6, heads: int = 8, token_dim: int = 512, attn_stride: int = 4,
                 num_codes: int = 512, text_guidance: bool = True, self_attention: bool = True, codebook: bool = True,
                 prior: str = "none"):
        super().__init__()
        if prior not in ("none", "max"):
            raise ValueError(f"text2pixels: prior must be 'none' or 'max', got {prior!r}")
        self.prior = prior
        if width % heads:
            raise ValueError(f"text2pixels: width {width} is not divisible by heads {heads}")
        self.needs_text = bool(text_guidance)
        self.attn_stride = attn_stride
        self.multiple = attn_stride
        self.extract_ir = MultiLevelExtractor(1, width, paths)
        self.extract_vi = MultiLevelExtractor(1, width, paths)
        self.self_attn = nn.ModuleList([SelfAttention2d(width, heads), SelfAttention2d(width, heads)]) if self_attention else None
        self.cross_attn = TextCrossAttention2d(width, token_dim, heads) if text_guidance else None
        self.merge = nn.Conv2d(2 * width, width, 1)
        self.codebook = Codebook(num_codes, width) if codebook else None
        self.decoder = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, padding_mode="replicate"), nn.LeakyReLU(0.1),
            nn.Conv2d(width, width, 3, padding=1, padding_mode="replicate"), nn.LeakyReLU(0.1),
            nn.Conv2d(width, 1, 3, padding=1, padding_mode="replicate"))
        if prior == "max":  # start exactly at max(IR, Y)
            nn.init.zeros_(self.decoder[-1].weight)
            nn.init.zeros_(self.decoder[-1].bias)
        self.aux_losses: dict[str, torch.Tensor] = {}

    def _domain(self, f: torch.Tensor, i: int, text: dict | None) -> torch.Tensor:
        """Attention on the pooled grid; returns the full-resolution update."""
        pooled = F.avg_pool2d(f, self.attn_stride) if self.attn_stride > 1 else f
        g = pooled
        if self.self_attn is not None:
            g = self.self_attn[i](g)
        if self.cross_attn is not None and text is not None:
            g = self.cross_attn(g, text["tokens"].to(g.device), text.get("mask"))
        return F.interpolate(g - pooled, size=f.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, ir: torch.Tensor, vi: torch.Tensor, text: dict | None = None) -> torch.Tensor:
        y = self.luma(vi)
        f_ir, f_vi = self.extract_ir(ir), self.extract_vi(y)
        f_ir = f_ir + self._domain(f_ir, 0, text)
        f_vi = f_vi + self._domain(f_vi, 1, text)
        fused = self.merge(torch.cat([f_ir, f_vi], 1))
        if self.codebook is not None:
            quantised, g, _ = self.codebook(fused)
            self.aux_losses = {"codebook": g}
        else:
            quantised = fused
            self.aux_losses = {}
        out = self.decoder(quantised)  # exactly q(z) when the codebook is on (eq. 6)
        if self.prior == "none":
            return torch.sigmoid(out)
        base = torch.maximum(ir, y).clamp(1e-3, 1 - 1e-3)
        return torch.sigmoid(torch.logit(base) + out)
