"""A picture of a dataset: one row per sample, columns IR | VIS | depth | boxes.

Used by `fusionlab data preview` and for the figure in docs/datasets.md. Depth is shown with
the turbo colour map on inverse depth (near = warm), with invalid pixels black.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

CLASS_COLOURS = [(255, 80, 80), (80, 200, 255), (255, 200, 40), (120, 255, 120), (220, 120, 255), (255, 255, 255)]


def _depth_tile(depth: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
    import kornia

    if depth is None:
        return torch.full((3, *size), 0.25)
    valid = depth > 0
    inv = torch.where(valid, 1.0 / depth.clamp(min=1e-3), torch.zeros_like(depth))
    hi = float(inv[valid].max()) if valid.any() else 1.0
    rgb = kornia.color.apply_colormap(inv / hi, kornia.color.ColorMap("turbo"))[0]
    return rgb * valid


def _boxes_tile(vi: torch.Tensor, boxes: torch.Tensor | None) -> torch.Tensor:
    from torchvision.utils import draw_bounding_boxes

    img = (vi.clamp(0, 1) * 255).to(torch.uint8)
    if boxes is None or not len(boxes):
        return vi
    H, W = vi.shape[-2:]
    cls, cx, cy, w, h = boxes.unbind(1)
    xyxy = torch.stack([(cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H], 1)
    colours = [CLASS_COLOURS[int(c) % len(CLASS_COLOURS)] for c in cls]
    return draw_bounding_boxes(img, xyxy, colors=colours, width=1).float() / 255


def preview_grid(dataset, n: int = 4, tile_height: int = 128) -> torch.Tensor:
    """[3, rows*h, 4*w] image of the first `n` samples of a PairDataset, each tile resized to `tile_height`."""
    rows = []
    width = None
    for i in range(min(n, len(dataset))):
        s = dataset[i]
        tiles = [
            s.ir.expand(3, -1, -1),
            s.vi,
            _depth_tile(s.depth, s.size),
            _boxes_tile(s.vi, s.boxes),
        ]
        if width is None:
            width = round(s.size[1] * tile_height / s.size[0])
        tiles = [
            F.interpolate(t[None].float(), size=(tile_height, width), mode="bilinear", align_corners=False)[0]
            for t in tiles
        ]
        rows.append(torch.cat(tiles, 2))
    return torch.cat(rows, 1).clamp(0, 1)


def write_preview(
    root,
    out,
    n: int = 4,
    format: str = "auto",
    split: str | None = None,
    on_size_mismatch: str = "error",
    tile_height: int = 128,
) -> Path:
    """Open the dataset at `root` and write its preview grid as a PNG to `out`."""
    from fusionlab.data.datasets import open_dataset
    from fusionlab.data.io import write_image

    dataset = open_dataset(root, format, split, on_size_mismatch)
    return write_image(out, preview_grid(dataset, n, tile_height))
