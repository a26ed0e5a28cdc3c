"""The one caption-file reader shared by the dataset scanner, `fuse --captions` and stage 3."""

import json

import pytest

from fusionlab.data.captions_file import caption_text, read_caption_rows, read_captions
from fusionlab.errors import DataError


def _jsonl(path, *rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_rows_keep_the_per_modality_captions(tmp_path):
    f = _jsonl(tmp_path / "c.jsonl", {"id": "a", "caption": "one"}, "",
               {"id": 7, "caption_ir": "hot man", "caption_vi": "dark street"})
    assert read_caption_rows(f) == {"a": {"caption": "one"}, "7": {"caption_ir": "hot man", "caption_vi": "dark street"}}
    assert read_captions(f) == {"a": "one", "7": "hot man dark street"}


def test_csv_rows(tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("id,caption\na,from csv\nb,\n")
    with pytest.raises(DataError, match=r"c\.csv:3: needs 'id' and 'caption'"):  # header is line 1
        read_captions(f)
    f.write_text("id,caption\na,from csv\n")
    assert read_captions(f) == {"a": "from csv"}


def test_strict_reading_names_the_file_and_line(tmp_path):
    f = _jsonl(tmp_path / "c.jsonl", {"id": "a", "caption": "ok"}, "{oops")
    with pytest.raises(DataError, match=r"c\.jsonl:2: not valid JSON"):
        read_captions(f)
    _jsonl(f, {"id": "a", "caption": "ok"}, {"caption": "no id"})
    with pytest.raises(DataError, match=r"c\.jsonl:2: needs 'id'"):
        read_captions(f)


def test_lenient_reading_reports_bad_lines_and_keeps_the_rest(tmp_path):
    f = _jsonl(tmp_path / "c.jsonl", "{oops", {"id": "b", "caption": "kept"}, ["not", "an", "object"])
    problems = []
    assert read_captions(f, on_bad=problems.append) == {"b": "kept"}
    assert [p.split(": ")[0] for p in problems] == [f"{f}:1", f"{f}:3"]


def test_missing_file_says_what_to_fix(tmp_path):
    with pytest.raises(DataError, match="does not exist; pass it to --captions"):
        read_captions(tmp_path / "none.jsonl", missing_hint="pass it to --captions")


def test_caption_text_prefers_the_joint_caption():
    assert caption_text({"caption": "joint", "caption_ir": "ir"}) == "joint"
    assert caption_text({"caption_vi": "only vis"}) == "only vis"
    assert caption_text({"caption_ir": "a", "caption_vi": "b"}, separator=". ") == "a. b"
