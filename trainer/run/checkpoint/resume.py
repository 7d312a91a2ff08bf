"""``--resume``: read the checkpoint back, refuse a run that cannot be continued, say how to resume.

Standard library only: a bad resume is refused before TensorFlow is imported.
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.errors import ConfigError, RunDirError
from trainer.paths import inside
from trainer.readers.run_files import CHECKPOINT_FILE
from trainer.run.rundir import CONFIG_FILE, HISTORY_FILE
from trainer.run.checkpoint.logs import check_history


# Config keys that do not change what is trained: they may differ on resume.
IGNORED_ON_RESUME = {("name",), ("output",), ("output", "dir"), ("device",), ("distribute",), ("train", "epochs"), ("sweep",), ("tracking",)}


@dataclass
class ResumeState:
    """What ``checkpoint.json`` says: the last completed epoch and everything needed to continue."""

    epoch: int
    weights_file: str
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    random: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] | None = None  # what data.path held when the run started (None: a checkpoint from before 0.x)
    completed: bool = False  # the run completed: weights_file is last.h5 or model.h5 (trainer.run.best), no .npz kept


def read_checkpoint(run_dir: Path) -> ResumeState | None:
    """The run directory's checkpoint, or None if it has none; a malformed one or a missing weights file is a RunDirError."""
    record = _checkpoint_record(run_dir)
    if record is None:
        return None
    path = Path(run_dir) / CHECKPOINT_FILE
    for name in record.named_files():  # trainer's own file names (the record's bounds), and no link out of the run
        _check_weights_file(Path(run_dir), name, path)
    return ResumeState(
        record.epoch, record.weights_file, [state.model_dump(exclude_unset=True) for state in record.callbacks],
        record.random.model_dump(exclude_none=True), record.data.model_dump() if record.data is not None else None,
        record.completed,
    )


def _check_weights_file(run_dir: Path, name: str, checkpoint: Path) -> None:
    """A weights file ``checkpoint.json`` names is a regular file inside the run directory (a link out of it is refused)."""
    import stat

    from trainer.readers import locate

    target = locate(os.path.abspath(run_dir / name), os.path.abspath(run_dir))
    try:
        mode = os.stat(target).st_mode
    except OSError:
        raise RunDirError(f"{checkpoint} names {name}, which is missing; this run cannot be resumed.") from None
    if not stat.S_ISREG(mode):
        raise RunDirError(f"{checkpoint} names {name}, which is not a regular file; this run cannot be resumed.")


def _checkpoint_record(run_dir: Path):
    """``checkpoint.json`` as its typed record (``trainer.readers.run_files``), the message saying the run cannot be resumed."""
    from trainer.readers.run_files import read_checkpoint_record

    try:
        return read_checkpoint_record(run_dir)
    except RunDirError as exc:
        raise RunDirError(f"{exc.message.rstrip('.')}; this run cannot be resumed.") from None


def config_differences(old: dict[str, Any], new: dict[str, Any], path: tuple[str, ...] = ()) -> list[str]:
    """``key.path: old -> new`` for every resolved-config value that differs and changes training."""
    if path in IGNORED_ON_RESUME:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        differences = []
        for key in list(old) + [k for k in new if k not in old]:
            differences += config_differences(old.get(key, "(absent)"), new.get(key, "(absent)"), path + (str(key),))
        return differences
    if old != new:
        return [f"{'.'.join(path)}: {old!r} in the run, {new!r} now"]
    return []


