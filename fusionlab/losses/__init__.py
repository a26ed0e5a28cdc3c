"""Fusion losses. Basics here (used by `baseline` and reused by the presets):

- `intensity.max_intensity_loss`: L1 to the pixel-wise max of the sources (keeps hot targets).
- `gradient.max_gradient_loss`: L1 between Sobel magnitudes of the fused image and the
  stronger source edge (keeps texture from whichever source has it).
- `ssim.dual_ssim_loss`: 1 - SSIM against both sources (keeps structure).
- `content.ContentLoss`: their weighted sum, the `baseline` objective.

Each takes single-channel tensors [B,1,H,W] in [0,1] (use `FusionNet.luma` for VIS RGB).
Also shared: `silog` (stage 1 and ldnf), `codebook` (g(z)), `perceptual` (VGG-19 features). The
losses one paper adds live with its preset, in `fusionlab/presets/<name>/objective.py`.
"""

from fusionlab.losses.content import ContentLoss
from fusionlab.losses.gradient import max_gradient_loss, sobel_magnitude
from fusionlab.losses.intensity import max_intensity_loss
from fusionlab.losses.ssim import dual_ssim_loss

__all__ = ["ContentLoss", "dual_ssim_loss", "max_gradient_loss", "max_intensity_loss", "sobel_magnitude"]
