"""The fusion-network contract every preset implements, and the helpers around it.

A `FusionNet` takes IR [B,1,H,W] and VIS RGB [B,3,H,W] in [0,1] (plus, for text-guided presets, a
text dict) and returns [B,out_channels,H,W] in [0,1]. Nets with `out_channels == 1` fuse luminance
only: the output is the fused Y and colour comes back from the visible image's CbCr (this is how
most published methods keep colour without learning it). Nets with `out_channels == 3` produce RGB
directly. `fuse_rgb` hides that difference, and the padding to `net.multiple`, from callers.

Preset networks live in `fusionlab/presets/<name>/net.py` and register themselves with
`@register_fusion_model("name")`; `build_fusion_model` imports a preset's net the first time its
name is asked for (the preset registry names it), so nothing is imported until it is used. Saved
models are a folder of safetensors + JSON config (`fusionlab.artifacts.save_model`), and the
config holds everything `build_fusion_model` needs.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import torch
from torch import nn

from fusionlab.data.colour import rgb_to_y, to_gray
from fusionlab.errors import ConfigError, PipelineError
from fusionlab.models.padding import pad_multiple  # re-exported: fusion code pads through it

ARTIFACT_KIND = "fusion"
_REGISTRY: dict[str, type["FusionNet"]] = {}


class FusionNet(nn.Module):
    """Base class of every fusion network.

    Class attributes a subclass may override:
      out_channels: 1 = fused Y (colour from VIS CbCr), 3 = native RGB.
      needs_text: True if `forward` requires `text` (a dict with "pooled" [B,D], "tokens" [B,L,D],
        "mask" [B,L], as returned by stage 3's EmbeddingCache / ClipEncoder).
      multiple: inputs are padded to a multiple of this (e.g. 8 for a net that downsamples 3x).
    `config` is set by `build_fusion_model` to the dict that rebuilds the net.
    """

    out_channels: int = 1
    needs_text: bool = False
    multiple: int = 1

    def __init__(self) -> None:
        super().__init__()
        self.config: dict = {}

    def forward(self, ir: torch.Tensor, vi: torch.Tensor, text: dict | None = None) -> torch.Tensor:
        raise NotImplementedError

    def image_stats(self, ir: torch.Tensor, vi: torch.Tensor) -> dict | None:
        """Whole-image statistics the net normalises its input with (None: it needs none).

        A net that returns a dict here must accept it as `forward(..., stats=stats)`; tiled
        inference computes it once on the whole image and passes it to every tile, so tiles
        are normalised alike and blend seamlessly.
        """
        return None

    @staticmethod
    def luma(vi: torch.Tensor) -> torch.Tensor:
        """Y (BT.601, as the YCbCr colour path uses) of an RGB batch; 1-channel input passes through."""
        return to_gray(vi)


# ----------------------------------------------------------------------------- registry


def register_fusion_model(name: str):
    """Class decorator: make `cls` buildable as `build_fusion_model({"name": name, ...})`."""

    def deco(cls: type[FusionNet]) -> type[FusionNet]:
        if not (isinstance(cls, type) and issubclass(cls, FusionNet)):
            raise TypeError(f"@register_fusion_model('{name}') must decorate a FusionNet subclass")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"fusion model '{name}' is registered twice ({_REGISTRY[name]} and {cls})")
        _REGISTRY[name] = cls
        cls.preset_name = name
        return cls

    return deco


def registered_fusion_models() -> list[str]:
    """Names that `build_fusion_model` accepts: every preset's net, plus nets registered in code."""
    from fusionlab.presets import preset_names

    return sorted(set(preset_names()) | set(_REGISTRY))


def _lookup(name: str) -> type[FusionNet]:
    if name not in _REGISTRY:
        from fusionlab.presets import get_preset, preset_names

        if name in preset_names():
            _ = get_preset(name).net_class  # importing the net module registers it
    if name not in _REGISTRY:
        known = registered_fusion_models()
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"model.name: unknown fusion model '{name}'.{hint} Known: {', '.join(known)}")
    return _REGISTRY[name]


def build_fusion_model(cfg: dict) -> FusionNet:
    """Build a net from {"name": <registered name>, **constructor kwargs}."""
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise ConfigError(f"model: a fusion model config needs a 'name' key, got {cfg!r}")
    kwargs = {k: v for k, v in cfg.items() if k != "name"}
    cls = _lookup(cfg["name"])
    try:
        net = cls(**kwargs)
    except (TypeError, ValueError) as exc:  # unknown keyword, or a value the constructor rejects
        raise ConfigError(f"model ({cfg['name']}): bad arguments {sorted(kwargs)}: {exc}; fix the model.* keys") from None
    net.config = {"name": cfg["name"], **kwargs}
    return net


