"""What a resumed run cuts back: rows of ``history.csv`` and the callbacks' logs past the checkpoint, and leftovers of the killed process.
"""
from __future__ import annotations

import contextlib
import csv
import os
from pathlib import Path
from typing import Any

from trainer.errors import RunDirError
from trainer.run.rundir import atomic_path, atomic_write_text


# Left by a kill: atomic_path's temporary files (".model.x1y2.tmp.h5") and the caches of a run.
LEFTOVER_DIRS = ("features", "data-cache")


def remove_leftovers(run_dir: Path) -> list[str]:
    """Delete what a killed process left half-written in ``run_dir`` (temporary files, caches); return their names.

    Only entries directly inside ``run_dir`` are touched; a symbolic link is removed, never followed.
    """
    import shutil

    removed = []
    with os.scandir(run_dir) as entries:
        for entry in list(entries):
            name = entry.name
            temporary = name.startswith(".") and ".tmp" in name and not entry.is_dir(follow_symlinks=False)
            cache = name in LEFTOVER_DIRS
            if not (temporary or cache):
                continue
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed.append(name)
    return removed


def continue_callback_logs(callbacks: list[Any], run_dir: Path, epochs: int) -> None:
    """On resume: csv_logger and json_log append to their files, cut back to the checkpoint's ``epochs``.

    Rows written after the checkpoint (a kill between the row and the checkpoint) are dropped,
    as in ``history.csv``; a missing file is simply started again. The files are read with the
    run directory's bounds (``trainer.readers``): a link out of it, a FIFO or a huge file is a RunDirError.
    """
    for callback in callbacks:
        kind = type(callback).__name__
        if kind not in ("CSVLogger", "JsonLinesLog"):
            continue
        path = Path(callback.filename)
        callback.append = True
        if not path.exists() and not path.is_symlink():
            continue
        if kind == "CSVLogger":
            _cut_csv_log(path, epochs, run_dir)
        else:
            _cut_json_log(path, epochs, run_dir)


def _cut_csv_log(path: Path, epochs: int, run_dir: Path) -> None:
    """Keras's CSVLogger counts epochs from 0: keep the header and the rows of epochs 0..epochs-1."""
    from trainer.readers.run_files import read_history_table

    table = read_history_table(path, folder=run_dir, what="the csv_logger file of this run")
    if not table.columns:
        return
    _rewrite_csv(path, [table.columns, *(line for line, row in zip(table.lines, table.rows) if row["epoch"] < epochs)])


def _rewrite_csv(path: Path, rows: list[list[str]]) -> None:
    """Replace a CSV file's rows (header included) atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(rows)


def _cut_json_log(path: Path, epochs: int, run_dir: Path) -> None:
    """json_log counts epochs from 1: keep the complete lines of epochs 1..epochs."""
    import json

    from trainer.readers import read_text
    from trainer.readers.run_files import HISTORY_LIMIT

    kept = []
    text = read_text(os.path.abspath(path), limit=HISTORY_LIMIT, folder=os.path.abspath(run_dir), what="the json_log file of this run")
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            continue  # a line cut short by the kill
        if isinstance(row, dict) and isinstance(row.get("epoch"), int) and not isinstance(row["epoch"], bool) and row["epoch"] <= epochs:
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))


def check_history(path: Path, epochs: int):
    """``history.csv`` (read with the run directory's bounds) holds epochs 1..``epochs``, maybe more; else a RunDirError.

    Rows beyond ``epochs`` (a kill between the row and its checkpoint) are allowed: resume drops them.
    """
    from trainer.readers.run_files import read_history_table

    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise RunDirError(f"--resume: {path} is missing; this run cannot be resumed.")
    try:
        table = read_history_table(path)
    except RunDirError as exc:
        raise RunDirError(f"--resume: {exc.message.rstrip('.')}; this run cannot be resumed.") from None
    if not table.columns:
        raise RunDirError(f"--resume: {path} has no header row; this run cannot be resumed.")
    if [epoch for epoch in table.epochs() if epoch <= epochs] != list(range(1, epochs + 1)):
        raise RunDirError(f"--resume: {path} does not hold epochs 1..{epochs} as the checkpoint says; this run cannot be resumed.")
    return table


def truncate_history(path: Path, epochs: int) -> list[dict[str, Any]]:
    """Keep the header and the rows of epochs 1..``epochs`` (written atomically); return those rows."""
    table = check_history(path, epochs)
    kept = [index for index, row in enumerate(table.rows) if row["epoch"] <= epochs]
    _rewrite_csv(Path(path), [table.columns, *(table.lines[i] for i in kept)])
    return [table.rows[i] for i in kept]
