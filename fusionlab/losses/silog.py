"""Scale-invariant logarithmic loss (SiLog, Eigen et al. 2014; LDNF eq. 1) for depth training.

With d_i = log y_i - log ŷ_i over the n valid pixels of one image,

    SiLog = mean(d²) - λ · mean(d)²

λ = 1 is eq. 1 of the LDNF paper: it is the variance of d, so multiplying the prediction by any
constant leaves it unchanged (pure scale invariance). A metric-depth net trained with λ = 1 never
learns the absolute scale, so the depth stage defaults to λ = 0.85 (as BTS/AdaBins do), which
keeps most of the scale invariance while still penalising a global scale error.
"""

from __future__ import annotations

import torch


def silog_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    lam: float = 1.0,
    eps: float = 1e-6,
) -> torch.Tensor:
    """SiLog per image (over its valid pixels), averaged over the batch.

    pred, target: [B,1,H,W] (or [B,H,W]) positive depths; mask: same shape, True where the
    ground truth is valid (default: target > 0). Images without a valid pixel are ignored.
    Computed in float32 so it stays accurate under bf16/fp16 autocast.
    """
    pred = pred.float().reshape(pred.shape[0], -1)
    target = target.float().reshape(target.shape[0], -1)
    valid = (target > 0) if mask is None else mask.reshape(mask.shape[0], -1).bool() & (target > 0)
    valid = valid.float()
    d = (torch.log(target.clamp_min(eps)) - torch.log(pred.clamp_min(eps))) * valid
    n = valid.sum(dim=1)
    has = n > 0
    n = n.clamp_min(1.0)
    mean_sq = (d * d).sum(dim=1) / n
    mean = d.sum(dim=1) / n
    per_image = mean_sq - lam * mean * mean
    if not bool(has.any()):
        return pred.sum() * 0.0
    return per_image[has].mean()
