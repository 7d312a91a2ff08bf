"""Per-epoch checkpoints, resume, the run-directory lock and the training guards.

The module itself needs only the standard library (``trainer run --resume`` refuses a bad resume
before TensorFlow is imported); the Keras callbacks are built inside functions.

A checkpoint is two files: ``checkpoint-epochNNNN.weights.h5`` (model weights and optimizer
state) and ``checkpoint.json`` (the epoch, the weights file's name, the state of the callbacks
that carry state, the random-number state). ``checkpoint.json`` is replaced atomically *after*
its weights file is complete, and the previous weights file is deleted only after that, so a
kill at any instant leaves the previous or the new checkpoint, never a broken one.

Order at the end of an epoch: ``history.csv`` gets the row, then the checkpoint is written. A
kill in between leaves one row more than the checkpoint; resume drops rows beyond it.
"""
from __future__ import annotations

import csv
import os
import random
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.errors import ConfigError, RunDirError, RunFailedError
from trainer.paths import inside, is_inside
from trainer.run.rundir import CONFIG_FILE, METRICS_FILE, atomic_path, atomic_write_json, read_json

CHECKPOINT_FILE = "checkpoint.json"
LOCK_FILE = ".trainer.lock"
CHECKPOINT_VERSION = 1

# Config keys that do not change what is trained: they may differ on resume.
IGNORED_ON_RESUME = {("name",), ("output",), ("output", "dir"), ("device",), ("distribute",), ("train", "epochs"), ("sweep",)}

# The attributes of Keras callbacks that carry state from epoch to epoch.
CALLBACK_STATE = ("wait", "best", "best_epoch", "stopped_epoch", "cooldown_counter")


# --------------------------------------------------------------------------- the lock


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/.trainer.lock``, held while this process uses the run directory."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._handle: Any = None

    def acquire(self) -> "RunLock":
        import fcntl

        try:
            self._handle = open(self.path, "a+")
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
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


# --------------------------------------------------------------------------- resume checks


@dataclass
class ResumeState:
    """What ``checkpoint.json`` says: the last completed epoch and everything needed to continue."""

    epoch: int
    weights_file: str
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    random: dict[str, Any] = field(default_factory=dict)


