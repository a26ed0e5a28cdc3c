"""The 4-channel IR+RGB diffusion denoiser (LDNF III-B) and the features stage 4 reads from it.

The DDPM models the joint distribution of an aligned pair stacked as one 4-channel image
(IR, R, G, B), scaled to [-1, 1]. diffusers supplies the network (`UNet2DModel`, an SR3-style
U-Net: residual blocks, self-attention at the lowest resolution, sinusoidal time embedding) and
the noise schedule (`DDPMScheduler`); training is plain ε-prediction MSE (eq. 8).

`DiffusionFeatureExtractor` turns the trained UNet into a frozen feature backbone: it noises the
pair to chosen timesteps (eq. 4), runs one UNet pass per timestep, and returns the activations of
chosen decoder (up) blocks, caught with forward hooks.

Saved as a diffusers pipeline folder (`DDPMPipeline.save_pretrained`: `model_index.json`,
`unet/`, `scheduler/`), so it also loads with plain diffusers.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

UNET_DEFAULTS: dict = {
    "block_out_channels": [16, 32, 64],  # one entry per resolution level
    "layers_per_block": 1,
    "attention": True,  # self-attention at the lowest resolution (SR3 puts it at 16x16)
    "norm_num_groups": 8,
    "sample_size": 64,  # nominal size (diffusers metadata); the net is fully convolutional
}
SCHEDULER_DEFAULTS: dict = {
    "num_train_timesteps": 1000,  # T
    "beta_schedule": "linear",  # or "scaled_linear", "squaredcos_cap_v2", "sigmoid"
    "beta_start": 1e-4,
    "beta_end": 0.02,
}


def build_unet(**overrides) -> "UNet2DModel":  # noqa: F821
    """A small SR3-style `UNet2DModel` on 4 channels (IR + RGB)."""
    from diffusers import UNet2DModel

    cfg = {**UNET_DEFAULTS, **overrides}
    levels = len(cfg["block_out_channels"])
    down = ["DownBlock2D"] * levels
    up = ["UpBlock2D"] * levels
    if cfg["attention"]:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return UNet2DModel(
        sample_size=cfg["sample_size"],
        in_channels=4,
        out_channels=4,
        block_out_channels=tuple(cfg["block_out_channels"]),
        layers_per_block=cfg["layers_per_block"],
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        norm_num_groups=cfg["norm_num_groups"],
        attention_head_dim=cfg["block_out_channels"][-1],
    )


def build_scheduler(**overrides) -> "DDPMScheduler":  # noqa: F821
    """`DDPMScheduler` for ε-prediction with a configurable T and β schedule."""
    from diffusers import DDPMScheduler

    cfg = {**SCHEDULER_DEFAULTS, **overrides}
    return DDPMScheduler(prediction_type="epsilon", clip_sample=True, **cfg)


def to_model_space(ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """IR [B,1,H,W] and RGB [B,3,H,W] in [0,1] -> the 4-channel stack in [-1,1]."""
    return torch.cat([ir, vi], dim=1) * 2.0 - 1.0


def from_model_space(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of `to_model_space`: (ir [B,1,H,W], rgb [B,3,H,W]) in [0,1]."""
    x = ((x.float() + 1.0) / 2.0).clamp(0, 1)
    return x[:, :1], x[:, 1:]


def size_multiple(unet) -> int:
    """Input sides must be multiples of this (one stride-2 step between resolution levels)."""
    return 2 ** (len(unet.config.block_out_channels) - 1)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    from fusionlab.models.padding import pad_multiple

    return pad_multiple(x, multiple)[0]


