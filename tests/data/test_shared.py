"""Real pairs from ../shared/datasets (RoadScene, MSRS mini); skipped when ../shared is absent."""

import pytest
import torch

from fusionlab.data.config import DataConfig
from fusionlab.data.datamodule import FusionDataModule
from fusionlab.data.datasets import check_dataset, open_dataset


@pytest.fixture
def datasets(shared_dir):
    root = shared_dir / "datasets"
    if not (root / "roadscene").is_dir() or not (root / "msrs-mini").is_dir():
        pytest.skip(f"roadscene/ or msrs-mini/ missing under {root}")
    return root


def test_roadscene_splits_and_varying_sizes(datasets):
    test = open_dataset(datasets / "roadscene", split="test")
    train = open_dataset(datasets / "roadscene" / "train")
    assert len(test) == 50 and len(train) == 171 and test.report.ok and not set(test.ids) & set(train.ids)
    assert len(test.report.sizes) > 1 and not test.uniform_size
    s = test[0]
    assert s.ir.shape[0] == 1 and s.vi.shape[0] == 3 and s.ir.shape[-2:] == s.vi.shape[-2:]
    assert 0 <= float(s.ir.min()) and float(s.vi.max()) <= 1 and s.meta["bit_depth"] == 8


def test_roadscene_datamodule_with_test_as_val_root(datasets):
    cfg = DataConfig(
        root=str(datasets / "roadscene"),
        split="train",
        val_root=str(datasets / "roadscene"),
        val_split="test",
        crop_size=64,
        batch_size=4,
        max_samples=8,
    )
    dm = FusionDataModule(cfg)
    batch = next(iter(dm.train_dataloader()))
    assert batch["ir"].shape == (4, 1, 64, 64) and batch["vi"].shape == (4, 3, 64, 64)
    loader = dm.eval_dataloader()
    assert loader.batch_size == 1 and len(dm.val_set) == 8  # whole images of varying sizes
    first = next(iter(loader))
    assert first["ir"].shape[-2:] == first["vi"].shape[-2:] and first["ir"].shape[-1] > 400


def test_msrs_three_channel_ir_reads_as_gray(datasets):
    ds = open_dataset(datasets / "msrs-mini")
    assert len(ds) == 14 and ds.uniform_size
    report = check_dataset(datasets / "msrs-mini")
    assert report.channels["ir"] == {1: 14} and report.channels["vi"] == {3: 14}
    s = ds[ds.ids.index("00055D")]  # stored as three equal channels
    assert s.ir.shape == (1, 480, 640) and torch.isfinite(s.ir).all()
