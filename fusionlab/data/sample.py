"""The one record every stage receives: an aligned IR/VIS pair plus optional depth, boxes and caption."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Sample:
    """One aligned pair. Tensors are float32 in [0, 1] except depth (metres) and boxes (YOLO)."""

    id: str  # file stem, unique in the dataset
    ir: torch.Tensor  # [1,H,W]
    vi: torch.Tensor  # [3,H,W] RGB; a gray visible image is replicated (meta["vi_gray"] = True)
    depth: torch.Tensor | None = None  # [1,H,W] metres, 0 = invalid / no measurement
    boxes: torch.Tensor | None = None  # [N,5] (class, cx, cy, w, h), normalised to [0,1]
    caption: str | None = None
    meta: dict = field(default_factory=dict)
    instances: torch.Tensor | None = None  # [1,H,W] int32 instance map: k+1 = label row k, 0 = none (scoring only)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the pair."""
        return int(self.ir.shape[-2]), int(self.ir.shape[-1])
