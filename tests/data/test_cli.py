"""`fusionlab data synth | preview` as a user runs them."""

import pytest

from fusionlab.data.io import read_image


def test_synth_then_preview(tmp_path, run):
    out = tmp_path / "synth"
    code, stdout, _ = run("data", "synth", "--out", str(out), "--n", "3", "--seed", "1", "--size", "64x48")
    assert code == 0 and "wrote 3 scenes" in stdout
    assert sorted(p.name for p in (out / "ir").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert (out / "classes.txt").read_text().split() == ["person", "car", "animal", "sign"]
    grid = tmp_path / "grid.png"
    assert run("data", "preview", str(out), "--out", str(grid), "--n", "2", "--tile-height", "48")[0] == 0
    arr, info = read_image(grid)
    assert (info.width, info.height, info.channels) == (4 * 64, 2 * 48, 3)
    with pytest.raises(SystemExit):  # argparse refuses a malformed size
        run("data", "synth", "--out", str(out), "--size", "64by48")


def test_cli_in_a_child_process(tmp_path, cli):
    """The installed entry point, once, as a user runs it."""
    proc = cli("data", "synth", "--out", str(tmp_path / "s"), "--n", "1", "--size", "64x48")
    assert "wrote 1 scenes" in proc.stdout and (tmp_path / "s" / "vi" / "00000.png").is_file()
