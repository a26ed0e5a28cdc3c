"""Fusion networks (stage 4): the `FusionNet` contract, the preset registry and the helpers
(`fuse_rgb`, padding, save/load) every preset and `fusionlab fuse` share. See README.md here."""

from fusionlab.models.fusion.base import (
    FusionNet,
    build_fusion_model,
    forward_padded,
    fuse_rgb,
    load_fusion_model,
    pad_multiple,
    register_fusion_model,
    registered_fusion_models,
    restore_colour,
    rgb_to_y,
    save_fusion_model,
    unpad,
)

__all__ = [
    "FusionNet",
    "build_fusion_model",
    "forward_padded",
    "fuse_rgb",
    "load_fusion_model",
    "pad_multiple",
    "register_fusion_model",
    "registered_fusion_models",
    "restore_colour",
    "rgb_to_y",
    "save_fusion_model",
    "unpad",
]
