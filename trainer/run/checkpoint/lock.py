"""The run-directory lock: one process trains in a run directory at a time (``.trainer.lock``).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from trainer.errors import RunDirError


LOCK_FILE = ".trainer.lock"


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/.trainer.lock``, held while this process uses the run directory."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._handle: Any = None
        self.remove = False  # set once the run completed: the lock file goes when released (a finished run keeps none)

    def acquire(self) -> "RunLock":
        import fcntl

        from trainer.outputs import open_lock

        try:
            self._handle = open_lock(self.path)  # never through a link a crafted run directory holds
        except OSError as exc:
            raise RunDirError(f"cannot write the run directory {self.path.parent}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._handle.close()
            self._handle = None
            raise RunDirError(
                f"run directory {self.path.parent} is in use by another trainer process; "
                "wait for it to finish (or stop it) and try again."
            ) from None
        return self

    def release(self) -> None:
        if self._handle is not None:
            if self.remove:  # unlinked while still held: a process that opened it before fails to lock it now
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        self.release()
