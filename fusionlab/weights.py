"""One resolver for every pretrained part: explicit local path > local cache > hub download.

Configs say `pretrained: <hub id | local path | null>`. `null` means random initialisation
(tests, smoke runs). When weights cannot be found and downloads are not allowed (or fail),
the user gets one clear error: what is missing, which config key asked for it, and how to fix it.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from fusionlab.errors import WeightsMissingError


def cache_dir() -> Path:
    """Local weights cache: $FUSIONLAB_WEIGHTS, else ~/.cache/fusionlab/weights."""
    return Path(os.environ.get("FUSIONLAB_WEIGHTS", Path.home() / ".cache" / "fusionlab" / "weights"))


def cache_path(spec: str) -> Path:
    """Where a hub id is looked for in the local cache (`org/name` -> `<cache>/org--name`)."""
    return cache_dir() / re.sub(r"[^A-Za-z0-9_.-]+", "--", spec)


def online_allowed() -> bool:
    offline = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "FUSIONLAB_OFFLINE", "YOLO_OFFLINE")
    return not any(os.environ.get(var, "").lower() in ("1", "true", "yes") for var in offline)


def _fix(spec: str, key: str) -> str:
    return (
        f"Fix: on a machine with internet, download it (e.g. `huggingface-cli download {spec} "
        f"--local-dir {cache_path(spec)}`), or set `{key}: /path/to/weights`, "
        f"or `{key}: null` to train from random initialisation."
    )


def resolve(spec: str | None, *, what: str, key: str = "pretrained") -> str | None:
    """Resolve a weights spec to a local path, a hub id to download, or None (random init)."""
    if spec is None or spec == "":
        return None
    path = Path(spec).expanduser()
    if path.exists():
        return str(path)
    cached = cache_path(spec)
    if cached.exists():
        return str(cached)
    if spec.startswith((".", "/", "~")):
        raise WeightsMissingError(f"{what}: weights path '{spec}' (config key '{key}') does not exist. {_fix(spec, key)}")
    if online_allowed():
        return spec
    raise WeightsMissingError(
        f"{what}: pretrained weights '{spec}' (config key '{key}') are not a local path, "
        f"not in the cache ({cached}), and downloads are disabled (offline). {_fix(spec, key)}"
    )


def is_local(resolved: str | None) -> bool:
    return resolved is not None and Path(resolved).exists()


@contextlib.contextmanager
def loading(what: str, key: str, spec: str | None):
    """Turn a library's download/lookup failure into one clear WeightsMissingError."""
    try:
        yield
    except WeightsMissingError:
        raise
    except (OSError, ValueError, RuntimeError) as exc:
        text = str(exc)
        markers = ("offline", "connect", "resolve", "download", "not found", "does not appear",
                   "No such file", "couldn't", "Can't load", "is not a local folder", "Unknown model",
                   "HTTP", "huggingface", "Max retries", "Network")
        if spec is not None and any(m.lower() in text.lower() for m in markers):
            raise WeightsMissingError(
                f"{what}: could not load pretrained weights '{spec}' (config key '{key}'): "
                f"{text.splitlines()[0][:200]}. {_fix(spec, key)}"
            ) from None
        raise
