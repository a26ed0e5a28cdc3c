"""`ldfusion`: the fusion network G of LDFusion (sec. 3.5, fig. 6).

Two encoder branches of the same architecture with separate weights (IR and VIS-Y), each three
conv blocks (CB) that halve the resolution and double the channels, then two residual blocks
(RB); a feature fusion module (FFM): concatenation, then convs each followed by AdaIN (instead of
BN) whose parameters a small conv net + global average pooling + linear layers reads off the
sources (`models/fusion/adain.py`); a decoder of three stride-2 transposed convs with LayerNorm
and ReLU back to full resolution, and a conv with tanh. The paper gives no strides or widths;
they follow the authors' released network (three 2x downsamplings, 128 channels per branch at
1/8 resolution). The language-driven loss is what trains it; CLIP is never used at inference.
"""

from __future__ import annotations

import torch
from torch import nn

from fusionlab.models.fusion.adain import AdaINParams, adain
from fusionlab.models.fusion.base import FusionNet, register_fusion_model
from fusionlab.models.fusion.restormer import ChannelLayerNorm

LEVELS = 3  # three CBs down, three transposed convs up (sec. 3.5)


def _conv_block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, padding_mode="replicate"), nn.LeakyReLU(0.2))


class _ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(_conv_block(width, width), nn.Conv2d(width, width, 3, padding=1, padding_mode="replicate"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def encoder_branch(width: int) -> nn.Sequential:
    """3 stride-2 conv blocks (1 -> w -> 2w -> 4w channels) + 2 residual blocks at 4w."""
    chans = [1] + [width * 2 ** i for i in range(LEVELS)]
    blocks = [_conv_block(chans[i], chans[i + 1], stride=2) for i in range(LEVELS)]
    return nn.Sequential(*blocks, _ResBlock(chans[-1]), _ResBlock(chans[-1]))


@register_fusion_model("ldfusion")
class LDFusionNet(FusionNet):
    """IR + VIS-Y -> fused Y in [0,1] (tanh head rescaled). `width` = channels of the first CB."""

    out_channels = 1
    needs_text = False  # the text lives in the training loss only
    multiple = 2 ** LEVELS

    def __init__(self, width: int = 32, fusion_layers: int = 2, adain_hidden: int = 64, text_guidance: bool = True):
        super().__init__()
        self.text_guidance = bool(text_guidance)  # recorded: whether it was trained with the CLIP loss
        self.enc_ir, self.enc_vi = encoder_branch(width), encoder_branch(width)
        fused = 2 * width * 2 ** (LEVELS - 1)  # the two branches concatenated
        self.fusion = nn.ModuleList(nn.Conv2d(fused, fused, 3, padding=1, padding_mode="replicate")
                                    for _ in range(fusion_layers))
        self.adain_params = AdaINParams(2, [fused] * fusion_layers, adain_hidden)
        layers: list[nn.Module] = []
        chans = [fused // 2 ** i for i in range(LEVELS + 1)]  # 8w -> 4w -> 2w -> w
        for cin, cout in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), ChannelLayerNorm(cout), nn.ReLU()]
        self.decoder = nn.Sequential(*layers, nn.Conv2d(chans[-1], 1, 3, padding=1, padding_mode="replicate"), nn.Tanh())

    def forward(self, ir: torch.Tensor, vi: torch.Tensor, text: dict | None = None) -> torch.Tensor:
        y = self.luma(vi)
        x = torch.cat([self.enc_ir(ir), self.enc_vi(y)], 1)
        for conv, (gamma, beta) in zip(self.fusion, self.adain_params(torch.cat([ir, y], 1)), strict=True):
            x = torch.relu(adain(conv(x), gamma, beta))
        return (self.decoder(x) + 1) / 2
