"""`ldnf` (Language-Depth Navigated Fusion, sec. III-B/C): frozen stage-2 diffusion features -> a
residual fusion decoder whose layers are FiLM-modulated by the CLIP text embedding -> RGB directly.

The 4-channel IR+RGB DDPM denoiser (stage 2) has learnt the joint structure of both modalities;
its decoder-block activations (`DiffusionFeatureExtractor`, at the timesteps Dif-Fusion [46]
uses) are the multi-channel features the paper fuses. Each is projected to a common width and
upsampled to full resolution; their sum is refined by residual blocks whose outputs are
modulated as F̂ = (1 + σ̂) ⊙ F + μ̂ with (σ̂, μ̂) predicted from the caption embedding
(`models/fusion/film.py`); a conv head writes RGB through a sigmoid. The denoiser's weights are
part of this net's state, so a saved `fusion/` folder is self-contained.

Switches (defaults = the paper): `text_guidance: false` fixes σ̂ = 0, μ̂ = 0 (the paper's "Lan"
row). fusionlab additions, off by default: `stem: true` adds a trainable conv over the raw
sources to the features (the decoder can then ignore the diffusion features), `prior: max`
makes the head a zero-initialised logit residual over max(IR, VIS) (the untrained net is then
max-fusion). `features: conv` swaps the frozen diffusion features for a conv encoder trained end
to end with the fusion loss; the paper's "Diff" row uses an autoencoder instead, so this is a
related ablation, not that row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusionlab.artifacts import plain
from fusionlab.models.fusion.base import FusionNet, register_fusion_model
from fusionlab.models.fusion.film import TextFiLM, film

DIF_FUSION_TIMESTEPS = (5, 50, 100)  # Dif-Fusion [46] config/fusion_train.json "t"; LDNF names none
PRIORS = ("none", "max")


class _ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, padding_mode="replicate")
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, padding_mode="replicate")
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))


class _ConvFeatures(nn.Module):
    """`features: conv`: a trainable 2-level conv encoder of the 4-channel stack (not an autoencoder)."""

    def __init__(self, width: int):
        super().__init__()
        self.channels = [width, 2 * width]
        self.level1 = nn.Sequential(nn.Conv2d(4, width, 3, padding=1), nn.LeakyReLU(0.1))
        self.level2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.LeakyReLU(0.1))

    def forward(self, ir: torch.Tensor, vi: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.level1(torch.cat([ir, vi], 1))
        return [f1, self.level2(f1)]


def diffusion_features(unet_config: dict, scheduler_config: dict, timesteps, blocks, seed: int):
    """A frozen `DiffusionFeatureExtractor` over a UNet2DModel rebuilt from its config (weights are
    loaded later, from the denoiser folder or from this net's own checkpoint)."""
    from diffusers import DDPMScheduler, UNet2DModel

    from fusionlab.models.denoiser import DiffusionFeatureExtractor

    unet = UNet2DModel.from_config(unet_config)
    blocks = range(len(unet.up_blocks)) if blocks is None else blocks  # all decoder blocks, as Dif-Fusion reads
    return DiffusionFeatureExtractor(unet, DDPMScheduler.from_config(scheduler_config), timesteps=tuple(timesteps),
                                     blocks=tuple(blocks), seed=seed)


@register_fusion_model("ldnf")
class LDNF(FusionNet):
    """Diffusion features + FiLM text modulation -> fused RGB."""

    out_channels = 3

    def __init__(self, width: int = 64, n_blocks: int = 3, text_dim: int = 512, film_hidden: int = 128,
                 text_guidance: bool = True, features: str = "diffusion", unet_config: dict | None = None,
                 scheduler_config: dict | None = None, timesteps: tuple[int, ...] | list[int] = DIF_FUSION_TIMESTEPS,
                 blocks: list[int] | None = None, seed: int = 0, prior: str = "none", stem: bool = False):
        super().__init__()
        if prior not in PRIORS:
            raise ValueError(f"ldnf: prior must be one of {PRIORS}, got {prior!r}")
        self.needs_text = bool(text_guidance)
        self.prior = prior
        if features == "diffusion":
            if unet_config is None or scheduler_config is None:
                raise ValueError("ldnf with features=diffusion needs unet_config and scheduler_config "
                                 "(build it with LDNF.from_denoiser or set features: conv)")
            from fusionlab.models.denoiser import size_multiple

            # frozen and always in eval mode (the extractor's own `train` keeps it so)
            self.features = diffusion_features(unet_config, scheduler_config, timesteps, blocks, seed)
            channels = list(self.features.channels)
            self.multiple = size_multiple(self.features.unet)
        elif features == "conv":
            self.features = _ConvFeatures(width)
            channels = self.features.channels
            self.multiple = 2
        else:
            raise ValueError(f"ldnf: features must be 'diffusion' or 'conv', got {features!r}")
        self.stem = nn.Sequential(nn.Conv2d(4, width, 3, padding=1, padding_mode="replicate"),
                                  nn.LeakyReLU(0.1)) if stem else None
        # GroupNorm first: diffusion activations have arbitrary scales per block and timestep
        self.project = nn.ModuleList(nn.Sequential(nn.GroupNorm(1, c), nn.Conv2d(c, width, 1)) for c in channels)
        self.blocks = nn.ModuleList(_ResidualBlock(width) for _ in range(n_blocks))
        self.film = TextFiLM(text_dim, [width] * n_blocks, film_hidden) if text_guidance else None
        self.head = nn.Conv2d(width, 3, 3, padding=1, padding_mode="replicate")
        if prior == "max":  # start exactly at max(IR, VIS)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    @classmethod
    def from_denoiser(cls, denoiser_path: str, **kwargs) -> "LDNF":
        """Build via the registry with the stage-2 denoiser's configs, and copy its weights in."""
        from fusionlab.models.denoiser import load_denoiser
        from fusionlab.models.fusion.base import build_fusion_model

        unet, scheduler = load_denoiser(denoiser_path)
        net = build_fusion_model({"name": "ldnf", "features": "diffusion", **kwargs,
                                  "unet_config": plain(dict(unet.config)),
                                  "scheduler_config": plain(dict(scheduler.config))})
        net.features.unet.load_state_dict(unet.state_dict())
        return net

    def forward(self, ir: torch.Tensor, vi: torch.Tensor, text: dict | None = None) -> torch.Tensor:
        size = ir.shape[-2:]
        x = self.stem(torch.cat([ir, vi], 1)) if self.stem is not None else 0
        dtype = ir.dtype
        for proj, feat in zip(self.project, self.features(ir, vi), strict=True):
            x = x + F.interpolate(proj(feat.to(dtype)), size=size, mode="bilinear", align_corners=False)
        params = self.film(text["pooled"].to(x.device)) if (self.film is not None and text is not None) else None
        for i, block in enumerate(self.blocks):
            h = block(x)
            if params is not None:
                h = film(h, *params[i])
            x = x + h
        if self.prior == "none":
            return torch.sigmoid(self.head(x))
        base = torch.maximum(ir.expand_as(vi), vi).clamp(1e-3, 1 - 1e-3)
        return torch.sigmoid(torch.logit(base) + self.head(x))


def build(kwargs: dict, cfg) -> LDNF:
    """Stage 4's ldnf: with diffusion features, the stage-2 denoiser (`inputs.denoiser`) is copied in."""
    from fusionlab.models.fusion.base import build_fusion_model
    from fusionlab.presets import require_input

    if kwargs.get("features", "diffusion") == "diffusion":
        return LDNF.from_denoiser(require_input(cfg, "denoiser", "ldnf (diffusion features)"), **kwargs)
    return build_fusion_model({"name": "ldnf", **kwargs})
