"""Stage manifests: what a finished stage produced, and the key that decides whether it reruns.

A stage's key hashes what changes its results: its config without operational keys (with
`${...}` references kept symbolic, so moving the run dir does not invalidate it), the digests of
its upstream stages' outputs, and the code it runs (`pipeline/code.py`). `manifest.json` is
written last and atomically: a stage without one did not finish.
"""

from __future__ import annotations

import json
import os
import subprocess
from functools import lru_cache
from pathlib import Path

from fusionlab import __version__
from fusionlab.artifacts import atomic_write_json, json_digest, sha256_file

MANIFEST = "manifest.json"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=1)
def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def stage_key(stage_type: str, config_hash: str, upstream: dict[str, dict], code_hash: str) -> str:
    """The identity of a stage run: same key and verified outputs means it can be skipped."""
    return json_digest({
        "type": stage_type,
        "config": config_hash,
        "upstream": {name: info["outputs_digest"] for name, info in sorted(upstream.items())},
        "code": code_hash,
    })


def hash_outputs(out_dir: Path, outputs: tuple[str, ...]) -> dict[str, dict]:
    """sha256 and size of every file under the declared outputs (relative paths)."""
    files: dict[str, dict] = {}
    for name in outputs:
        root = out_dir / name
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        for path in paths:
            rel = path.relative_to(out_dir).as_posix()
            if any(part.startswith(".") for part in Path(rel).parts):
                continue
            files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return files


def outputs_digest(files: dict[str, dict]) -> str:
    return json_digest({rel: info["sha256"] for rel, info in files.items()})


def read_manifest(out_dir: Path) -> dict | None:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def verify_outputs(out_dir: Path, manifest: dict) -> str | None:
    """None when every recorded output file exists with its sha256; else the first problem."""
    for rel, info in manifest.get("outputs", {}).items():
        path = Path(out_dir) / rel
        if not path.is_file():
            return f"output '{rel}' is missing"
        if path.stat().st_size != info["bytes"] or sha256_file(path) != info["sha256"]:
            return f"output '{rel}' changed since the stage ran"
    return None


def write_manifest(out_dir: Path, manifest: dict) -> Path:
    return atomic_write_json(Path(out_dir) / MANIFEST, manifest)


def describe_environment() -> dict:
    import platform

    return {
        "fusionlab_version": __version__,
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "host": platform.node(),
        "pid": os.getpid(),
    }
