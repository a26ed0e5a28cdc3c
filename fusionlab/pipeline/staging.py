"""Staging folders: a stage attempt never touches the last good result until it has succeeded.

Every attempt of stage `S` (first run, config change, --force, resume) works in
`<run_dir>/.fusionlab/staging/S/`: checkpoints, logs, outputs and, last, its manifest. Only then
is the folder swapped in for `<run_dir>/S/`:

    1. <run_dir>/S            -> <run_dir>/.fusionlab/trash/S.<n>    (the previous result, if any)
    2. staging/S              -> <run_dir>/S
    3. delete the trash entry

Each step is one rename, so `<run_dir>/S` is always either the previous complete result, the new
complete result, or (between 1 and 2) absent, which reads as "not finished": never a mix that
looks valid. A staging folder holding a manifest is a finished attempt, so `settle` completes an
interrupted swap by redoing the steps (roll forward). A failed or killed attempt leaves
`<run_dir>/S` and its manifest as they were, so everything downstream stays up to date, and keeps
its staging folder: rerunning the same config (same key) resumes from its checkpoints; any other
key starts a fresh staging folder.

Stages that update an output incrementally (stage 3's embedding cache recomputes only stale
entries) declare it in `REUSE = ("embeddings",)`: a fresh staging folder starts with a hard-linked
copy of those outputs from the last good result. Such outputs must be replaced by atomic renames,
never modified in place, so the link cannot change the last good result.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

STATE_DIR = ".fusionlab"
ATTEMPT = "attempt.json"  # in <staging>/.fusionlab/: the key this attempt runs under
MANIFEST = "manifest.json"


def staging_dir(out_dir: str | os.PathLike) -> Path:
    out_dir = Path(out_dir)
    return out_dir.parent / STATE_DIR / "staging" / out_dir.name


def _trash_dir(out_dir: Path) -> Path:
    return out_dir.parent / STATE_DIR / "trash"


def attempt_key(out_dir: str | os.PathLike) -> str | None:
    """The key of an unfinished attempt waiting in the staging folder, if any."""
    try:
        return json.loads((staging_dir(out_dir) / STATE_DIR / ATTEMPT).read_text()).get("key")
    except (OSError, ValueError):
        return None


def prepare(out_dir: str | os.PathLike, key: str, reuse: tuple[str, ...] = ()) -> Path:
    """The staging folder for an attempt under `key`. An earlier attempt under the same key is kept
    (it resumes from its checkpoints); anything else there is cleared first."""
    from fusionlab.artifacts import atomic_write_json

    out_dir = Path(out_dir)
    stage = staging_dir(out_dir)
    if stage.exists() and (attempt_key(out_dir) != key or (stage / MANIFEST).exists()):
        shutil.rmtree(stage)
    if not stage.exists():
        stage.mkdir(parents=True)
        for name in reuse:
            _link_copy(out_dir / name, stage / name)
        atomic_write_json(stage / STATE_DIR / ATTEMPT, {"key": key, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return stage


def _link_copy(src: Path, dst: Path) -> None:
    """Hard-link `src` (a file or folder) to `dst`, copying where links are not possible."""
    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    if src.is_dir():
        shutil.copytree(src, dst, copy_function=link)
    elif src.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        link(src, dst)


def commit(out_dir: str | os.PathLike) -> Path:
    """Swap the finished staging folder (its manifest written) in for `out_dir`."""
    out_dir = Path(out_dir)
    stage = staging_dir(out_dir)
    if not (stage / MANIFEST).is_file():
        raise RuntimeError(f"staging folder {stage} has no {MANIFEST}: the attempt did not finish")
    trash = None
    if out_dir.exists() or out_dir.is_symlink():
        trash = _trash_dir(out_dir) / f"{out_dir.name}.{os.getpid()}.{time.time_ns()}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.replace(out_dir, trash)
    os.replace(stage, out_dir)
    (out_dir / STATE_DIR / ATTEMPT).unlink(missing_ok=True)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    _empty_trash(out_dir)
    return out_dir


def settle(out_dir: str | os.PathLike) -> str | None:
    """Finish what an interrupted swap left: returns a note when it moved a result into place."""
    out_dir = Path(out_dir)
    note = None
    if (staging_dir(out_dir) / MANIFEST).is_file():
        commit(out_dir)
        note = f"completed the interrupted swap of a finished attempt into {out_dir}"
    _empty_trash(out_dir)
    return note


def _empty_trash(out_dir: Path) -> None:
    trash = _trash_dir(out_dir)
    for old in trash.iterdir() if trash.is_dir() else ():
        name, pid, stamp = old.name.rsplit(".", 2) if old.name.count(".") >= 2 else ("", "", "")
        if name == out_dir.name and pid.isdigit() and stamp.isdigit():
            shutil.rmtree(old, ignore_errors=True)
