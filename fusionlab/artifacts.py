"""Artifacts on disk: atomic writes, and models saved as safetensors + a JSON config.

Nothing half-written is ever left behind: every file is written to a temporary name in the
same folder and then renamed, and a model folder is built beside its final name and swapped
in. Loading never unpickles: weights come from safetensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def plain(obj: Any) -> Any:
    """Nested dicts/lists/tuples as plain dicts (str keys) and lists, for JSON and YAML configs."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file and an atomic rename."""
    path = Path(path)
    if path.is_dir():
        from fusionlab.errors import PipelineError

        raise PipelineError(f"'{path}' is a folder; pass a file name to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


class atomic_dir:
    """Context manager that builds a folder under a temporary name and renames it into place.

    with atomic_dir(out / "depth_ir") as tmp:
        (tmp / "config.json").write_text(...)
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        os.chmod(self.tmp, 0o777 & ~_umask())
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        old = None
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def save_model(path: str | os.PathLike, module, config: dict) -> Path:
    """Save `module.state_dict()` as safetensors plus `config` as JSON into folder `path`."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    with atomic_dir(path) as tmp:
        save_file(state, str(tmp / WEIGHTS_NAME))
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return Path(path)


def load_model_files(path: str | os.PathLike, what: str = "model", required: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """Return (config, state_dict) of a folder written by `save_model`; clear errors if absent.

    `required`: config keys this kind of model always writes; a folder without them is another
    kind of artifact (say, a fusion/ folder given where a depth net was expected).
    """
    from safetensors.torch import load_file

    from fusionlab.errors import PipelineError

    path = Path(path)
    cfg_file, weights = path / CONFIG_NAME, path / WEIGHTS_NAME
    for f in (cfg_file, weights):
        if not f.is_file():
            raise PipelineError(
                f"{what}: '{f}' is missing. Expected a folder written by fusionlab "
                f"({CONFIG_NAME} + {WEIGHTS_NAME}); run the stage that produces it first."
            )
    config = json.loads(cfg_file.read_text())
    lacking = [k for k in required if k not in config]
    if lacking:
        raise PipelineError(f"'{path}' is not a {what} (its {CONFIG_NAME} has no {', '.join(lacking)}); "
                            "check the path: each stage writes its models in folders named in its outputs")
    return config, load_file(str(weights))


def load_state(module, state: dict, path: str | os.PathLike, what: str = "model") -> None:
    """`module.load_state_dict(state)` (strict), with a mismatch named as the folder and kind."""
    from fusionlab.errors import PipelineError

    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise PipelineError(f"{what} '{path}' does not match its config: missing {list(missing)[:5]}, unexpected "
                            f"{list(unexpected)[:5]}; re-create it with this fusionlab version")


def json_digest(obj: Any) -> str:
    """sha256 of a JSON-able object in one canonical form (sorted keys, compact separators), the
    fingerprint behind stage keys and cache keys. Paths and other non-JSON values hash as `str`."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
