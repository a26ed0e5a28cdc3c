"""LDNF's objective: the multi-channel fusion losses (eq. 9-10) plus the depth-driven loss.

The network writes RGB directly, so the intensity and gradient targets are built per colour
channel against the single IR channel. The depth-driven loss passes the fused image through the
two frozen stage-1 depth nets (IR and VIS) and compares their depth with the truth (SiLog, eq. 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from fusionlab.config import Section
from fusionlab.losses.gradient import sobel_magnitude
from fusionlab.losses.silog import silog_loss
from fusionlab.presets.objective import Objective


class LDNFLoss(Section):
    mci: float = 1.0           # L_MCI (eq. 10); L_f = L_MCG + L_MCI
    mcg: float = 1.0           # L_MCG (eq. 9)
    depth: float = 1.0         # depth-driven SiLog weight (the paper adds it unweighted; used when depth_loss is on)
    silog_lambda: float = 1.0  # λ of SiLog; 1 = eq. 1 of the paper
    depth_scale: float = Field(1.0, gt=0, le=1)  # run the frozen depth nets at this fraction of the resolution


def mci_loss(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """L_MCI = 1/(HW) Σ_i ||I_f^i - max(I_ir, I_vis^i)||_1 over the three channels i (eq. 10).

    Averaged over the batch; with the 1/(HW) the value is the per-pixel L1 summed over channels.
    """
    target = torch.maximum(ir.expand_as(vi), vi)
    return (fused - target).abs().sum(1).mean()


def mcg_loss(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """L_MCG = 1/(HW) Σ_i || |∇I_f^i| - max(|∇I_ir|, |∇I_vis^i|) ||_1 (eq. 9), Sobel gradients."""
    target = torch.maximum(sobel_magnitude(ir).expand_as(vi), sobel_magnitude(vi))
    return (sobel_magnitude(fused) - target).abs().sum(1).mean()


def _resize(x: torch.Tensor, scale: float, nearest: bool = False) -> torch.Tensor:
    if nearest:  # depth: keep measured values and the 0 = invalid marker unblended
        return F.interpolate(x, scale_factor=scale, mode="nearest")
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False, antialias=True)


class DepthDrivenLoss(torch.nn.Module):
    """SiLog(D_ir(F), T_ir) + SiLog(D_vis(F), T_vis) through the frozen stage-1 estimators.

    T is the ground-truth depth where the dataset measured it (KAIST LiDAR, synthetic depth) and,
    elsewhere, the depth each frozen net predicts from its own source image (the paper compares
    with ground truth only; its evaluation sets have none, so this is fusionlab's fallback).
    Gradients flow through the frozen nets into the fused image.
    """

    def __init__(self, depth_ir: torch.nn.Module, depth_vis: torch.nn.Module, lam: float = 1.0, scale: float = 1.0):
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


class LDNFObjective(Objective):
    """w_mci·L_MCI + w_mcg·L_MCG (+ w_depth·L_depth when `depth_loss` is on)."""

    loss_class = LDNFLoss

    def __init__(self, cfg, net):
        super().__init__(cfg, net)
        self.depth = None
        if cfg.depth_loss:
            from fusionlab.models.depth import load_depth_estimator
            from fusionlab.presets import require_input

            self.depth = DepthDrivenLoss(
                load_depth_estimator(require_input(cfg, "depth_ir", "ldnf with depth_loss")),
                load_depth_estimator(require_input(cfg, "depth_vis", "ldnf with depth_loss")),
                lam=self.lc.silog_lambda, scale=self.lc.depth_scale)

    def forward(self, fused, batch, text):
        ir, vi = batch["ir"], batch["vi"]
        parts = {"mci": mci_loss(fused, ir, vi), "mcg": mcg_loss(fused, ir, vi)}
        total = self.lc.mci * parts["mci"] + self.lc.mcg * parts["mcg"]
        if self.depth is not None:
            parts["depth"] = self.depth(fused, ir, vi, batch.get("depth"))["total"]
            total = total + self.lc.depth * parts["depth"]
        return {"total": total, **parts}
