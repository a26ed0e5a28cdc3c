"""`tgif` (Text-Guided Image Fusion): Restormer encoder V (M blocks, weights shared by the two
sources), text-guided cross-attention repeated `rounds` times per source, fusion, Restormer
decoder D (N blocks) -> fused Y.

In the cross-attention the caption tokens are the queries and the image features the keys and
values (as in the paper). Each round (i) updates the text queries with the image content they
attend to, and (ii) hands the text back to the pixels through the transposed attention map, so
the pixels each token singled out receive its semantics - the "highlighting" of relevant regions
the paper describes (the paper does not say how the pixels receive the text; this is our
reading). `attn_stride > 1` runs the cross-attention on an average-pooled grid and upsamples its
update (a CPU saving, not in the paper; the default 1 is full resolution).
`text_guidance: false` removes the adapter and the cross-attention: the net then sees no text at
all, which is NOT the paper's "w/o text" row (Exp. I still uses the initial text; see README.md).
fusionlab addition, off by default: `prior: max` (a zero-initialised logit residual over max(IR, Y)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusionlab.models.fusion.base import FusionNet, register_fusion_model
from fusionlab.models.fusion.restormer import RestormerBlock


class TextQueryCrossAttention(nn.Module):
    """Text tokens [B,L,dim] as queries over image features [B,dim,h,w] as keys/values."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Conv2d(dim, 2 * dim, 1)
        self.text_out = nn.Linear(dim, dim)
        self.image_out = nn.Conv2d(dim, dim, 1)
        self.norm_text = nn.LayerNorm(dim)

    def forward(self, text: torch.Tensor, mask: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = image.shape
        d = c // self.heads
        q = self.q(self.norm_text(text)).view(b, -1, self.heads, d).transpose(1, 2)          # [B,h,L,d]
        k, v = self.kv(image).view(b, 2, self.heads, d, h * w).unbind(1)                      # [B,h,d,N]
        attn = (q @ k * self.scale).softmax(-1) * mask[:, None, :, None]                      # [B,h,L,N]
        text = text + self.text_out((attn @ v.transpose(-2, -1)).transpose(1, 2).reshape(b, -1, c))
        # pixels receive the text of the tokens that attended to them (weights rescaled to mean 1)
        to_pixels = (attn.transpose(-2, -1) * (h * w)) @ q                                   # [B,h,N,d]
        update = self.image_out(to_pixels.transpose(-2, -1).reshape(b, c, h, w) / mask.sum(1).clamp_min(1)[:, None, None, None])
        return text, update


@register_fusion_model("tgif")
class TGIF(FusionNet):
    """IR + VIS-Y (+ caption tokens) -> fused Y, Restormer blocks of `dim` channels and `heads` heads."""

    out_channels = 1

    def __init__(self, dim: int = 64, heads: int = 8, encoder_blocks: int = 2, decoder_blocks: int = 3,
                 token_dim: int = 512, rounds: int = 2, attn_stride: int = 1, text_guidance: bool = True,
                 prior: str = "none"):
        super().__init__()
        if prior not in ("none", "max"):
            raise ValueError(f"tgif: prior must be 'none' or 'max', got {prior!r}")
        self.prior = prior
        self.needs_text = bool(text_guidance)
        self.attn_stride = attn_stride
        self.multiple = attn_stride
        self.embed_ir = nn.Conv2d(1, dim, 3, padding=1, padding_mode="replicate")
        self.embed_vi = nn.Conv2d(1, dim, 3, padding=1, padding_mode="replicate")
        self.encoder = nn.Sequential(*[RestormerBlock(dim, heads) for _ in range(encoder_blocks)])
        if text_guidance:
            self.adapter = nn.Sequential(nn.Linear(token_dim, dim), nn.GELU(), nn.Linear(dim, dim))
            self.cross = nn.ModuleList(TextQueryCrossAttention(dim, heads) for _ in range(rounds))
        self.merge = nn.Conv2d(2 * dim, dim, 1)
        self.decoder = nn.Sequential(*[RestormerBlock(dim, heads) for _ in range(decoder_blocks)])
        self.head = nn.Conv2d(dim, 1, 3, padding=1, padding_mode="replicate")
        if prior == "max":  # start exactly at max(IR, Y)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def _text(self, text: dict, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Adapted caption tokens and their mask (shared by the IR and VIS branches)."""
        tokens = self.adapter(text["tokens"].to(like.device, like.dtype))
        mask = text.get("mask")
        mask = torch.ones(tokens.shape[:2], device=like.device) if mask is None else mask.to(like.device).to(like.dtype)
        return tokens, mask

    def _guide(self, feats: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        grid = F.avg_pool2d(feats, self.attn_stride) if self.attn_stride > 1 else feats
        update = torch.zeros_like(grid)
        for layer in self.cross:
            tokens, delta = layer(tokens, mask, grid + update)
            update = update + delta
        return feats + F.interpolate(update, size=feats.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, ir: torch.Tensor, vi: torch.Tensor, text: dict | None = None) -> torch.Tensor:
        y = self.luma(vi)
        f_ir, f_vi = self.encoder(self.embed_ir(ir)), self.encoder(self.embed_vi(y))
        if self.needs_text and text is not None:
            tokens, mask = self._text(text, f_ir)
            f_ir, f_vi = self._guide(f_ir, tokens, mask), self._guide(f_vi, tokens, mask)
        out = self.head(self.decoder(self.merge(torch.cat([f_ir, f_vi], 1))))
        if self.prior == "none":
            return torch.sigmoid(out)
        base = torch.maximum(ir, y).clamp(1e-3, 1 - 1e-3)
        return torch.sigmoid(torch.logit(base) + out)
