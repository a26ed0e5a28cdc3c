"""`ldfusion`: the simple fusion network of LDFusion (ldfusion paper, sec. 3.5, fig. 6).

Two encoder branches of the same shape (IR and VIS-Y, separate weights), each 3 conv blocks +
2 residual blocks; a feature fusion module (concatenation, then convs each followed by AdaIN
whose parameters are generated from the sources, `adain.py`); a decoder of 3 transposed convs
with LayerNorm and ReLU and a final conv with tanh. No downsampling, so any size works. The
language-driven loss is what makes it work; CLIP is used only in training, never here.
"""

from __future__ import annotations

import torch
from torch import nn

from fusionlab.models.fusion.adain import AdaINParams, adain
from fusionlab.models.fusion.base import FusionNet, register_fusion_model
from fusionlab.models.fusion.restormer import ChannelLayerNorm


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, padding_mode="replicate"), nn.LeakyReLU(0.2))


class _ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(_conv_block(width, width), nn.Conv2d(width, width, 3, padding=1, padding_mode="replicate"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def encoder_branch(width: int) -> nn.Sequential:
    """3 conv blocks + 2 residual blocks."""
    return nn.Sequential(_conv_block(1, width), _conv_block(width, width), _conv_block(width, width),
                         _ResBlock(width), _ResBlock(width))


@register_fusion_model("ldfusion")
class LDFusionNet(FusionNet):
    """IR + VIS-Y -> fused Y in [0,1] (tanh head rescaled)."""

    out_channels = 1
    needs_text = False  # the text lives in the training loss only

    def __init__(self, width: int = 16, fusion_layers: int = 2, text_guidance: bool = True):
        super().__init__()
        self.text_guidance = bool(text_guidance)  # recorded: whether it was trained with the CLIP loss
        self.enc_ir, self.enc_vi = encoder_branch(width), encoder_branch(width)
        self.fusion = nn.ModuleList(
            nn.Conv2d(2 * width if i == 0 else width, width, 3, padding=1, padding_mode="replicate")
            for i in range(fusion_layers))
        self.adain_params = AdaINParams(2, [width] * fusion_layers)
        layers: list[nn.Module] = []
        for _ in range(3):
            layers += [nn.ConvTranspose2d(width, width, 3, padding=1), ChannelLayerNorm(width), nn.ReLU()]
        self.decoder = nn.Sequential(*layers, nn.Conv2d(width, 1, 3, padding=1, padding_mode="replicate"), nn.Tanh())

    def forward(self, ir: torch.Tensor, vi: torch.Tensor, text: dict | None = None) -> torch.Tensor:
        y = self.luma(vi)
        x = torch.cat([self.enc_ir(ir), self.enc_vi(y)], 1)
        for conv, (gamma, beta) in zip(self.fusion, self.adain_params(torch.cat([ir, y], 1)), strict=True):
            x = torch.relu(adain(conv(x), gamma, beta))
        return (self.decoder(x) + 1) / 2
