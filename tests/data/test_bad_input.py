"""Every kind of bad input yields a report or error that names the offending file."""

import numpy as np
import pytest
import torch

from fusionlab.data.datasets import check_dataset, open_dataset
from fusionlab.errors import DataError


def test_unpaired_files_are_skipped_and_listed(generic, h):
    ir, vi = h.scene(9)
    h.write(generic / "ir" / "lonely_ir.png", ir)
    h.write(generic / "vi" / "lonely_vi.png", vi)
    ds = open_dataset(generic)
    assert "lonely_ir" not in ds.ids and len(ds) == 4
    paths = sorted(p.path for p in ds.report.of_kind("unpaired"))
    assert paths[0].endswith("ir/lonely_ir.png") and paths[1].endswith("vi/lonely_vi.png")
    assert "no visible partner" in str(ds.report.of_kind("unpaired")[0])


def test_size_mismatch_is_an_error_naming_the_file(generic, h):
    h.write(generic / "ir" / "p2.png", np.zeros((20, 30), np.uint8))
    with pytest.raises(DataError, match=r"p2\.png.*30x20.*on_size_mismatch"):
        open_dataset(generic)


@pytest.mark.parametrize("policy", ["resize", "crop"])
def test_size_mismatch_opt_in(generic, h, policy):
    h.write(generic / "ir" / "p1.png", np.full((20, 30), 200, np.uint8))
    ds = open_dataset(generic, on_size_mismatch=policy)
    s = ds[1]
    expected = (24, 32) if policy == "resize" else (20, 30)
    assert s.ir.shape[-2:] == s.vi.shape[-2:] == s.depth.shape[-2:] == expected
    assert ds.image_size(1) == expected
    assert ds.report.of_kind("size_mismatch")[0].path.endswith("p1.png")
    if policy == "crop":  # the box moves with the 1-pixel crop offset of the 24x32 visible image
        assert torch.allclose(s.boxes[0, 1:], torch.tensor([9 / 30, 6 / 20, 8 / 30, 8 / 20]), atol=1e-6)


def test_corrupt_files_are_skipped_and_listed(generic):
    (generic / "vi" / "p3.png").write_bytes(b"\x89PNG garbage")
    ds = open_dataset(generic)
    assert ds.ids == ["p0", "p1", "p2"]
    (problem,) = ds.report.of_kind("corrupt")
    assert problem.path.endswith("vi/p3.png") and "p3" in problem.message


def test_corrupt_file_is_reported_after_ultralytics_patched_pillow(generic, tmp_path):
    """Stage 5 imports ultralytics, which wraps PIL's Image.open, before it opens its dataset."""
    pytest.importorskip("ultralytics")
    from fusionlab.models.detector import prepare_ultralytics

    prepare_ultralytics(tmp_path / "run")
    import ultralytics  # noqa: F401  (installs the Image.open patch)

    (generic / "vi" / "p3.png").write_bytes(b"\x89PNG garbage")
    ds = open_dataset(generic)
    assert ds.ids == ["p0", "p1", "p2"] and ds.report.of_kind("corrupt")[0].path.endswith("vi/p3.png")


def test_truncated_file_found_by_deep_check(generic):
    data = (generic / "ir" / "p0.png").read_bytes()
    (generic / "ir" / "p0.png").write_bytes(data[: len(data) // 2])
    report = check_dataset(generic)
    assert report.pairs == 3 and report.of_kind("corrupt")[0].path.endswith("ir/p0.png")


def test_empty_dataset_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty.*is empty"):
        open_dataset(tmp_path / "empty")


def test_empty_modality_folder(generic):
    for f in (generic / "vi").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"/vi' contains no images"):
        open_dataset(generic)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="nowhere.*does not exist"):
        open_dataset(tmp_path / "nowhere")


def test_wrong_folder_names_suggest_the_layout(tmp_path, h):
    ir, vi = h.scene(0)
    h.write(tmp_path / "thermal" / "a.png", ir)
    h.write(tmp_path / "RGB" / "a.png", vi)
    with pytest.raises(DataError, match=r"found RGB/, thermal/.*rename thermal/ -> ir/ and RGB/ -> vi/"):
        open_dataset(tmp_path)


def test_split_folders_suggest_a_split(tmp_path, h):
    h.make_generic(tmp_path / "train", n=2)
    h.make_generic(tmp_path / "test", n=1)
    with pytest.raises(DataError, match=r"holds splits test, train.*data.split"):
        open_dataset(tmp_path)
    assert len(open_dataset(tmp_path, split="test")) == 1
    with pytest.raises(DataError, match="split 'val' not found"):
        open_dataset(tmp_path, split="val")


def test_bad_label_file_skips_its_pair(generic):
    (generic / "labels" / "p2.txt").write_text("0 0.5 0.5 0.2\n")
    ds = open_dataset(generic)
    assert "p2" not in ds.ids
    (problem,) = ds.report.of_kind("labels")
    assert problem.path.endswith("labels/p2.txt") and "line 1" in problem.message


def test_bad_caption_line_is_listed(generic):
    with open(generic / "captions.jsonl", "a") as fh:
        fh.write("{not json\n")
    ds = open_dataset(generic)
    assert len(ds) == 4 and ds.report.of_kind("captions")[0].path.endswith("captions.jsonl")


def test_all_pairs_bad_is_one_error_listing_them(generic):
    for f in (generic / "ir").iterdir():
        f.write_bytes(b"junk")
    with pytest.raises(DataError, match=r"no usable pairs(.|\n)*ir/p0.png"):
        open_dataset(generic)


def test_data_check_cli_prints_problems_and_summary(generic, h, run):
    ir, _ = h.scene(5)
    h.write(generic / "ir" / "extra.png", ir)
    h.write(generic / "ir" / "p0.png", np.zeros((10, 10), np.uint8))
    code, out, err = run("data", "check", str(generic))
    assert code == 1, err
    assert "pairs    4" in out and "extra.png" in out and "p0.png" in out and "size_mismatch" in out
    assert "8-bit" in out and "gray (4)" in out and "RGB (4)" in out and "mean" in out
    code, out, err = run("data", "check", str(generic / "nope"))
    assert code == 2 and "nope" in err and "does not exist" in err
