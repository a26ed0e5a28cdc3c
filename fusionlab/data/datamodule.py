"""The Lightning DataModule every stage uses: split, augment, batch.

Train: random square crops and left-right flips (boxes and depth move with the pixels).
Validation / eval: whole images; when their sizes differ, batch size drops to 1 by itself.
The train/val split is drawn from `seed`, unless `val_root` names an explicit eval folder.
"""

from __future__ import annotations

import functools
import logging

import lightning as L
import torch

from fusionlab.data.collate import collate_samples
from fusionlab.data.config import DataConfig
from fusionlab.data.datasets import PairDataset, open_dataset
from fusionlab.data.sample import Sample
from fusionlab.data.transforms import hflip, random_crop
from fusionlab.errors import DataError

log = logging.getLogger("fusionlab.data")


class Augmented(torch.utils.data.Dataset):
    """Random crop + flip on top of a PairDataset. Randomness comes from torch's RNG, which the
    DataLoader seeds per worker from its generator, so runs repeat exactly for a given seed."""

    def __init__(self, base: PairDataset, crop_size: int | None, flip: bool):
        self.base, self.crop_size, self.flip = base, crop_size, flip

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Sample:
        sample = self.base[index]
        if self.crop_size is not None:
            sample = random_crop(sample, self.crop_size)
        if self.flip and bool(torch.rand(()) < 0.5):
            sample = hflip(sample)
        return sample


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic shuffled split; at least one sample each side when n >= 2 and val_fraction > 0."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return sorted(order[n_val:]), sorted(order[:n_val])


class FusionDataModule(L.LightningDataModule):
    """DataModule over any supported layout, configured by a `DataConfig`."""

    def __init__(self, cfg: DataConfig):
        super().__init__()
        self.cfg = cfg
        self.train_set: PairDataset | None = None
        self.val_set: PairDataset | None = None

    # ------------------------------------------------------------------ datasets
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        cfg = self.cfg
        full = self.open_split(cfg.root, cfg.split)
        if cfg.val_root is not None:
            self.train_set = full
            self.val_set = self.open_split(cfg.val_root, cfg.val_split)
            if self.val_set.classes != self.train_set.classes and self.val_set.has_boxes:
                raise DataError(
                    f"val_root '{cfg.val_root}' has classes {self.val_set.classes} but root '{cfg.root}' has "
                    f"{self.train_set.classes}; set data.classes to one list for both"
                )
        else:
            train_idx, val_idx = split_indices(len(full), cfg.val_fraction, cfg.seed)
            self.train_set, self.val_set = full.select(train_idx), full.select(val_idx)
        if not len(self.train_set):
            raise DataError(f"no training pairs left under '{cfg.root}' (val_fraction {cfg.val_fraction}); lower it")

    def open_split(self, root: str, split: str | None) -> PairDataset:
        """One folder (and split) as this config reads it: format, size policy, classes, max_samples."""
        cfg = self.cfg
        ds = open_dataset(root, cfg.format, split, cfg.on_size_mismatch, classes=cfg.classes)
        if cfg.max_samples is not None and len(ds) > cfg.max_samples:
            ds = ds.select(range(cfg.max_samples))
        return ds

    @property
    def classes(self) -> list[str]:
        self.setup()
        return self.train_set.classes

    # ------------------------------------------------------------------ loaders
    def _loader(self, dataset, *, batch_size: int, shuffle: bool, seed_offset: int = 0) -> torch.utils.data.DataLoader:
        from lightning.fabric.utilities.seed import pl_worker_init_function

        rank = self.trainer.global_rank if self.trainer is not None else 0
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.cfg.num_workers,
            collate_fn=collate_samples,
            generator=torch.Generator().manual_seed(self.cfg.seed + seed_offset),
            worker_init_fn=functools.partial(pl_worker_init_function, rank=rank) if self.cfg.num_workers else None,
            persistent_workers=self.cfg.num_workers > 0,
        )

    def _batch_size(self, dataset: PairDataset, cropped: bool) -> int:
        if cropped or dataset.uniform_size:
            return self.cfg.batch_size
        if self.cfg.batch_size > 1:
            log.info("%s: images differ in size, whole-image batches use batch_size 1", dataset.report.root)
        return 1

    def train_dataloader(self):
        self.setup()
        ds = Augmented(self.train_set, self.cfg.crop_size, self.cfg.flip)
        bs = self._batch_size(self.train_set, self.cfg.crop_size is not None)
        return self._loader(ds, batch_size=min(bs, len(ds)), shuffle=True)

    def require_eval_split(self) -> None:
        """Fail before training, not after it, when a stage will need the eval split and it is empty."""
        self.setup()
        if not len(self.val_set):
            raise DataError(
                f"the validation split of '{self.cfg.root}' is empty; raise data.val_fraction or set data.val_root"
            )

    def eval_dataloader(self):
        """Whole images of the validation/eval split, in a fixed order."""
        self.require_eval_split()
        return self._loader(
            self.val_set, batch_size=self._batch_size(self.val_set, False), shuffle=False, seed_offset=1
        )

    def val_dataloader(self):
        return self.eval_dataloader()

    def test_dataloader(self):
        return self.eval_dataloader()

    def predict_dataloader(self):
        return self.eval_dataloader()
