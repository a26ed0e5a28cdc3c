"""Typed data settings shared by every stage config (`data:` section)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fusionlab.config import Section, operational


class DataConfig(Section):
    """Where the pairs are and how they are split, cropped and batched."""

    root: str  # dataset folder (any supported layout)
    format: Literal["auto", "generic", "llvip", "m3fd", "kaist"] = "auto"
    split: str | None = None  # sub-folder such as "train"/"test" when the layout has one
    on_size_mismatch: Literal["error", "resize", "crop"] = "error"
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0)  # ignored when val_root is set
    val_root: str | None = None  # explicit validation/eval folder (e.g. roadscene test/)
    val_split: str | None = None  # sub-folder of val_root, when its layout has one
    crop_size: int | None = Field(None, gt=0)  # random square training crops; None = whole image
    flip: bool = True
    batch_size: int = Field(8, gt=0)
    num_workers: int = operational(0, ge=0)  # loader processes: speed only, not in the stage key
    seed: int = 0
    max_samples: int | None = Field(None, gt=0)
    classes: list[str] | None = None  # detection class names; None = from the dataset
