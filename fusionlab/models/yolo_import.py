"""Ultralytics `.pt` checkpoints: imported once, by an explicit act of trust, then never unpickled again.

A `.pt` from ultralytics is a pickle, and unpickling runs code. fusionlab refuses to read one at
run time (`refuse_pickle`). `fusionlab weights import yolov8n.pt --trust` reads it once, with
ultralytics' restricted loader (`torch.load(weights_only=True)` plus an allow-list of its model
classes), and writes `<weights cache>/yolov8n/` in the detector folder format: model.safetensors
+ config.json (the ultralytics model dict, classes, thresholds), and `imported.json` (the checkpoint's sha256, for the provenance
record). `detector.pretrained: yolov8n` then finds that folder; every later load is safetensors.
A detector built for other classes takes the tensors whose names and shapes match
(`load_matching`: backbone and neck; the class head starts fresh).
"""

from __future__ import annotations

import time
from pathlib import Path

from fusionlab.errors import WeightsMissingError

IMPORTED = "imported.json"


def refuse_pickle(path: str | Path | None, key: str) -> None:
    """Stop before a `.pt` pickle is read at run time; say how to import it instead."""
    if path is None or not str(path).endswith(".pt"):
        return
    from fusionlab.weights import cache_path

    stem = Path(path).name.removesuffix(".pt")
    raise WeightsMissingError(
        f"{key}: '{path}' is an ultralytics .pt checkpoint, a pickle; fusionlab does not unpickle files at run "
        f"time. If it comes from a source you trust (e.g. the official ultralytics release), import it once: "
        f"`fusionlab weights import {path} --trust` (it writes {cache_path(stem)} as safetensors), then set "
        f"`{key}: {stem}`.")


def is_imported(folder: str | Path) -> bool:
    return (Path(folder) / IMPORTED).is_file()


def import_checkpoint(pt: str | Path, *, trust: bool, out: str | Path | None = None) -> Path:
    """Convert a trusted ultralytics `.pt` into a detector folder (default `<cache>/<stem>/`)."""
    from fusionlab.artifacts import atomic_write_json, sha256_file
    from fusionlab.weights import cache_path

    pt = Path(pt)
    if not trust:
        raise WeightsMissingError(
            f"refused to read '{pt}': an ultralytics .pt is a pickle, and fusionlab reads one only after an explicit "
            f"act of trust. If the file comes from a source you trust (e.g. the official ultralytics release), run "
            f"`fusionlab weights import {pt} --trust`.")
    if not pt.is_file():
        raise WeightsMissingError(f"'{pt}' does not exist; download it first (e.g. from the ultralytics release)")
    from fusionlab.models.detector import DetectorConfig, prepare_ultralytics_default, save_detector

    prepare_ultralytics_default()
    from ultralytics.nn.tasks import torch_safe_load

    try:  # restricted even when trusted: weights_only + ultralytics' allow-list of model classes
        ckpt, _ = torch_safe_load(str(pt), safe_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure of the restricted loader is the same refusal
        raise WeightsMissingError(f"'{pt}' could not be read by the restricted (weights_only) loader: "
                                  f"{str(exc).splitlines()[0][:200]}. fusionlab does not run arbitrary pickles; "
                                  "use an official ultralytics detection checkpoint.") from None
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    if model is None or not hasattr(model, "yaml") or not hasattr(model, "state_dict"):
        raise WeightsMissingError(f"'{pt}' holds no ultralytics detection model (no 'model' entry with a yaml)")
    model = model.float().eval()
    if not isinstance(getattr(model, "names", None), dict):
        model.names = dict(enumerate(getattr(model, "names", None) or range(int(model.model[-1].nc))))
    dest = Path(out) if out else cache_path(pt.name.removesuffix(".pt"))
    save_detector(dest, model, DetectorConfig(cfg=str(model.yaml.get("yaml_file", pt.stem + ".yaml")),
                                              width_multiple=None, depth_multiple=None))
    atomic_write_json(dest / IMPORTED, {"from": str(pt.resolve()), "sha256": sha256_file(pt),
                                        "imported_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "trusted": True})
    return dest


def load_matching(model, folder: str | Path, key: str) -> int:
    """Copy the tensors of an imported detector whose names and shapes match `model`; returns how many."""
    from safetensors.torch import load_file

    from fusionlab.artifacts import WEIGHTS_NAME

    state = load_file(str(Path(folder) / WEIGHTS_NAME))
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise WeightsMissingError(f"{key}: no tensor in '{folder}' matches the detector built from the config "
                                  "(set detector.width_multiple / depth_multiple to null to use the release's own scale)")
    model.load_state_dict(matched, strict=False)
    return len(matched)
