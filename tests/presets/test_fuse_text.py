"""`fuse` with a preset that needs text at inference: captions file + the CLIP the checkpoint names."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture
def text_ckpt(tmp_path, upstream):
    from fusionlab.models.fusion import build_fusion_model, save_fusion_model

    torch.manual_seed(0)
    net = build_fusion_model({"name": "ldnf", "features": "conv", "width": 8, "n_blocks": 2, "film_hidden": 16,
                              "text_dim": 32})
    return save_fusion_model(tmp_path / "fusion", net, {"clip": upstream["clip"]})


def _captions(path, ids):
    path.write_text("".join(json.dumps({"id": i, "caption": f"a person near {i}"}) + "\n" for i in ids))
    return path


def test_fuse_with_captions_writes_every_pair(text_ckpt, tiny_dataset, tmp_path):
    from fusionlab.inference import fuse_folders

    ids = sorted(p.stem for p in (tiny_dataset / "ir").iterdir())
    out = tmp_path / "out"
    report = fuse_folders(text_ckpt, tiny_dataset / "ir", tiny_dataset / "vi", out,
                          captions=_captions(tmp_path / "c.jsonl", ids), progress=False)
    assert report.written == ids and sorted(p.stem for p in out.iterdir()) == ids


def test_a_missing_caption_fails_before_anything_is_written(text_ckpt, tiny_dataset, tmp_path):
    from fusionlab.errors import ConfigError, DataError
    from fusionlab.inference import fuse_folders

    ids = sorted(p.stem for p in (tiny_dataset / "ir").iterdir())
    out = tmp_path / "out"
    with pytest.raises(DataError, match=f"no caption for 1 of the {len(ids)} pairs"):
        fuse_folders(text_ckpt, tiny_dataset / "ir", tiny_dataset / "vi", out,
                     captions=_captions(tmp_path / "c.jsonl", ids[:-1]), progress=False)
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(ConfigError, match="needs text at inference"):
        fuse_folders(text_ckpt, tiny_dataset / "ir", tiny_dataset / "vi", out, progress=False)
