"""Writes one checkpoint at a time on a background thread: weights files, then ``checkpoint.json``, then old files go.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from trainer.errors import RunFailedError
from trainer.paths import is_inside
from trainer.readers.run_files import CHECKPOINT_FILE, FINISHED_WEIGHTS
from trainer.run.rundir import atomic_write_json
from trainer.run.checkpoint.resume import read_checkpoint_json
from trainer.run.checkpoint.state import write_arrays
from trainer.threads import BackgroundTask


BEST_WEIGHTS_KEY = "best_weights_file"


class CheckpointWriter:
    """Writes one checkpoint at a time on a background thread: weights files, then ``checkpoint.json``, then old files go.

    ``checkpoint.json`` is replaced only once every file it names is complete, and files the
    previous ``checkpoint.json`` named are deleted only after that: a kill at any instant leaves
    the old or the new checkpoint.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.previous: set[str] = set(_named_files(read_checkpoint_json(self.run_dir), self.run_dir))
        self.written_best: dict[int, tuple[Any, str | None]] = {}  # callback id -> (best epoch, file) already on disk
        self._task: BackgroundTask | None = None

    def best_weights_file(self, callback: Any, index: int, completed: int, to_write: dict[str, Any]) -> str | None:
        """The file holding ``callback``'s best weights; a new one (to write) only when they changed."""
        weights = getattr(callback, "best_weights", None)
        if weights is None:
            return None
        epoch, name = self.written_best.get(id(callback), (None, None))
        if name is None or epoch != getattr(callback, "best_epoch", None):
            name = f"checkpoint-best{index}-epoch{completed:04d}.weights.npz"
            to_write[name] = list(weights)  # get_weights() copies; EarlyStopping replaces the list, never edits it
            self.written_best[id(callback)] = (getattr(callback, "best_epoch", None), name)
        return name

    def submit(self, record: dict[str, Any], state: dict[str, list[Any]], best: dict[str, Any]) -> None:
        self.wait()
        self._task = BackgroundTask(self._write, record, state, best, name="trainer-checkpoint")

    def wait(self) -> None:
        """Wait for the checkpoint being written; raise what writing it raised."""
        task, self._task = self._task, None
        if task is not None:
            task.join()

    def _write(self, record: dict[str, Any], state: dict[str, list[Any]], best: dict[str, Any]) -> None:
        completed = record["epoch"]
        try:
            write_arrays(self.run_dir / record["weights_file"], {"model": state["model"], "optimizer": state["optimizer"]})
            for name, arrays in best.items():
                write_arrays(self.run_dir / name, {"model": arrays})
            atomic_write_json(self.run_dir / CHECKPOINT_FILE, record)
        except OSError as exc:  # raised in the training thread by wait()
            raise RunFailedError(
                f"cannot write the checkpoint of epoch {completed} in {self.run_dir}: {exc.strerror or exc}; "
                "the previous checkpoint is kept."
            ) from exc
        current = set(_named_files(record, self.run_dir))
        for name in self.previous - current:
            with contextlib.suppress(OSError):
                os.remove(self.run_dir / name)
        self.previous = current


def _named_files(record: dict[str, Any] | None, run_dir: Path | None = None, checked: bool = True) -> list[str]:
    """The weights files a ``checkpoint.json`` record names (``checked``: only those inside ``run_dir``, safe to delete)."""
    if not isinstance(record, dict):
        return []
    names = [record.get("weights_file")] if checked else []
    for state in record.get("callbacks") or []:
        if isinstance(state, dict):
            names.append(state.get(BEST_WEIGHTS_KEY))
    names = [n for n in names if isinstance(n, str) and n and n not in FINISHED_WEIGHTS]  # model.h5/last.h5 are never a checkpoint's to delete
    return [n for n in names if is_inside(run_dir, n)] if checked else names
