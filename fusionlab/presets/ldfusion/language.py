"""LDFusion's language-driven loss in CLIP space (ldfusion paper, eq. 3, 7, 10, 17).

Three prompt embeddings (`ir`, `vis`, `fused`: "an infrared image", "a visible gray image",
"a clear image with detailed background and salient objects") define the direction in which the
fusion should move the sources. The CLIP image embeddings of sources and fusion must move the
same way (L_d, eq. 3), regularised by Φ (eq. 7, as printed: |1 - cos| to each source; the prose
says minimising it keeps the fusion away from the sources, which the printed formula, and the
authors' code, do not do). The loss is applied to the
whole image and to random patches with random affine warps; patches whose sources carry little
information (entropy < σ, eq. 17) are dropped, because there CLIP "imagines" text-like artifacts.
The paper leaves open whether "little information" means in both sources or in either; the default
`rule: both` keeps a patch only when both sources are informative, as the authors' trainer does.
CLIP runs in training only: the fusion network itself never sees it.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

REFERENCE_CROP = 224  # the paper's training crop, on which its 112-180 px patch sizes are defined


def direction_loss(img_f, img_ir, img_vs, txt_f, txt_ir, txt_vs) -> torch.Tensor:
    """Eq. 3: L_d = 1 - ½(cos(ΔṼ_vs, ΔV_vs) + cos(ΔṼ_ir, ΔV_ir)), ΔṼ = Ṽ_f - Ṽ_src, ΔV = V_f - V_src.

    Image embeddings are [N,D]; text embeddings [D] (or [N,D]). Returns [N].
    """
    cos_vs = F.cosine_similarity(img_f - img_vs, (txt_f - txt_vs).expand_as(img_f), dim=-1)
    cos_ir = F.cosine_similarity(img_f - img_ir, (txt_f - txt_ir).expand_as(img_f), dim=-1)
    return 1.0 - 0.5 * (cos_vs + cos_ir)


def direction_regulariser(img_f, img_ir, img_vs) -> torch.Tensor:
    """Eq. 7 as printed: Φ = |1 - cos(Ṽ_f, Ṽ_vs)| + |1 - cos(Ṽ_f, Ṽ_ir)|. Returns [N]."""
    return (1 - F.cosine_similarity(img_f, img_vs, dim=-1)).abs() + (1 - F.cosine_similarity(img_f, img_ir, dim=-1)).abs()


def image_entropy(x: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Eq. 17: H(X) = -Σ P(x_i) log2 P(x_i) over 8-bit intensity levels, per image of [N,C,H,W] in [0,1]
    (channels pooled). Returns [N] in bits (at most 8)."""
    levels = (x.detach().clamp(0, 1) * (bins - 1)).round().long().flatten(1)
    counts = torch.zeros(levels.shape[0], bins, device=x.device).scatter_add_(1, levels, torch.ones_like(levels, dtype=torch.float))
    p = counts / counts.sum(1, keepdim=True)
    return -(p * torch.log2(p.clamp_min(1e-12))).sum(1)


def informative(ir_patches: torch.Tensor, vi_patches: torch.Tensor, sigma: float = 6.0, rule: str = "both") -> torch.Tensor:
    """Patch filter (sec. 3.4.3): keep a patch when both sources ("both", as the authors' released
    trainer does) or at least one ("any") reach entropy σ. Returns bool [N]."""
    ent_ir, ent_vi = image_entropy(ir_patches), image_entropy(vi_patches)
    if rule == "both":
        return torch.minimum(ent_ir, ent_vi) >= sigma
    if rule == "any":
        return torch.maximum(ent_ir, ent_vi) >= sigma
    raise ValueError(f"patch filter rule must be 'both' or 'any', got {rule!r}")


