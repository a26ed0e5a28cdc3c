"""Monocular metric-depth estimators for IR and VIS images (LDNF III-A).

Two backbones behind one interface, `DepthEstimator`:

- `compact` (default): a small U-Net-style encoder–decoder trained from scratch. It is CPU-friendly,
  so the embedded synthetic pipeline can train both nets in about a minute.
- `hf`: a transformers depth model (DPT, ZoeDepth, Depth Anything, ... anything
  `AutoModelForDepthEstimation` loads) from a hub id or a local folder, fine-tuned. The weights go
  through `fusionlab.weights.resolve`, so offline users get one clear WeightsMissingError.

Either way the estimator takes [B,C,H,W] images in [0,1] and returns positive depth in metres,
[B,1,H,W], at the input resolution. A net trained on C channels also accepts the other count
(1 -> repeated, 3 -> luminance), so stage 4 can pass a fused image to either net.
Saved folders hold `config.json` (everything needed to rebuild, including the transformers config)
and `model.safetensors`; loading them never touches the hub.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULTS: dict = {
    "arch": "compact",  # "compact" | "hf"
    "in_channels": 1,  # 1 for IR, 3 for VIS
    "min_depth": 0.1,  # metres: the output is bounded to [min_depth, max_depth]
    "max_depth": 100.0,
    # compact backbone
    "base_channels": 16,
    "levels": 3,  # number of stride-2 encoder stages
    # hf backbone
    "pretrained": None,  # hub id or local folder; None = random init from `hf_config`
    "hf_config": None,  # transformers config dict (filled in when saving)
    "input_size": None,  # [H, W] the transformer sees; None = input size rounded to `size_multiple`
    "size_multiple": 14,
    "image_mean": list(IMAGENET_MEAN),
    "image_std": list(IMAGENET_STD),
}


def _conv_block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class CompactDepthNet(nn.Module):
    """U-Net encoder–decoder that predicts log-depth squashed into [log min_depth, log max_depth].

    Predicting bounded log-depth keeps outputs positive and the SiLog gradient well scaled from
    the first step, which is what lets a tiny net learn on a CPU in a few epochs.
    """

    def __init__(self, in_channels: int, base_channels: int = 16, levels: int = 3,
                 min_depth: float = 0.1, max_depth: float = 100.0):
        super().__init__()
        widths = [base_channels * min(2**i, 8) for i in range(levels + 1)]
        self.stem = _conv_block(in_channels, widths[0])
        self.down = nn.ModuleList(_conv_block(widths[i], widths[i + 1], stride=2) for i in range(levels))
        self.up = nn.ModuleList(_conv_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(levels)))
        self.head = nn.Conv2d(widths[0], 1, 3, padding=1)
        self.multiple = 2**levels
        self.log_min, self.log_max = math.log(min_depth), math.log(max_depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        feats = [self.stem((x - 0.5) / 0.25)]
        for block in self.down:
            feats.append(block(feats[-1]))
        y = feats.pop()
        for block in self.up:
            skip = feats.pop()
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], dim=1))
        logit = self.head(y)[..., :h, :w].float()
        return torch.exp(self.log_min + (self.log_max - self.log_min) * torch.sigmoid(logit))


class HFDepthNet(nn.Module):
    """A transformers depth model behind the [0,1]-image -> metres interface (fine-tunable)."""

    def __init__(self, model: nn.Module, cfg: dict):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(cfg["image_mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["image_std"]).view(1, 3, 1, 1), persistent=False)
        self.input_size = cfg.get("input_size")
        self.multiple = int(cfg.get("size_multiple") or 14)
        self.min_depth, self.max_depth = float(cfg["min_depth"]), float(cfg["max_depth"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.input_size:
            size = tuple(int(s) for s in self.input_size)
        else:
            size = tuple(max(self.multiple, round(s / self.multiple) * self.multiple) for s in (h, w))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False) if size != (h, w) else x
        out = self.model(pixel_values=(x - self.mean) / self.std).predicted_depth
        out = out.unsqueeze(1) if out.dim() == 3 else out
        out = F.interpolate(out.float(), size=(h, w), mode="bilinear", align_corners=False)
        return out.clamp(self.min_depth, self.max_depth)


class DepthEstimator(nn.Module):
    """Images [B,C,H,W] in [0,1] -> depth [B,1,H,W] in metres (positive), any backbone.

    `config` (a JSON-able dict) rebuilds the estimator exactly; see `DEFAULTS` for its keys.
    """

    def __init__(self, net: nn.Module, config: dict):
        super().__init__()
        self.net = net
        self.config = config
        self.in_channels = int(config["in_channels"])

    def adapt_channels(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.in_channels:
            return x
        if c == 1:
            return x.expand(-1, self.in_channels, -1, -1)
        if c == 3 and self.in_channels == 1:
            from fusionlab.data.colour import rgb_to_y

            return rgb_to_y(x)
        raise ValueError(f"depth estimator expects 1 or {self.in_channels} channels, got {c}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.adapt_channels(x))


def _hf_model(cfg: dict, key: str) -> tuple[nn.Module, dict]:
    """The transformers model: pretrained through the resolver, or rebuilt from a saved config."""
    from transformers import AutoModelForDepthEstimation

    from fusionlab import weights

    spec = cfg.get("pretrained")
    if cfg.get("hf_config") is not None:  # rebuilding a saved estimator: no hub access at all
        from transformers import CONFIG_MAPPING

        hf = dict(cfg["hf_config"])
        config = CONFIG_MAPPING[hf["model_type"]].from_dict(hf)
        return AutoModelForDepthEstimation.from_config(config), cfg
    if spec is None:
        from fusionlab.errors import ConfigError

        raise ConfigError(f"'{key}': the 'hf' depth backbone needs a pretrained hub id or local folder "
                          "(e.g. depth-anything/Depth-Anything-V2-Small-hf), or use arch: compact")
    resolved = weights.resolve(spec, what="depth model", key=key)
    with weights.loading("depth model", key, spec):
        model = AutoModelForDepthEstimation.from_pretrained(resolved)
    cfg = dict(cfg)
    cfg["hf_config"] = json.loads(model.config.to_json_string())
    processor = Path(resolved) / "preprocessor_config.json"
    if processor.is_file():  # use the model's own normalisation when it ships one
        proc = json.loads(processor.read_text())
        if proc.get("image_mean") and proc.get("image_std"):
            cfg["image_mean"], cfg["image_std"] = proc["image_mean"], proc["image_std"]
    backbone = getattr(model.config, "backbone_config", None)
    patch = getattr(backbone, "patch_size", None) or getattr(model.config, "patch_size", None)
    if patch and not cfg.get("input_size"):
        cfg["size_multiple"] = int(patch)
    return model, cfg


def build_depth_estimator(config: dict | None = None, *, key: str = "model.pretrained") -> DepthEstimator:
    """Build an estimator from a (partial) config dict; pretrained weights load via the resolver."""
    cfg = {**DEFAULTS, **(config or {})}
    if cfg["arch"] == "compact":
        net = CompactDepthNet(cfg["in_channels"], cfg["base_channels"], cfg["levels"],
                              cfg["min_depth"], cfg["max_depth"])
    elif cfg["arch"] == "hf":
        model, cfg = _hf_model(cfg, key)
        net = HFDepthNet(model, cfg)
    else:
        from fusionlab.errors import ConfigError

        raise ConfigError(f"depth model arch '{cfg['arch']}' is unknown: use 'compact' or 'hf'")
    return DepthEstimator(net, cfg)


def save_depth_estimator(path: str | Path, estimator: DepthEstimator) -> Path:
    """Write `config.json` + `model.safetensors` atomically (reloadable offline)."""
    from fusionlab.artifacts import save_model

    return save_model(path, estimator, estimator.config)


def load_depth_estimator(path: str | Path, *, trainable: bool = False) -> DepthEstimator:
    """Load a folder written by the depth stage: frozen and in eval mode unless `trainable`."""
    from fusionlab.artifacts import load_model_files, load_state

    config, state = load_model_files(path, what="depth estimator", required=("arch",))
    estimator = build_depth_estimator(config)
    load_state(estimator, state, path, "depth estimator")
    if not trainable:
        estimator.eval().requires_grad_(False)
    return estimator
