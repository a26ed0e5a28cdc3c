"""DataModule: seeded split, val_root, crops and flips that keep boxes on their objects, collation."""

import pytest
import torch

from fusionlab.data.collate import collate_samples
from fusionlab.data.config import DataConfig
from fusionlab.data.datamodule import FusionDataModule, split_indices
from fusionlab.data.sample import Sample
from fusionlab.data.transforms import crop, hflip, random_crop
from fusionlab.errors import DataError


def _object_sample() -> Sample:
    """A bright 4x6 block at rows 2..5, cols 10..15 of a 12x20 image, with its exact box."""
    ir = torch.zeros(1, 12, 20)
    ir[0, 2:6, 10:16] = 1
    box = torch.tensor([[1.0, 13 / 20, 4 / 12, 6 / 20, 4 / 12]])
    return Sample("x", ir, ir.expand(3, -1, -1).clone(), ir.clone() * 5, box, None, {})


def _box_of_pixels(s: Sample) -> torch.Tensor:
    ys, xs = torch.nonzero(s.ir[0] > 0.5, as_tuple=True)
    H, W = s.size
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return torch.tensor([(x0 + x1) / 2 / W, (y0 + y1) / 2 / H, (x1 - x0) / W, (y1 - y0) / H], dtype=torch.float32)


def test_flip_and_crop_move_boxes_with_the_pixels():
    s = _object_sample()
    f = hflip(s)
    assert torch.allclose(f.boxes[0, 1:], _box_of_pixels(f)) and torch.equal(f.depth, f.ir * 5)
    c = crop(s, 1, 8, 8, 8)  # cuts the block to cols 8..15 -> 10..15 inside
    assert c.ir.shape == (1, 8, 8) and torch.allclose(c.boxes[0, 1:], _box_of_pixels(c))
    gone = crop(s, 7, 0, 5, 5)
    assert gone.boxes.shape == (0, 5)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        r = random_crop(s, 10, g)
        if len(r.boxes):
            assert torch.allclose(r.boxes[0, 1:], _box_of_pixels(r), atol=1e-6)
    padded = random_crop(s, 16, g)  # larger than the 12-pixel height: zero-padded
    assert padded.ir.shape == (1, 16, 16)


def test_collate_optional_fields():
    a, b = _object_sample(), hflip(_object_sample())
    batch = collate_samples([a, b])
    assert batch["ir"].shape == (2, 1, 12, 20) and batch["vi"].shape == (2, 3, 12, 20)
    assert batch["depth"].shape == (2, 1, 12, 20) and batch["id"] == ["x", "x"] and batch["caption"] == [None, None]
    assert batch["boxes"].shape == (2, 6) and batch["boxes"][:, 0].tolist() == [0, 1]
    no_extras = collate_samples([Sample("y", a.ir, a.vi, meta={})])
    assert "depth" not in no_extras and "boxes" not in no_extras
    mixed = collate_samples([a, Sample("z", a.ir, a.vi, None, None)])
    assert "depth" not in mixed and mixed["boxes"].shape == (1, 6)
    with pytest.raises(DataError, match="different sizes"):
        collate_samples([a, crop(a, 0, 0, 8, 8)])


def test_split_is_seeded_and_disjoint():
    tr, va = split_indices(10, 0.2, seed=1)
    assert len(va) == 2 and not set(tr) & set(va) and sorted(tr + va) == list(range(10))
    assert split_indices(10, 0.2, 1) == (tr, va) and split_indices(10, 0.2, 2) != (tr, va)
    assert split_indices(3, 0.01, 0)[1] != []  # at least one validation pair


def test_datamodule_on_synthetic_scenes(synthetic):
    cfg = DataConfig(root=str(synthetic), crop_size=32, batch_size=2, val_fraction=0.34, seed=0)
    dm = FusionDataModule(cfg)
    dm.setup("fit")
    assert len(dm.train_set) == 4 and len(dm.val_set) == 2 and not set(dm.train_set.ids) & set(dm.val_set.ids)
    assert dm.classes == ["person", "car", "animal", "sign"]
    batch = next(iter(dm.train_dataloader()))
    assert (
        batch["ir"].shape == (2, 1, 32, 32)
        and batch["vi"].shape == (2, 3, 32, 32)
        and batch["depth"].shape == (2, 1, 32, 32)
    )
    assert "boxes" in batch and batch["boxes"].shape[1] == 6 and all(c for c in batch["caption"])
    val = next(iter(dm.val_dataloader()))
    assert val["ir"].shape == (2, 1, 48, 64) and val["id"] == sorted(dm.val_set.ids)
    capped = FusionDataModule(DataConfig(root=str(synthetic), max_samples=3))
    capped.setup()
    assert len(capped.train_set) + len(capped.val_set) == 3


def test_val_root_and_mixed_sizes_use_batch_size_one(tmp_path, h):
    h.make_generic(tmp_path / "train", n=3, h=24, w=32)
    h.make_generic(tmp_path / "test", n=1, h=24, w=32)
    h.make_generic(tmp_path / "test2", n=1, h=20, w=30)
    for f in (tmp_path / "test2").rglob("p0.png"):
        f.rename(f.with_name("q0.png"))
    for sub in ("ir", "vi"):
        for f in (tmp_path / "test2" / sub).iterdir():
            f.rename(tmp_path / "test" / sub / f.name)
    dm = FusionDataModule(DataConfig(root=str(tmp_path / "train"), val_root=str(tmp_path / "test"), batch_size=4))
    dm.setup()
    assert len(dm.train_set) == 3 and dm.val_set.ids == ["p0", "q0"]
    loader = dm.eval_dataloader()
    assert loader.batch_size == 1 and [b["ir"].shape[-2:] for b in loader] == [(24, 32), (20, 30)]
    assert dm.train_dataloader().batch_size == 3


def test_worker_seeding_repeats_augmentation(synthetic):
    def first_batch(seed):
        dm = FusionDataModule(
            DataConfig(root=str(synthetic), crop_size=24, batch_size=4, num_workers=1, seed=seed, val_fraction=0.0)
        )
        return next(iter(dm.train_dataloader()))

    a, b, c = first_batch(0), first_batch(0), first_batch(1)
    assert a["id"] == b["id"] and torch.equal(a["ir"], b["ir"]) and torch.equal(a["boxes"], b["boxes"])
    assert a["id"] != c["id"] or not torch.equal(a["ir"], c["ir"])


def test_config_rejects_unknown_keys_and_bad_values():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="crop_sise"):
        DataConfig(root="x", crop_sise=3)
    with pytest.raises(ValidationError, match="on_size_mismatch"):
        DataConfig(root="x", on_size_mismatch="stretch")
