"""One run at a time per run dir: a lock file holding the owner's pid and host.

A lock left by a process that no longer exists (killed, crashed) is detected and replaced.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from fusionlab.errors import PipelineError

LOCK_NAME = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.stale_removed: dict | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and owner.get("host") == info["host"] and not _alive(int(owner.get("pid", -1))):
                    self.stale_removed = owner
                    self.path.unlink(missing_ok=True)
                    continue
                if owner is None:  # unreadable: being written this instant, or garbage
                    time.sleep(0.2)
                    owner = self._owner() or {}
                raise PipelineError(
                    f"run dir '{self.path.parent}' is in use by pid {owner.get('pid', '?')} on "
                    f"{owner.get('host', '?')} since {owner.get('since', '?')} (lock file {self.path}). "
                    f"Wait for that run to finish, use another run_dir, or delete the lock file if that process is gone."
                ) from None
            with os.fdopen(fd, "w") as fh:
                json.dump(info, fh)
            return self
        raise PipelineError(f"could not take the lock {self.path}; delete it if no run is active")

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def release(self) -> None:
        owner = self._owner()
        if owner is not None and owner.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
