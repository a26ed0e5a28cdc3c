"""LDFusion's feature-fidelity loss L_v (ldfusion paper, eq. 13): VGG-19 features of the fusion
should match the element-wise max of the sources' features at conv layers 3, 5 and 10.

It holds back the "imagined" content a CLIP-space loss alone can produce. The VGG is frozen;
`pretrained` is a torchvision weights name (e.g. IMAGENET1K_V1), a local file, or null (random
init, for tests and smoke runs - then the loss only constrains random features).
"""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# indices of the 16 conv layers in torchvision's vgg19().features (each followed by a ReLU)
VGG19_CONV_POSITIONS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)


def vgg19_source(pretrained: str):
    """Where torchvision VGG-19 weights (e.g. IMAGENET1K_V1) or a local file live (fusionlab.weights)."""
    import torchvision

    from fusionlab import weights

    return weights.torchvision_source(torchvision.models.VGG19_Weights, pretrained)


def _load_vgg19(pretrained: str | None, key: str, upto: int = 36) -> nn.Sequential:
    """torchvision VGG-19 `features`; a local file may hold the whole model or just the trunk
    up to layer `upto` (what this loss uses)."""
    import torchvision

    from fusionlab import weights

    if pretrained is None:
        return torchvision.models.vgg19(weights=None).features
    source = vgg19_source(pretrained)
    resolved = source.resolve(what="VGG-19 (feature-fidelity loss)", key=key)
    if weights.is_local(resolved):
        vgg = torchvision.models.vgg19(weights=None)
        if resolved.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(resolved)
        else:
            state = torch.load(resolved, map_location="cpu", weights_only=True)
        if any(k.startswith("0.") for k in state):  # a bare (possibly truncated) `features` state dict
            missing, unexpected = vgg.features.load_state_dict(state, strict=False)
            needed = [k for k in missing if int(k.split(".")[0]) <= upto]
            if needed or unexpected:
                from fusionlab.errors import WeightsMissingError

                raise WeightsMissingError(f"VGG-19 weights '{resolved}' (config key '{key}') do not fit VGG-19 "
                                          f"features: missing {needed[:3]}, unexpected {unexpected[:3]}")
        else:
            try:
                vgg.load_state_dict(state)
            except RuntimeError as exc:
                from fusionlab.errors import WeightsMissingError

                raise WeightsMissingError(f"VGG-19 weights '{resolved}' (config key '{key}') do not fit VGG-19: "
                                          f"{str(exc).splitlines()[0]}") from None
        return vgg.features
    with weights.loading("VGG-19 (feature-fidelity loss)", key, pretrained, source):
        return torchvision.models.vgg19(weights=resolved).features


class VGGFeatures(nn.Module):
    """Frozen VGG-19 trunk returning the ReLU outputs of the given conv layers (1-based, e.g. 3 =
    conv2_1, 5 = conv3_1, 10 = conv4_2). Gray inputs are replicated to RGB."""

    def __init__(self, pretrained: str | None = None, layers: tuple[int, ...] = (3, 5, 10), key: str = "loss.vgg_pretrained"):
        super().__init__()
        conv_positions = VGG19_CONV_POSITIONS
        if not layers or any(not 1 <= k <= len(conv_positions) for k in layers):
            from fusionlab.errors import ConfigError

            raise ConfigError(f"VGG-19 feature layers {list(layers)}: conv indices must be in 1..{len(conv_positions)} "
                              "(e.g. loss.ldfusion.vgg_layers: [3, 5, 10])")
        features = _load_vgg19(pretrained, key, upto=conv_positions[max(layers) - 1] + 1)
        self.taps = [conv_positions[k - 1] + 1 for k in layers]  # the ReLU after the k-th conv
        self.trunk = features[: max(self.taps) + 1].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):  # always frozen
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        x = (x - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.trunk):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


class FeatureFidelityLoss(nn.Module):
    """L_v = Σ_k mean|ψ_f^k − max(ψ_ir^k, ψ_vs^k)| (eq. 13)."""

    def __init__(self, pretrained: str | None = None, layers: tuple[int, ...] = (3, 5, 10), key: str = "loss.vgg_pretrained"):
        super().__init__()
        self.vgg = VGGFeatures(pretrained, layers, key)

    def forward(self, fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            targets = [torch.maximum(a, b) for a, b in zip(self.vgg(ir), self.vgg(vi), strict=True)]
        return sum((f - t).abs().mean() for f, t in zip(self.vgg(fused), targets, strict=True))