def patch_size_range(height: int, width: int, low: int = 112, high: int = 180) -> tuple[int, int]:
    """The paper's 112-180 px patch sizes (for 224 px crops), scaled down for smaller images."""
    side = min(height, width)
    scale = min(1.0, side / REFERENCE_CROP)
    hi = max(2, min(side, round(high * scale)))
    lo = max(2, min(hi, round(low * scale)))
    return lo, hi


def _three(x: torch.Tensor) -> torch.Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class LanguageLoss(nn.Module):
    """L_d† = L_d + λΦ (eq. 10) on the whole image plus the mean over kept random patches.

    `encode_image([N,3,H,W] in [0,1]) -> [N,D]` is the CLIP image encoder (differentiable);
    `prompts` holds the text embeddings `ir`, `vis`, `fused` ([D] each).
    """

    def __init__(self, encode_image: Callable[[torch.Tensor], torch.Tensor], prompts: dict[str, torch.Tensor],
                 lam: float = 0.5, n_patches: int = 4, min_entropy: float = 6.0, patch_px: tuple[int, int] = (112, 180),
                 affine_degrees: float = 5.0, patch_rule: str = "both"):
        super().__init__()
        import kornia.augmentation as K

        self.encode_image = encode_image
        for name in ("ir", "vis", "fused"):
            if name not in prompts:
                raise KeyError(f"prompt embeddings need '{name}' (have {sorted(prompts)})")
            self.register_buffer(f"txt_{name}", prompts[name].detach().float().flatten(), persistent=False)
        self.lam, self.n_patches, self.min_entropy, self.patch_px = lam, n_patches, min_entropy, patch_px
        self.patch_rule = patch_rule
        self.affine = K.RandomAffine(degrees=affine_degrees, translate=(0.05, 0.05), scale=(0.9, 1.1), shear=5.0,
                                     padding_mode="reflection", p=1.0)

    def _terms(self, fused, ir, vi) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            img_ir = self.encode_image(_three(ir)).float()
            img_vs = self.encode_image(_three(vi)).float()
        img_f = self.encode_image(_three(fused)).float()
        d = direction_loss(img_f, img_ir, img_vs, self.txt_fused, self.txt_ir, self.txt_vis)
        return d, direction_regulariser(img_f, img_ir, img_vs)

    def patches(self, fused, ir, vi) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`n_patches` random square patches per image (same place and warp for all three), resized
        to one size, with low-entropy ones removed."""
        b, _, h, w = fused.shape
        lo, hi = patch_size_range(h, w, *self.patch_px)
        crops = []
        for i in range(b):
            for _ in range(self.n_patches):
                s = int(torch.randint(lo, hi + 1, ()))
                y, x = int(torch.randint(0, h - s + 1, ())), int(torch.randint(0, w - s + 1, ()))
                stack = torch.cat([_three(fused[i:i + 1]), _three(ir[i:i + 1]), _three(vi[i:i + 1])], 1)[..., y:y + s, x:x + s]
                crops.append(F.interpolate(stack, size=(hi, hi), mode="bilinear", align_corners=False))
        stack = torch.cat(crops)
        keep = informative(stack[:, 3:6], stack[:, 6:9], self.min_entropy, self.patch_rule)
        stack = self.affine(stack[keep]) if keep.any() else stack[keep]
        return stack[:, 0:3], stack[:, 3:6], stack[:, 6:9]

    def forward(self, fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> dict[str, torch.Tensor]:
        d, phi = self._terms(fused, ir, vi)
        out = {"dir": d.mean(), "phi": phi.mean(), "patches_kept": torch.tensor(0.0, device=fused.device)}
        total = (d + self.lam * phi).mean()
        if self.n_patches > 0:
            pf, pi, pv = self.patches(fused, ir, vi)
            out["patches_kept"] = torch.tensor(float(pf.shape[0]), device=fused.device)
            if pf.shape[0]:
                pd, pphi = self._terms(pf, pi, pv)
                total = total + (pd + self.lam * pphi).mean()
        out["total"] = total
        return out
