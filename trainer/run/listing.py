"""The list of runs under a folder: what was tried, how far it got, how well it did (stdlib only)."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from trainer.errors import RunDirError
from trainer.readers.run_files import read_metrics_record
from trainer.run.rundir import CONFIG_FILE, HISTORY_FILE, METRICS_FILE, read_history


def _accuracy(section: Any) -> float | None:
    value = section.get("accuracy") if isinstance(section, dict) else None
    return value if isinstance(value, (int, float)) else None


def describe_run(run_dir: Path) -> dict[str, Any] | None:
    """One row for a run directory, or None when the folder holds no run.

    A damaged ``metrics.json`` or ``history.csv`` (malformed, too big, a link out of the run, a
    FIFO) never stops the listing: the run is listed with that said in its status.
    """
    config_file, history_file = run_dir / CONFIG_FILE, run_dir / HISTORY_FILE
    if not config_file.is_file():
        return None
    try:
        record = read_metrics_record(run_dir)
        metrics: dict[str, Any] = record.to_dict() if record is not None else {}
    except RunDirError:
        metrics = {"status": f"unreadable {METRICS_FILE}"}
    rows: list[dict[str, Any]] = []
    damaged = False
    if history_file.exists() or history_file.is_symlink():
        try:
            rows = read_history(history_file)
        except RunDirError:
            damaged = True
    validation = _accuracy(metrics.get("validation"))
    if validation is None and rows:
        validation = rows[-1].get("val_accuracy")
    status = metrics.get("status", "unfinished") + (f" (damaged {HISTORY_FILE})" if damaged else "")
    started = config_file.stat().st_mtime
    return {
        "name": run_dir.name,
        "status": status,
        "epochs": metrics.get("epochs_completed", len(rows)),
        "validation_accuracy": validation if isinstance(validation, (int, float)) else None,
        "test_accuracy": _accuracy(metrics.get("test")),
        "wall_seconds": metrics.get("wall_seconds"),
        "started": datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M:%S"),
        "_started": started,
    }


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Every run directly under ``root``, oldest first (by when its config.yaml was written)."""
    found = _described(root)
    for row in found:
        del row["_started"], row["_path"]
    return found


def list_run_dirs(root: Path) -> list[Path]:
    """The run directories directly under ``root``, in ``list_runs``'s order (what ``trainer runs --compare FOLDER`` compares)."""
    return [row["_path"] for row in _described(root)]


def _described(root: Path) -> list[dict[str, Any]]:
    root = Path(root)
    if not root.is_dir():
        raise RunDirError(f"{root} is not a folder of runs; pass the folder that holds your run directories (output.dir).")
    found = [{**row, "_path": child} for child in root.iterdir() if child.is_dir() and (row := describe_run(child)) is not None]
    found.sort(key=lambda row: (row["_started"], row["name"]))
    return found