def epsilon_mse(unet, scheduler, x0: torch.Tensor, noise: torch.Tensor | None = None,
                timesteps: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 8: || γ - ε_θ(sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t) γ, t) ||² with t ~ U{0..T-1}, γ ~ N(0, I).

    `noise`/`timesteps` (or a CPU `generator`) make it deterministic, for validation.
    """
    b = x0.shape[0]
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device) if generator \
            else torch.randn_like(x0)
    if timesteps is None:
        T = scheduler.config.num_train_timesteps
        timesteps = (torch.randint(0, T, (b,), generator=generator) if generator
                     else torch.randint(0, T, (b,), device=x0.device)).to(x0.device)
    x0 = pad_to_multiple(x0, size_multiple(unet))
    noise = pad_to_multiple(noise.to(x0.dtype), size_multiple(unet))
    noisy = scheduler.add_noise(x0, noise, timesteps)
    pred = unet(noisy, timesteps).sample
    return F.mse_loss(pred.float(), noise.float())


def save_denoiser(path: str | Path, unet, scheduler) -> Path:
    """Write a diffusers pipeline folder (safetensors + JSON), atomically."""
    from diffusers import DDPMPipeline

    from fusionlab.artifacts import atomic_dir

    with atomic_dir(path) as tmp:
        DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(str(tmp), safe_serialization=True)
    return Path(path)


def load_denoiser(path: str | Path, *, trainable: bool = False):
    """(UNet2DModel, DDPMScheduler) from a folder written by the denoiser stage; frozen unless `trainable`."""
    from diffusers import DDPMScheduler, UNet2DModel

    from fusionlab.errors import PipelineError

    path = Path(path)
    for part in ("unet/config.json", "scheduler/scheduler_config.json"):
        if not (path / part).is_file():
            raise PipelineError(f"denoiser: '{path / part}' is missing; expected the `denoiser/` folder written "
                                "by the denoiser stage (run `fusionlab stage stages/2-denoiser.yaml` first)")
    unet = UNet2DModel.from_pretrained(str(path), subfolder="unet", use_safetensors=True)
    scheduler = DDPMScheduler.from_pretrained(str(path), subfolder="scheduler")
    if not trainable:
        unet.eval().requires_grad_(False)
    return unet, scheduler


@torch.no_grad()
def generate_samples(unet, scheduler, n: int = 8, size: tuple[int, int] = (64, 64), steps: int = 50,
                     seed: int = 0, progress: bool = False) -> torch.Tensor:
    """Draw `n` 4-channel samples [n,4,H,W] in [-1,1] by ancestral sampling.

    Uses a DDIM scheduler built from the training schedule, so `steps` << T gives the same
    distribution at a fraction of the cost (steps = T with eta = 1 is plain DDPM sampling).
    """
    from diffusers import DDIMScheduler

    sampler = DDIMScheduler.from_config(scheduler.config)
    sampler.set_timesteps(steps)
    device = next(unet.parameters()).device
    dtype = next(unet.parameters()).dtype
    gen = torch.Generator().manual_seed(seed)
    m = size_multiple(unet)
    h, w = size
    x = torch.randn((n, 4, h + (-h) % m, w + (-w) % m), generator=gen).to(device, dtype)
    timesteps = sampler.timesteps
    if progress:
        from tqdm.auto import tqdm

        timesteps = tqdm(timesteps, desc="sampling")
    for t in timesteps:
        eps = unet(x, t).sample
        x = sampler.step(eps, t, x, eta=1.0, generator=gen).prev_sample  # CPU generator: same samples on any device
    return x[..., :h, :w].float().clamp(-1, 1)


def sample_grid(x: torch.Tensor, columns: int = 4) -> torch.Tensor:
    """[n,4,H,W] samples in [-1,1] -> one [3, rows*H, columns*2W] image; each tile is IR | RGB."""
    from torchvision.utils import make_grid

    ir, rgb = from_model_space(x)
    tiles = torch.cat([ir.expand(-1, 3, -1, -1), rgb], dim=3)  # IR | RGB side by side
    return make_grid(tiles, nrow=columns, padding=2, pad_value=1.0)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b))


class DiffusionFeatureExtractor(nn.Module):
    """Frozen multi-scale features of an IR/VIS pair from the denoiser's decoder (LDNF III-B).

    For each timestep t in `timesteps`, the 4-channel pair x0 is noised to
    x_t = sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t) γ (eq. 4) and passed once through the UNet; forward hooks
    catch the outputs of `unet.up_blocks[b]` for b in `blocks` (0 = lowest resolution).

    Call: `extractor(ir [B,1,H,W], vi [B,3,H,W]) -> list[Tensor]`, one tensor per block
    (in `blocks` order), float32, each `[B, channels[i], ceil(H/strides[i]), ceil(W/strides[i])]`,
    where the features of all timesteps are concatenated along channels (timestep-major), so
    `channels[i] = len(timesteps) * C_b` and C_b is the block's width. For the default UNet
    ([16, 32, 64]) up block 0 has C=64 at stride 2, block 1 C=32 at stride 1, block 2 C=16 at stride 1
    (each up block but the last ends with a 2x upsampler).
    Inputs of any size work: they are padded to a multiple of `size_multiple(unet)` and the
    features cropped back.

    Deterministic given `seed`: one noise map per (seed, timestep, padded size) is drawn on the CPU
    and shared by every image of the batch, so an image's features do not depend on its batch.
    Inside `with extractor.reuse():` a batch's features are computed once however often the net
    is evaluated on it (stage 5's lower-level steps evaluate one net at several parameter values).
    """

    def __init__(self, unet, scheduler, timesteps=(50, 150), blocks=(0, 1), seed: int = 0):
        super().__init__()
        self.unet = unet.eval().requires_grad_(False)
        self.scheduler = scheduler
        self.timesteps = tuple(int(t) for t in timesteps)
        self.blocks = tuple(int(b) for b in blocks)
        self.seed = int(seed)
        T = scheduler.config.num_train_timesteps
        n_up = len(unet.up_blocks)
        if not self.timesteps or any(not 0 <= t < T for t in self.timesteps):
            raise ValueError(f"timesteps {self.timesteps} must be in [0, {T})")
        if not self.blocks or any(not 0 <= b < n_up for b in self.blocks):
            raise ValueError(f"blocks {self.blocks} must be indices of the {n_up} UNet up blocks")
        widths = list(reversed(unet.config.block_out_channels))
        self.channels = [widths[b] * len(self.timesteps) for b in self.blocks]
        self.strides = [2 ** max(n_up - 2 - b, 0) for b in self.blocks]
        self._reused: list | None = None

    def train(self, mode: bool = True):  # always frozen
        return super().train(False)

    def _noise(self, k: int, shape) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1000003 + k)
        return torch.randn((1, *shape), generator=gen)

    @contextlib.contextmanager
    def reuse(self):
        """Within the block, features of a batch already seen are returned again, not recomputed.

        The extractor is frozen, so its features depend on the input pair only. Do not modify the
        returned tensors in place.
        """
        self._reused = []
        try:
            yield self
        finally:
            self._reused = None

    @torch.no_grad()
    def forward(self, ir: torch.Tensor, vi: torch.Tensor) -> list[torch.Tensor]:
        """Features of the pair (see the class docstring for shapes)."""
        if self._reused is not None:
            for seen_ir, seen_vi, feats in self._reused:
                if _same(seen_ir, ir) and _same(seen_vi, vi):
                    return list(feats)
        feats = self._compute(ir, vi)
        if self._reused is not None:
            self._reused.append((ir, vi, feats))
        return feats

    def _compute(self, ir: torch.Tensor, vi: torch.Tensor) -> list[torch.Tensor]:
        h, w = ir.shape[-2:]
        x0 = pad_to_multiple(to_model_space(ir.float(), vi.float()), size_multiple(self.unet))
        dtype = next(self.unet.parameters()).dtype
        caught: dict[int, torch.Tensor] = {}
        hooks = [self.unet.up_blocks[b].register_forward_hook(
            lambda _m, _i, out, b=b: caught.__setitem__(b, out)) for b in self.blocks]
        per_block: dict[int, list[torch.Tensor]] = {b: [] for b in self.blocks}
        try:
            for k, t in enumerate(self.timesteps):
                noise = self._noise(k, x0.shape[1:]).to(x0.device).expand_as(x0)
                tt = torch.full((x0.shape[0],), t, device=x0.device, dtype=torch.long)
                xt = self.scheduler.add_noise(x0, noise, tt).to(dtype)
                self.unet(xt, tt)
                for b in self.blocks:
                    per_block[b].append(caught[b].float())
        finally:
            for hook in hooks:
                hook.remove()
        out = []
        for b, s in zip(self.blocks, self.strides, strict=True):
            f = torch.cat(per_block[b], dim=1)
            out.append(f[..., : -(-h // s), : -(-w // s)].contiguous())
        return out