def check_resume(run_dir: Path, config: Any) -> ResumeState:
    """Refuse (exit 2) a resume that cannot continue this run: no run, no checkpoint, a different config."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--resume: {run_dir} is a file, not a run directory; pass the run directory to continue.")
    if not run_dir.is_dir():
        raise RunDirError(f"--resume: run directory {run_dir} does not exist; leave out --resume to start a new run.")
    config_path = run_dir / CONFIG_FILE
    if not config_path.exists():
        raise RunDirError(f"--resume: {run_dir} has no {CONFIG_FILE}; it is not a trainer run directory.")
    state = read_checkpoint(run_dir)
    if state is None:
        raise RunDirError(
            f"--resume: {run_dir} has no checkpoint (no epoch was completed); "
            "start again with a new --run-dir (or delete this one)."
        )
    from trainer.config.loading import read_yaml  # the same size, depth and alias limits as any config

    try:
        old, _ = read_yaml(inside(run_dir, CONFIG_FILE, f"--resume: {config_path}"))
    except ConfigError as exc:
        raise RunDirError(f"--resume: cannot read {config_path}: {exc.message}") from None
    differences = config_differences(old or {}, config.to_dict())
    if differences:
        raise RunDirError(
            f"--resume: the config differs from the one {run_dir} was trained with, in ways that change training:\n"
            + "\n".join(f"  - {d}" for d in differences)
            + "\nUse the original config (only train.epochs may grow), or start a new run."
        )
    fine_tune = getattr(config.model, "fine_tune", None)  # a fine-tune phase runs on past train.epochs
    if config.train.epochs + (fine_tune.epochs if fine_tune is not None else 0) < state.epoch:
        raise RunDirError(
            f"--resume: train.epochs is {config.train.epochs} but the run has already completed {state.epoch} epochs; "
            f"train.epochs must be at least {state.epoch}."
        )
    if run_completed(run_dir, state, (old or {}).get("train", {}).get("epochs"), config.train.epochs):
        raise RunDirError(f"--resume: the run in {run_dir} already completed; there is nothing to resume.")
    if state.completed and getattr(config.model, "fine_tune", None) is None:
        from trainer.run.features import uses_cached_features

        if uses_cached_features(config):
            raise RunDirError(
                f"--resume: the run in {run_dir} completed training its head on cached backbone features, and its last.h5 "
                "holds the whole model without the head's optimizer state; start a new run with more train.epochs."
            )
    check_history(run_dir / HISTORY_FILE, state.epoch)
    data_path = config.data.path
    # checkpoints from before data fingerprints cannot be compared; missing data is the loader's to name
    if state.data is not None and (data_path is None or Path(data_path).exists()):
        from trainer.run.data_fingerprint import data_changes, fingerprint_data

        now = fingerprint_data(config.data)
        changes = data_changes(state.data, now)
        if changes:
            raise RunDirError(
                f"--resume: data.path {config.data.path} is not the data {run_dir} was trained on: {'; '.join(changes)}. "
                "Resuming would continue on other data; restore the original data, or start a new run."
            )
    return state


def run_completed(run_dir: Path, state: ResumeState, trained_epochs: Any, wanted_epochs: int) -> bool:
    """The run finished with this number of epochs: ``metrics.json`` says completed at the checkpoint's epoch.

    A resume deletes the old ``metrics.json`` before it trains, and a ``completed`` written for
    fewer epochs than the checkpoint holds is stale either way: such a run is resumed (so is one
    whose ``metrics.json`` is damaged: the resume replaces it).
    """
    from trainer.readers.run_files import read_metrics_record

    try:
        metrics = read_metrics_record(run_dir)
    except RunDirError:
        return False
    if metrics is None or metrics.status != "completed":
        return False
    return metrics.epochs_completed == state.epoch and trained_epochs == wanted_epochs


def resume_command(config_path: Path | str, run_dir: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> str:
    """The exact command line that resumes this run."""
    parts = ["trainer", "run", str(config_path), "--run-dir", str(run_dir), "--resume"]
    for text in overrides:
        parts += ["--set", text]
    return shlex.join(parts)


def read_checkpoint_json(run_dir: Path) -> dict[str, Any] | None:
    """``checkpoint.json`` as a (validated) dict, or None when it is missing or malformed."""
    from trainer.readers.run_files import read_checkpoint_record

    try:
        record = read_checkpoint_record(run_dir)
    except RunDirError:
        return None
    return record.model_dump(exclude_none=True) if record is not None else None


def read_checkpoint_quiet(run_dir: Path) -> str | None:
    """The weights file the current checkpoint names, or None (missing or malformed checkpoint)."""
    data = read_checkpoint_json(run_dir)
    return data["weights_file"] if data is not None else None
