"""Turn whatever a user hands us into the 8-bit gray images the fusion metrics are defined on.

The published evaluator reads every image with OpenCV as 8-bit BGR, casts it to float32, converts
it with `cv2.cvtColor(..., COLOR_BGR2GRAY)` and rounds. OpenCV's float32 kernel evaluates
`fma(R, 0.299, fma(B, 0.114, G * 0.587))` in float32, and near .5 ties the order decides the
rounding, so we reproduce exactly that order (verified against OpenCV on all 2^24 RGB triples).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fusionlab.errors import DataError

_CR, _CG, _CB = (torch.tensor(c, dtype=torch.float32).item() for c in (0.299, 0.587, 0.114))


def _fma32(a: torch.Tensor, coeff: float, acc: torch.Tensor) -> torch.Tensor:
    """float32 fused multiply-add: the product of two float32 is exact in float64."""
    return (a.double() * coeff + acc.double()).float()


def rgb_to_gray255(rgb: torch.Tensor) -> torch.Tensor:
    """[..., 3, H, W] RGB with integer values 0..255 -> [..., H, W] rounded BT.601 gray (float64)."""
    r, g, b = (rgb[..., i, :, :].float() for i in range(3))
    y = _fma32(r, _CR, _fma32(b, _CB, g * _CG))
    return torch.round(y).double()


def to_gray255(x, value_range: float | None = None) -> torch.Tensor:
    """Any image or batch -> float64 tensor [B, H, W] of rounded 8-bit gray values.

    Accepts numpy arrays or tensors shaped [H,W], [H,W,3] (numpy, RGB), [C,H,W] or [B,C,H,W]
    (C = 1 or 3, RGB). Integer dtypes are 0..255; floats are 0..`value_range` (default 1.0, the
    fusionlab tensor convention) and are quantised to 8 bits first, as saving a PNG would.
    """
    if isinstance(x, np.ndarray):
        if x.ndim == 3 and x.shape[-1] in (3, 4) and x.shape[0] not in (1, 3):
            x = np.ascontiguousarray(x[..., :3].transpose(2, 0, 1))
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise DataError(f"expected an image array or tensor, got {type(x).__name__}")
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DataError(
            f"image of shape {tuple(x.shape)} is not gray or RGB; expected [H,W], [C,H,W] or [B,C,H,W] with C = 1 or 3"
        )
    if x.dtype.is_floating_point:
        rng = 1.0 if value_range is None else float(value_range)
        if value_range is None and x.numel() and float(x.max()) > 1.5:
            raise DataError(
                f"float image with values up to {float(x.max()):.1f} looks like 0..255; "
                "pass value_range=255 (float images default to 0..1)"
            )
        x = torch.round(x.double().clamp(0, rng) * (255.0 / rng))
    elif x.dtype == torch.uint8 or value_range in (None, 255, 255.0):
        x = x.double()
    else:  # e.g. 16-bit data with value_range=65535
        x = torch.round(x.double().clamp(0, float(value_range)) * (255.0 / float(value_range)))
    if x.shape[1] == 3:
        return rgb_to_gray255(x)
    return x[:, 0]


def read_gray255(path: str | Path) -> np.ndarray:
    """Read an image file exactly as the published evaluator does: float32 gray 0..255, rounded."""
    import cv2

    path = Path(path)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"cannot read image '{path}': not an image file OpenCV understands")
    return np.round(cv2.cvtColor(bgr.astype(np.float32), cv2.COLOR_BGR2GRAY))
