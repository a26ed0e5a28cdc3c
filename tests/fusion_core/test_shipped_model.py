"""The shipped default model: small, recorded, and its weights reproduce the RoadScene-test figures
published in docs/results.md (fused by `fusionlab fuse`, scored by `fusionlab eval`)."""

from __future__ import annotations

import csv
import json
import re
import statistics

METRICS = ("EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM")


def _published(repo_dir) -> dict[str, float]:
    """The shipped model's column of the RoadScene table in docs/results.md."""
    text = (repo_dir / "docs" / "results.md").read_text()
    section = text[text.index("## Fusion quality: RoadScene test"):]
    header, _, *rows = [line for line in section.splitlines() if line.startswith("|")][: 2 + len(METRICS)]
    column = [c.strip() for c in header.strip("|").split("|")].index("shipped baseline")
    out = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        out[cells[0]] = float(re.sub(r"[^0-9.]", "", cells[column]))
    return out


def test_shipped_model_is_small_and_says_what_it_was_trained_and_scored_on(cli_inproc):
    from fusionlab.artifacts import sha256_file
    from fusionlab.shipped import DEFAULT, MAX_BYTES, model_dir, shipped_models

    man = shipped_models()[DEFAULT]
    path = model_dir(DEFAULT)
    assert (path / "model.safetensors").stat().st_size < MAX_BYTES
    assert sha256_file(path / "model.safetensors") == man["weights_sha256"]
    assert man["preset"] == "baseline" and man["trained_by"]["command"].startswith("fusionlab run stages/roadscene.yaml")
    assert man["trained_by"]["git_sha"] and man["training_data"]["root"].endswith("roadscene/train")
    assert man["scored_on"]["root"].endswith("roadscene/test") and man["scored_on"]["images"] == 50
    assert set(METRICS) <= set(man["metrics"])
    listing = cli_inproc("models").stdout
    assert f"{DEFAULT} (default)" in listing and "roadscene/train" in listing and "50 pairs, cddfuse" in listing
    assert f"{man['metrics']['EN']:.4f}" in listing and man["trained_by"]["command"] in listing


def test_shipped_weights_reproduce_the_published_roadscene_figures(shared_dir, repo_dir, tmp_path, cli_inproc):
    from fusionlab.shipped import DEFAULT, shipped_models

    test = shared_dir / "datasets" / "roadscene" / "test"
    out = tmp_path / "fused"
    cli_inproc("fuse", "--ir", str(test / "ir"), "--vi", str(test / "vi"), "--out", str(out))
    assert len(list(out.glob("*.png"))) == 50
    cli_inproc("eval", "--ir", str(test / "ir"), "--vi", str(test / "vi"), "--fused", f"ours={out}",
               "--metrics", *METRICS, "--convention", "cddfuse", "--strict", "--out", str(tmp_path / "rs"))
    ours = {k: v["mean"] for k, v in
            json.loads((tmp_path / "rs_summary.json").read_text())["methods"]["ours"]["metrics"].items()}

    published, recorded = _published(repo_dir), shipped_models()[DEFAULT]["metrics"]
    for name in METRICS:
        assert abs(ours[name] - published[name]) <= 1e-4 * max(1.0, abs(published[name])), (name, ours[name])
        assert abs(ours[name] - recorded[name]) <= 1e-4 * max(1.0, abs(recorded[name])), (name, ours[name])

    with open(shared_dir / "reference" / "roadscene-test" / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["method"] == "seafusion"]
    seafusion = {n: statistics.fmean(float(r[n]) for r in rows) for n in METRICS}
    wins = [n for n in METRICS if ours[n] > seafusion[n]]
    assert len(wins) >= 6, f"the shipped model beats SeAFusion on {wins} only"
