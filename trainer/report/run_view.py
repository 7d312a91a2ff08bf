"""What a run directory holds, read through the readers (``trainer.readers``): bounded, typed, damage said not raised.

``read_run_view(path)`` refuses a folder that is not a run directory (no ``config.yaml``, or not a
folder: ``RunDirError``, exit 2). A damaged ``metrics.json``, ``history.csv``, ``manifest.json`` or
``config.yaml`` does not stop a report: the view records what is missing or damaged in ``problems``
and the page says it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trainer.errors import BadInputError, RunDirError

from trainer.readers.run_files import CONFIG_FILE, HISTORY_FILE, MANIFEST_FILE, METRICS_FILE, MODEL_FILE
MAX_CONFIG_LEAVES = 10_000  # keys shown in a config's differences: a config has ~100


@dataclass
class RunView:
    """One run directory as the pages show it; every field may be empty, ``problems`` says why."""

    path: Path
    name: str
    started: str = ""  # when config.yaml was written (UTC)
    status: str = "unfinished"
    reason: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # metrics.json, typed (MetricsRecord)
    columns: list[str] = field(default_factory=list)  # history.csv's columns
    rows: list[dict[str, Any]] = field(default_factory=list)  # history.csv's rows
    config_text: str = ""
    config: dict[str, Any] = field(default_factory=dict)  # config.yaml flattened: {"train.epochs": 3, ...}
    class_names: list[str] = field(default_factory=list)
    dataset: str | None = None
    trained_on: dict[str, Any] = field(default_factory=dict)
    has_model: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def best_epoch(self) -> int | None:
        best = self.metrics.get("best") or {}
        epoch = best.get("epoch") if isinstance(best, dict) else None
        return epoch if isinstance(epoch, int) else None

    @property
    def monitor(self) -> str | None:
        best = self.metrics.get("best") or {}
        return best.get("monitor") if isinstance(best, dict) else None

    def section(self, name: str) -> dict[str, Any]:
        value = self.metrics.get(name)
        return value if isinstance(value, dict) else {}

    def setting(self) -> dict[str, str]:
        """Backend, device and precision, from manifest.json's ``trained_on`` or metrics.json's ``device``."""
        device = self.section("device")
        on = self.trained_on
        devices = on.get("devices") if isinstance(on.get("devices"), list) else []
        return {
            "backend": str(on.get("backend") or device.get("backend") or "unknown"),
            "device": str(device.get("description") or ", ".join(map(str, devices)) or on.get("kind") or "unknown"),
            "precision": str(on.get("precision") or device.get("precision") or "unknown"),
        }


def read_run_view(path: Path | str) -> RunView:
    """The run directory ``path`` as a ``RunView``; a RunDirError (exit 2) when it is not a run directory."""
    from trainer.paths import user_path

    path = user_path(path, "RUN")
    if not path.is_dir():
        what = "does not exist" if not (path.exists() or path.is_symlink()) else "is not a folder"
        raise RunDirError(f"{path} {what}; expected a run directory (a folder with {CONFIG_FILE}, as trainer run writes it).")
    config = path / CONFIG_FILE
    if config.is_symlink() or ((config.exists()) and not config.is_file()):
        raise RunDirError(f"{config}: is a link or not a regular file; a run directory's {CONFIG_FILE} is a file trainer run wrote, so {path} is not read as a run.")
    if not config.is_file():
        raise RunDirError(f"{path}: has no {CONFIG_FILE}, so it is not a run directory (trainer run writes {CONFIG_FILE}, metrics.json and history.csv into one).")
    view = RunView(path=path, name=path.resolve().name)
    _read_config(view)
    _read_metrics(view)
    _read_history(view)
    _read_manifest(view)
    model = path / MODEL_FILE
    view.has_model = model.is_file() and not model.is_symlink()
    return view


def _read_config(view: RunView) -> None:
    from trainer.config.loading import MAX_CONFIG_BYTES, parse_yaml
    from trainer.readers import read_text

    file = view.path / CONFIG_FILE
    try:
        view.started = datetime.fromtimestamp(os.lstat(file).st_mtime, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        view.config_text = read_text(file, limit=MAX_CONFIG_BYTES, what="the config.yaml trainer run writes")
        data, _ = parse_yaml(view.config_text, str(file))
    except (BadInputError, OSError) as exc:
        view.problems.append(_message(exc))
        return
    if isinstance(data, dict):
        view.config = flatten(data)
    else:
        view.problems.append(f"{file}: is not a mapping of keys; its differences are not shown.")


def flatten(data: Any, prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """A nested mapping as ``{"a.b": value}`` (lists kept whole), at most ``MAX_CONFIG_LEAVES`` keys."""
    out = {} if out is None else out
    for key, value in data.items():
        if len(out) >= MAX_CONFIG_LEAVES:
            break
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flatten(value, f"{name}.", out)
        else:
            out[name] = value
    return out


def _read_metrics(view: RunView) -> None:
    from trainer.readers.run_files import read_metrics_record

    try:
        record = read_metrics_record(view.path)
    except BadInputError as exc:
        view.problems.append(f"damaged {METRICS_FILE}: {_message(exc)}")
        view.status = f"unreadable {METRICS_FILE}"
        return
    if record is None:
        view.problems.append(f"no {METRICS_FILE}: the run is in progress, or was killed before it could record how it ended.")
        return
    view.metrics = record.model_dump()
    view.status, view.reason = record.status, record.reason


def _read_history(view: RunView) -> None:
    from trainer.readers.run_files import read_history_table

    file = view.path / HISTORY_FILE
    if not (file.exists() or file.is_symlink()):
        view.problems.append(f"no {HISTORY_FILE}: no epoch was recorded.")
        return
    try:
        table = read_history_table(file)
    except BadInputError as exc:
        view.problems.append(f"damaged {HISTORY_FILE}: {_message(exc)}")
        return
    view.columns, view.rows = table.columns, table.rows
    if not view.rows:
        view.problems.append(f"{HISTORY_FILE} holds no epoch: the run ended before its first epoch did.")


def _read_manifest(view: RunView) -> None:
    from trainer.readers.records import Manifest

    try:
        manifest = Manifest.read(view.path)
    except BadInputError as exc:
        view.problems.append(f"damaged {MANIFEST_FILE}: {_message(exc)}")
        return
    if manifest is None:
        return
    view.class_names, view.dataset = list(manifest.class_names), manifest.dataset
    view.trained_on = dict(manifest.trained_on or {})


def _message(exc: BaseException) -> str:
    return getattr(exc, "message", None) or (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))