# ----------------------------------------------------------------------------- artifacts


def save_fusion_model(path: str | Path, net: FusionNet, extra: dict | None = None) -> Path:
    """Write `net` as a fusionlab artifact folder (model.safetensors + config.json).

    `extra` is stored beside the model config (e.g. the preset, training metrics) and ignored
    when loading.
    """
    from fusionlab.artifacts import save_model

    if not net.config.get("name"):
        raise ValueError("save_fusion_model: the net has no config; create it with build_fusion_model")
    config = {"kind": ARTIFACT_KIND, "model": dict(net.config), **(extra or {})}
    return save_model(path, net, config)


def load_fusion_model(path: str | Path, map_location: str | torch.device = "cpu") -> FusionNet:
    """Rebuild a net saved by `save_fusion_model` (or any `save_model` folder whose config has
    a "model" dict with a "name"), in eval mode. The folder's whole config.json (the model plus
    what the training recorded beside it, e.g. the CLIP used) is kept as `net.checkpoint_config`."""
    from fusionlab.artifacts import load_model_files, load_state

    path = Path(path)
    if not path.exists():
        raise PipelineError(
            f"fusion checkpoint '{path}' does not exist; pass the 'fusion/' folder a stage-4 run wrote"
        )
    config, state = load_model_files(path, what="fusion checkpoint")
    model_cfg = config.get("model", config)
    if not isinstance(model_cfg, dict) or "name" not in model_cfg:
        raise PipelineError(f"fusion checkpoint '{path}/config.json' has no model name; it is not a fusion model")
    net = build_fusion_model(model_cfg)
    load_state(net, state, path, f"fusion checkpoint (model '{model_cfg['name']}')")
    net.checkpoint_config = config
    return net.to(map_location).eval()


# ----------------------------------------------------------------------------- inference helpers


def unpad(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Undo `pad_multiple`."""
    return x[..., : size[0], : size[1]]


def restore_colour(fused: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """RGB image from a fused Y [B,1,H,W] and the visible image's chroma (YCbCr).

    Swapping Y in YCbCr and converting back adds the change of Y to R, G and B alike (the
    inverse transform has unit Y coefficients), so this is `ycbcr_to_rgb([fused, CbCr(vi)])`
    computed in one pass instead of two full colour conversions.
    """
    return (vi + (fused - rgb_to_y(vi))).clamp_(0.0, 1.0)


def forward_padded(net: FusionNet, ir: torch.Tensor, vi: torch.Tensor, text: dict | None = None,
                   stats: dict | None = None) -> torch.Tensor:
    """`net(ir, vi, text)` at any input size: padded to `net.multiple`, the output cropped back.

    Training calls it too, so a net that down- and upsamples trains on crops of any size.
    """
    multiple = int(getattr(net, "multiple", 1) or 1)
    ir_p, size = pad_multiple(ir, multiple)
    vi_p, _ = pad_multiple(vi, multiple)
    out = net(ir_p, vi_p, text) if stats is None else net(ir_p, vi_p, text, stats=stats)
    return unpad(out, size)


def fuse_raw(net: FusionNet, ir: torch.Tensor, vi: torch.Tensor, text: dict | None = None,
             stats: dict | None = None) -> torch.Tensor:
    """The net's own output [B,out_channels,H,W] at any input size (padded to `net.multiple` and
    cropped back): what its training objective sees. `fuse_rgb` turns it into RGB."""
    if net.needs_text and text is None:
        raise ConfigError(
            f"fusion model '{net.config.get('name', type(net).__name__)}' needs text at inference; "
            "pass captions (fuse --captions FILE) or embeddings"
        )
    if stats is None:
        stats = net.image_stats(ir, vi)
    return forward_padded(net, ir, vi, text, stats)


def as_rgb(out: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """RGB [B,3,H,W] in [0,1] from a net's output: Y-only nets get the visible image's colour."""
    out = out.float()
    if out.shape[1] == 1:
        return restore_colour(out.clamp(0.0, 1.0), vi.float())
    return out.clamp(0.0, 1.0)


def fuse_rgb(net: FusionNet, ir: torch.Tensor, vi: torch.Tensor, text: dict | None = None,
             stats: dict | None = None) -> torch.Tensor:
    """Run `net` at any input size and return RGB [B,3,H,W] in [0,1].

    Pads to `net.multiple` and crops back, and restores colour for Y-only nets. `stats` (from
    `net.image_stats` of the whole image) is only needed when `ir`/`vi` are tiles.
    """
    return as_rgb(fuse_raw(net, ir, vi, text, stats), vi)
