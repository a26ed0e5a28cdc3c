"""LDFusion's objective (eq. 16): L_total = L_d† + α·L_v, with L_d† = L_d + λΦ (eq. 10) in CLIP
space on the image and on entropy-filtered random patches (`language.py`), and the VGG-19
feature-fidelity loss L_v (eq. 13, `fusionlab.losses.perceptual`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fusionlab.config import Section
from fusionlab.presets.objective import Objective


class LDFusionLoss(Section):
    lam: float = 0.5                        # λ of Φ (eq. 10; sec. 4.3 "Analysis of λ")
    alpha: float = 1.0                      # α of L_v (eq. 16)
    n_patches: int = Field(64, ge=0)        # random patches per image (paper: "a number"; released trainer: 64)
    patch_px: tuple[int, int] = (112, 180)  # patch sizes for 224 px crops; scaled for smaller images
    min_entropy: float = 6.0                # σ of the patch filter (bits, eq. 17)
    patch_rule: Literal["both", "any"] = "both"  # keep a patch when both sources (released code) / either reach σ
    affine_degrees: float = 5.0             # random affine rotation (paper: "random affine"; released: ±5°)
    vgg_pretrained: str | None = "IMAGENET1K_V1"  # torchvision weights name, a local file, or null (random)
    vgg_layers: tuple[int, ...] = (3, 5, 10)     # conv layers k of eq. 13


class LDFusionObjective(Objective):
    loss_class = LDFusionLoss

    def __init__(self, cfg, net):
        super().__init__(cfg, net)
        from fusionlab.losses.perceptual import FeatureFidelityLoss

        lc = self.lc
        self.vgg = FeatureFidelityLoss(lc.vgg_pretrained, tuple(lc.vgg_layers), key="loss.ldfusion.vgg_pretrained")
        self.language = self.clip = None
        if cfg.text_guidance:  # off = the "W/O LDL" row: L_v only
            from safetensors.torch import load_file

            from fusionlab.models.text import ClipEncoder
            from fusionlab.presets import require_input
            from fusionlab.presets.ldfusion.language import LanguageLoss

            self.clip = ClipEncoder.from_config(require_input(cfg, "clip", "ldfusion's language loss"))
            prompts = load_file(require_input(cfg, "prompts", "ldfusion's language loss"))
            self.language = LanguageLoss(
                self.clip.encode_image, prompts, lam=lc.lam, n_patches=lc.n_patches, min_entropy=lc.min_entropy,
                patch_px=tuple(lc.patch_px), affine_degrees=lc.affine_degrees, patch_rule=lc.patch_rule)

    def forward(self, fused, batch, text):
        ir, y = batch["ir"], self.luma(batch["vi"])
        parts = {"fidelity": self.vgg(fused, ir, y)}
        total = self.lc.alpha * parts["fidelity"]
        if self.language is not None:
            lang = self.language(fused, ir, y)
            parts.update({"dir": lang["dir"], "phi": lang["phi"], "language": lang["total"],
                          "patches_kept": lang["patches_kept"]})
            total = total + lang["total"]
        return {"total": total, **parts}
