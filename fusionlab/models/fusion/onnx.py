"""ONNX export of a fusion net's whole inference path (padding, net, colour restore).

Deployment runtimes want one graph that maps (IR, VIS RGB) to fused RGB, so the exported graph
wraps `fuse_rgb`, with height and width left dynamic. Presets that need CLIP text at inference
cannot be exported this way (the text encoder is a separate, much larger graph).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from fusionlab.errors import ConfigError, PipelineError
from fusionlab.models.fusion.base import FusionNet, fuse_rgb


class FuseRGB(nn.Module):
    """(ir [B,1,H,W], vi [B,3,H,W]) -> fused RGB [B,3,H,W], all in [0,1]."""

    def __init__(self, net: FusionNet):
        super().__init__()
        self.net = net

    def forward(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        return fuse_rgb(self.net, ir, vi)


def export_onnx(net: FusionNet, path: str | Path, *, example_size: tuple[int, int] = (64, 80), opset: int = 18) -> Path:
    """Write `net` as an ONNX graph with inputs "ir", "vi" and output "fused" (dynamic B, H, W)."""
    from fusionlab.artifacts import atomic_write_bytes

    name = net.config.get("name", type(net).__name__)
    if net.needs_text:
        raise ConfigError(f"fusion model '{name}' needs CLIP text at inference, so it cannot be exported to "
                          "ONNX on its own; export a preset with text_guidance: off or 'baseline'")
    path = Path(path)
    m = max(int(getattr(net, "multiple", 1) or 1), 1)
    # a size that needs padding, so the traced graph contains the pad-to-multiple step
    h, w = (-(-s // m) * m + (1 if m > 1 else 0) for s in example_size)
    ir, vi = torch.rand(1, 1, h, w), torch.rand(1, 3, h, w)
    wrapper = FuseRGB(net.eval()).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.export")
    try:
        with torch.no_grad():
            torch.onnx.export(
                wrapper, (ir, vi), str(tmp), input_names=["ir", "vi"], output_names=["fused"],
                dynamic_axes={"ir": {0: "batch", 2: "height", 3: "width"}, "vi": {0: "batch", 2: "height", 3: "width"},
                              "fused": {0: "batch", 2: "height", 3: "width"}},
                opset_version=opset, dynamo=False,
            )
        data = tmp.read_bytes()
    except Exception as exc:  # the exporter raises many types; say which model failed and why
        raise PipelineError(f"ONNX export of fusion model '{name}' failed: {type(exc).__name__}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return atomic_write_bytes(path, data)