def read_checkpoint(run_dir: Path) -> ResumeState | None:
    """The run directory's checkpoint, or None if it has none."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        data = read_json(path)
        state = ResumeState(int(data["epoch"]), str(data["weights_file"]), list(data.get("callbacks", [])), dict(data.get("random", {})))
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise RunDirError(f"{path} is unreadable ({exc}); this run cannot be resumed.") from None
    inside(run_dir, state.weights_file, f"{path} weights_file")  # never load (or later delete) a file outside the run
    if not (Path(run_dir) / state.weights_file).exists():
        raise RunDirError(f"{path} names {state.weights_file}, which is missing; this run cannot be resumed.")
    return state


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
    if config.train.epochs < state.epoch:
        raise RunDirError(
            f"--resume: train.epochs is {config.train.epochs} but the run has already completed {state.epoch} epochs; "
            f"train.epochs must be at least {state.epoch}."
        )
    metrics_path = run_dir / METRICS_FILE
    if metrics_path.exists():
        try:
            status = read_json(metrics_path).get("status")
        except (OSError, ValueError, AttributeError):
            status = None
        if status == "completed" and (old or {}).get("train", {}).get("epochs") == config.train.epochs:
            raise RunDirError(f"--resume: the run in {run_dir} already completed; there is nothing to resume.")
    return state


def resume_command(config_path: Path | str, run_dir: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> str:
    """The exact command line that resumes this run."""
    parts = ["trainer", "run", str(config_path), "--run-dir", str(run_dir), "--resume"]
    for text in overrides:
        parts += ["--set", text]
    return shlex.join(parts)


def truncate_history(path: Path, epochs: int) -> list[dict[str, Any]]:
    """Keep the header and the rows of epochs 1..``epochs`` (written atomically); return those rows."""
    from trainer.run.rundir import read_history

    path = Path(path)
    if not path.exists():
        raise RunDirError(f"--resume: {path} is missing; this run cannot be resumed.")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        lines = list(reader)
    if header is None or "epoch" not in header:
        raise RunDirError(f"--resume: {path} has no header row; this run cannot be resumed.")
    column = header.index("epoch")
    kept = [line for line in lines if line and line[column].isdigit() and int(line[column]) <= epochs]
    if [int(line[column]) for line in kept] != list(range(1, epochs + 1)):
        raise RunDirError(f"--resume: {path} does not hold epochs 1..{epochs} as the checkpoint says; this run cannot be resumed.")
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(kept)
    return read_history(path)


# --------------------------------------------------------------------------- Keras side


class NonFiniteLoss(Exception):
    """Raised by the loss guard inside ``fit`` when the training loss becomes NaN or infinite."""

    def __init__(self, epoch: int, batch: int, value: float):
        super().__init__(f"the training loss became {value} in epoch {epoch}, batch {batch}")
        self.reason = str(self)


def loss_guard():
    """A callback that stops ``fit`` at the first batch whose loss is NaN or infinite (before that epoch is checkpointed)."""
    import math

    import keras

    class LossGuard(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch + 1

        def on_train_batch_end(self, batch, logs=None):
            value = (logs or {}).get("loss")
            if value is None:
                return
            value = float(keras.ops.convert_to_numpy(value))
            if not math.isfinite(value):
                raise NonFiniteLoss(getattr(self, "_epoch", 0), batch + 1, value)

    return LossGuard()


def _seed_generators(model) -> list[Any]:
    generators = []
    for layer in model._flatten_layers(include_self=True):
        generators += list(getattr(layer, "_seed_generators", []) or [])
    return generators


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return value


def _unplain(value: Any) -> Any:
    if value == "inf":
        return float("inf")
    if value == "-inf":
        return float("-inf")
    return value


def checkpointer(run_dir: Path, stateful_callbacks: list[Any], epoch_seed: Any, resume: ResumeState | None = None):
    """A callback that writes the checkpoint at each epoch's end and, on resume, restores it at ``fit``'s start.

    It must come last in the callback list: it saves the state the other callbacks reached at
    the epoch's end, and restores theirs after their own ``on_train_begin`` has reset them.
    ``epoch_seed`` is the pipeline's per-epoch shuffle variable (or None).
    """
    import keras
    import numpy as np

    run_dir = Path(run_dir)

    class Checkpointer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            if resume is None:
                return
            model = self.model
            if not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            model.load_weights(run_dir / resume.weights_file)
            for callback, state in zip(stateful_callbacks, resume.callbacks):
                for key, value in state.items():
                    setattr(callback, key, _unplain(value))
            for generator, value in zip(_seed_generators(model), resume.random.get("seed_generators", [])):
                generator.state.assign(np.asarray(value, dtype=generator.state.dtype))
            if "numpy" in resume.random:
                kind, keys, pos, has_gauss, cached = resume.random["numpy"]
                np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
            if "python" in resume.random:
                version, internal, gauss = resume.random["python"]
                random.setstate((version, tuple(internal), gauss))

        def on_epoch_begin(self, epoch, logs=None):
            if epoch_seed is not None:
                epoch_seed.assign(epoch)

        def on_epoch_end(self, epoch, logs=None):
            completed = epoch + 1
            previous = read_checkpoint_quiet(run_dir)
            weights_file = f"checkpoint-epoch{completed:04d}.weights.h5"
            try:
                _save_weights_atomically(self.model, run_dir / weights_file)
                numpy_state = np.random.get_state()
                python_state = random.getstate()
                atomic_write_json(
                    run_dir / CHECKPOINT_FILE,
                    {
                        "version": CHECKPOINT_VERSION,
                        "epoch": completed,
                        "weights_file": weights_file,
                        "callbacks": [
                            {k: _plain(getattr(c, k)) for k in CALLBACK_STATE if hasattr(c, k)} for c in stateful_callbacks
                        ],
                        "random": {
                            "seed_generators": [keras.ops.convert_to_numpy(g.state).tolist() for g in _seed_generators(self.model)],
                            "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
                            "python": [python_state[0], list(python_state[1]), python_state[2]],
                        },
                    },
                )
            except OSError as exc:
                raise RunFailedError(
                    f"cannot write the checkpoint of epoch {completed} in {run_dir}: {exc.strerror or exc}; "
                    "the previous checkpoint is kept."
                ) from None
            if previous and previous != weights_file:
                try:
                    os.remove(run_dir / previous)
                except OSError:
                    pass

    return Checkpointer()


def _save_weights_atomically(model, path: Path) -> None:
    """``model.save_weights`` (it wants a ``.weights.h5`` name) to a temporary file, then rename."""
    with atomic_path(path) as tmp:
        model.save_weights(tmp)


def read_checkpoint_quiet(run_dir: Path) -> str | None:
    """The weights file the current checkpoint names, or None (also when it names a file outside the run directory)."""
    try:
        name = str(read_json(Path(run_dir) / CHECKPOINT_FILE)["weights_file"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    return name if is_inside(run_dir, name) else None
