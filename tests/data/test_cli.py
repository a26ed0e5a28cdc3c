"""`fusionlab data synth | preview` as a user runs them."""

from fusionlab.data.io import read_image


def test_synth_then_preview(tmp_path, cli):
    out = tmp_path / "synth"
    proc = cli("data", "synth", "--out", str(out), "--n", "3", "--seed", "1", "--size", "64x48")
    assert "wrote 3 scenes" in proc.stdout
    assert sorted(p.name for p in (out / "ir").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert (out / "classes.txt").read_text().split() == ["person", "car", "animal", "sign"]
    grid = tmp_path / "grid.png"
    cli("data", "preview", str(out), "--out", str(grid), "--n", "2", "--tile-height", "48")
    arr, info = read_image(grid)
    assert (info.width, info.height, info.channels) == (4 * 64, 2 * 48, 3)
    bad = cli("data", "synth", "--out", str(out), "--size", "64by48", check=False)
    assert bad.returncode == 2 and "WxH" in bad.stderr
