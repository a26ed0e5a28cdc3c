"""Trained models shipped inside the package, so `fusionlab fuse` works without training first.

Each is a folder `fusionlab/shipped/<name>/` with the fusion model exactly as stage 4 wrote it
(`config.json` + `model.safetensors`) and `manifest.json`: how it was trained (the command, the
commit, the training data and config) and what it scored (test set, convention, metrics).
`fusionlab models` lists them. `fusionlab models ship` (behind `make ship-model`) is the only way
a model gets here: it copies a finished stage-4 run, so every shipped figure comes from
`fusionlab run`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fusionlab.errors import ConfigError, PipelineError

SHIPPED_DIR = Path(__file__).resolve().parent
DEFAULT = "baseline_roadscene"  # what `fusionlab fuse` uses without --checkpoint
MODEL_MANIFEST = "manifest.json"
MAX_BYTES = 1_000_000  # a shipped model stays small: it is in every install


def shipped_models() -> dict[str, dict]:
    """name -> manifest of every shipped model."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(SHIPPED_DIR.glob(f"*/{MODEL_MANIFEST}"))}


def model_dir(name: str = DEFAULT) -> Path:
    """The folder of shipped model `name` (loadable with `load_fusion_model`)."""
    path = SHIPPED_DIR / name
    if not (path / MODEL_MANIFEST).is_file():
        known = ", ".join(shipped_models()) or "none"
        raise ConfigError(f"no shipped model named '{name}' (shipped: {known}; `fusionlab models` lists them)")
    return path


def ship(stage_dir: str | Path, name: str, command: str, into: Path = SHIPPED_DIR) -> Path:
    """Copy the model of a finished stage-4 run (`<run_dir>/<stage>/`) into `into/<name>/`, with
    a manifest drawn from the stage's manifest and its eval/ tables."""
    from fusionlab.artifacts import CONFIG_NAME, WEIGHTS_NAME, atomic_dir, sha256_file
    from fusionlab.pipeline.manifest import read_manifest, verify_outputs

    stage_dir = Path(stage_dir)
    man = read_manifest(stage_dir)
    if man is None or man.get("type") != "fusion":
        raise PipelineError(f"'{stage_dir}' is not a finished stage-4 (fusion) run: no fusion manifest.json there")
    problem = verify_outputs(stage_dir, man)
    if problem:
        raise PipelineError(f"'{stage_dir}': {problem}; rerun the stage before shipping its model")
    weights = stage_dir / "fusion" / WEIGHTS_NAME
    if weights.stat().st_size > MAX_BYTES:
        raise PipelineError(f"'{weights}' is {weights.stat().st_size} bytes; shipped models stay under {MAX_BYTES}")
    summary = json.loads((stage_dir / "eval" / "metrics.json").read_text())
    cfg = man["config"]
    record = {
        "name": name,
        "kind": "fusion",
        "preset": cfg["preset"],
        "model": json.loads((stage_dir / "fusion" / CONFIG_NAME).read_text())["model"],
        "trained_by": {"command": command, "git_sha": man.get("git_sha"), "fusionlab_version": man.get("fusionlab_version"),
                       "stage_key": man["key"], "finished_at": man.get("finished_at"),
                       "wall_time_s": man.get("wall_time_s")},
        "training_data": {k: cfg["data"].get(k) for k in ("root", "format", "split", "crop_size", "batch_size")},
        "training": {"epochs": cfg["trainer"]["max_epochs"], "seed": cfg["seed"], "optim": cfg.get("optim"),
                     "loss": cfg.get("loss", {}).get(cfg["preset"]),
                     "loss_first": man["metrics"].get("train/loss_first"),
                     "loss_last": man["metrics"].get("train/loss_last")},
        "scored_on": {"root": cfg["data"].get("val_root"), "images": summary["images"],
                      "convention": summary["convention"], "metrics": list(cfg["eval"]["metrics"])},
        "metrics": summary["mean"],
        "weights_sha256": sha256_file(weights),
    }
    with atomic_dir(Path(into) / name) as tmp:
        for f in (CONFIG_NAME, WEIGHTS_NAME):  # contents only: installed copies get ordinary modes
            shutil.copyfile(stage_dir / "fusion" / f, tmp / f)
        (tmp / MODEL_MANIFEST).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return Path(into) / name
