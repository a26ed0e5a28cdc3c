"""LDNF's depth-driven loss: the fused image, passed through the frozen stage-1 depth nets
(IR and VIS), should give the right depth (SiLog, ldnf eq. 1).

The target is the ground-truth depth where the dataset measured it (KAIST LiDAR, synthetic
depth), and elsewhere the depth each frozen net predicts from its own source image: the fusion
must not make depth worse than either modality alone.
"""

from __future__ import annotations

import torch
from torch import nn

from fusionlab.losses.silog import silog_loss


def _resize(x: torch.Tensor, scale: float, nearest: bool = False) -> torch.Tensor:
    import torch.nn.functional as F

    if nearest:  # depth: keep measured values and the 0 = invalid marker unblended
        return F.interpolate(x, scale_factor=scale, mode="nearest")
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False, antialias=True)


class DepthDrivenLoss(nn.Module):
    """SiLog(D_ir(F), target_ir) + SiLog(D_vis(F), target_vis) with frozen estimators."""

    def __init__(self, depth_ir: nn.Module, depth_vis: nn.Module, lam: float = 1.0, scale: float = 1.0):
        super().__init__()
        self.scale = scale  # < 1 runs the depth nets on a downscaled image (CPU budget); SiLog is scale-free
        self.depth_ir = depth_ir.eval().requires_grad_(False)
        self.depth_vis = depth_vis.eval().requires_grad_(False)
        self.lam = lam

    def train(self, mode: bool = True):  # the estimators stay in eval mode (frozen BN statistics)
        return super().train(False)

    @staticmethod
    def targets(gt: torch.Tensor | None, from_source: torch.Tensor) -> torch.Tensor:
        """GT depth where valid (> 0), the source's predicted depth elsewhere (or everywhere without GT)."""
        if gt is None:
            return from_source
        return torch.where(gt > 0, gt, from_source)

    def forward(self, fused_rgb: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor,
                gt_depth: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if self.scale != 1.0:
            fused_rgb, ir, vi = (_resize(x, self.scale) for x in (fused_rgb, ir, vi))
            gt_depth = None if gt_depth is None else _resize(gt_depth, self.scale, nearest=True)
        with torch.no_grad():
            complete = gt_depth is not None and bool((gt_depth > 0).all())  # no pixel needs a source depth
            target_ir = gt_depth if complete else self.targets(gt_depth, self.depth_ir(ir))
            target_vis = gt_depth if complete else self.targets(gt_depth, self.depth_vis(vi))
        loss_ir = silog_loss(self.depth_ir(fused_rgb), target_ir, lam=self.lam)
        loss_vis = silog_loss(self.depth_vis(fused_rgb), target_vis, lam=self.lam)
        return {"depth_ir": loss_ir, "depth_vis": loss_vis, "total": loss_ir + loss_vis}
