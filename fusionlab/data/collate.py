"""Batches are dicts, so optional fields (depth, boxes, captions) travel only when present."""

from __future__ import annotations

import torch

from fusionlab.data.sample import Sample
from fusionlab.errors import DataError


def collate_samples(samples: list[Sample]) -> dict:
    """Stack Samples into the batch dict every stage reads.

    keys: id, ir [B,1,H,W], vi [B,3,H,W], depth [B,1,H,W] (only if every sample has depth),
    boxes [N,6] (batch_index, class, cx, cy, w, h) (only if the dataset has boxes),
    instances [B,1,H,W] int32 (only if every sample has an instance map), caption, meta.
    """
    sizes = {s.size for s in samples}
    if len(sizes) > 1:
        listed = ", ".join(f"{s.id} {s.size[1]}x{s.size[0]}" for s in samples[:4])
        raise DataError(f"cannot batch images of different sizes ({listed}); set data.crop_size or use batch_size 1")
    batch = {
        "id": [s.id for s in samples],
        "ir": torch.stack([s.ir for s in samples]),
        "vi": torch.stack([s.vi for s in samples]),
        "caption": [s.caption for s in samples],
        "meta": [s.meta for s in samples],
    }
    if all(s.depth is not None for s in samples):
        batch["depth"] = torch.stack([s.depth for s in samples])
    if all(s.instances is not None for s in samples):
        batch["instances"] = torch.stack([s.instances for s in samples])
    if any(s.boxes is not None for s in samples):
        rows = []
        for i, s in enumerate(samples):
            b = s.boxes if s.boxes is not None else torch.zeros((0, 5))
            rows.append(torch.cat([torch.full((len(b), 1), float(i)), b.float()], 1))
        batch["boxes"] = torch.cat(rows, 0)
    return batch
