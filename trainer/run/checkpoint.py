"""Per-epoch checkpoints, resume, the run-directory lock and the training guards.

The module itself needs only the standard library (``trainer run --resume`` refuses a bad resume
before TensorFlow is imported); the Keras callbacks are built inside functions.

A checkpoint is ``checkpoint-epochNNNN.weights.npz`` (model weights and optimizer state, in
variable order; with ``train.ema`` the raw weights, and the average and its step count among the
optimizer's variables: ``trainer.run.ema``), for ``early_stopping`` with ``restore_best_weights`` the best weights so far
(``checkpoint-bestI-epochNNNN.weights.npz``, rewritten only when they change), and
``checkpoint.json`` (the epoch, those files' names, the state of the callbacks that carry state,
the random-number state). The training thread copies that state at the epoch's end; a background
thread writes the files while the next epoch trains. ``checkpoint.json`` is replaced atomically
*after* every file it names is complete, and files only the previous one named are deleted only
after that, so a kill at any instant leaves the previous or the new checkpoint, never a broken one.

Order at the end of an epoch: ``history.csv`` (and the csv_logger/json_log files) get the row,
then the checkpoint is written. A kill in between leaves one row more than the checkpoint;
resume drops rows beyond it in every log.
"""
from __future__ import annotations

import contextlib
import csv
import os
import random
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.errors import ConfigError, RunDirError, RunFailedError
from trainer.paths import inside, is_inside
from trainer.readers.run_files import CHECKPOINT_FILE, CHECKPOINT_VERSION, FINISHED_WEIGHTS
from trainer.run.best import BestEpoch
from trainer.run.rundir import CONFIG_FILE, HISTORY_FILE, MODEL_FILE, atomic_path, atomic_write_json, atomic_write_text

LOCK_FILE = ".trainer.lock"

# Config keys that do not change what is trained: they may differ on resume.
IGNORED_ON_RESUME = {("name",), ("output",), ("output", "dir"), ("device",), ("distribute",), ("train", "epochs"), ("sweep",), ("tracking",)}

# The attributes of Keras callbacks that carry state from epoch to epoch.
CALLBACK_STATE = ("wait", "best", "best_epoch", "stopped_epoch", "cooldown_counter")


# --------------------------------------------------------------------------- the lock


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


# --------------------------------------------------------------------------- resume checks


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


def resume_command(config_path: Path | str, run_dir: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> str:
    """The exact command line that resumes this run."""
    parts = ["trainer", "run", str(config_path), "--run-dir", str(run_dir), "--resume"]
    for text in overrides:
        parts += ["--set", text]
    return shlex.join(parts)


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


def checkpointer(
    run_dir: Path, stateful_callbacks: list[Any], epoch_seed: Any, resume: ResumeState | None = None, data: dict[str, Any] | None = None,
    averager: Any = None,
):
    """A callback that checkpoints each epoch's end (written by a background thread) and, on resume, restores it.

    It must come last in the callback list: it saves the state the other callbacks reached at
    the epoch's end, and restores theirs after their own ``on_train_begin`` has reset them.
    ``epoch_seed`` is the pipeline's per-epoch shuffle variable (or None). The training thread
    only copies the state (weights, optimizer, callbacks, random numbers) at the epoch's end; the
    files are written while the next epoch trains. ``wait()`` joins the writer and raises its
    error (the run calls it on every ending, before ``on_run_end``). ``data``: the fingerprint of
    ``data.path`` (``trainer.run.data_fingerprint``), recorded so that ``--resume`` can compare it.
    ``averager``: ``train.ema``'s ``WeightAverage``; the checkpoint stores the raw weights (the model
    holds the average at the epoch's end) and, among the optimizer's variables, the average and its step count.
    """
    import keras
    import numpy as np

    run_dir = Path(run_dir)
    writer = CheckpointWriter(run_dir)

    class Checkpointer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            if resume is None:
                return
            model = self.model
            if not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            best_after_completion = _best_weights_of_completed_run(model, run_dir, resume) if resume.completed else None
            load_training_state(model, run_dir / resume.weights_file, check=averager.check_stored if averager is not None else None)
            if resume.completed and resume.weights_file == MODEL_FILE:  # the last epoch was the best
                best_after_completion = model.get_weights()
            if averager is not None:
                averager.forget_raw()  # the model holds the checkpoint's raw weights now
            for callback, state in zip(stateful_callbacks, resume.callbacks):
                for key, value in state.items():
                    if key == BEST_WEIGHTS_KEY:
                        callback.best_weights = read_arrays(run_dir / value) if value else None
                        writer.written_best[id(callback)] = (state.get("best_epoch"), value)
                    else:
                        setattr(callback, key, _unplain(value))
                if resume.completed and isinstance(callback, BestEpoch) and callback.best_epoch is not None:
                    callback.best_weights = best_after_completion
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
            writer.wait()  # the previous epoch's files are complete (or its error is raised here)
            completed = epoch + 1
            numpy_state = np.random.get_state()
            python_state = random.getstate()
            callbacks, best = [], {}
            for index, callback in enumerate(stateful_callbacks):
                state = {k: _plain(getattr(callback, k)) for k in CALLBACK_STATE if hasattr(callback, k)}
                if getattr(callback, "restore_best_weights", False):  # early_stopping: the best weights so far
                    state[BEST_WEIGHTS_KEY] = writer.best_weights_file(callback, index, completed, best)
                callbacks.append(state)
            record = {
                "version": CHECKPOINT_VERSION,
                "epoch": completed,
                "weights_file": f"checkpoint-epoch{completed:04d}.weights.npz",
                "callbacks": callbacks,
                "random": {
                    "seed_generators": [keras.ops.convert_to_numpy(g.state).tolist() for g in _seed_generators(self.model)],
                    "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
                    "python": [python_state[0], list(python_state[1]), python_state[2]],
                },
                **({"data": data} if data is not None else {}),
            }
            writer.submit(record, training_state(self.model, averager), best)

        def on_train_end(self, logs=None):
            writer.wait()

        def wait(self) -> None:
            writer.wait()

    return Checkpointer()


BEST_WEIGHTS_KEY = "best_weights_file"


def _best_weights_of_completed_run(model, run_dir: Path, resume: ResumeState) -> list[Any] | None:
    """A completed run's best weights (``model.h5``) when the last epoch is in ``last.h5``; read before the last is loaded."""
    if resume.weights_file == MODEL_FILE:
        return None
    from trainer.readers.model_h5 import load_h5_state

    load_h5_state(model, run_dir / MODEL_FILE, run_dir, limit=h5_read_limit(model), optimizer=False)
    return model.get_weights()


def finish_checkpoints(run_dir: Path, last_file: str) -> None:
    """The run completed: ``checkpoint.json`` names ``last_file`` (the last epoch's ``.h5``), and the ``.npz`` files go.

    ``checkpoint.json`` is replaced first (atomically), the ``.npz`` files deleted after, so a kill
    at any instant leaves a checkpoint whose files exist. A later ``--resume`` with more
    ``train.epochs`` continues from ``last_file`` (weights and optimizer state) and the recorded
    callback and random state.
    """
    run_dir = Path(run_dir)
    record = read_checkpoint_json(run_dir)
    if record is None:
        return
    record = {**record, "weights_file": last_file, "completed": True}
    record["callbacks"] = [{k: v for k, v in state.items() if k != BEST_WEIGHTS_KEY} for state in record.get("callbacks") or []]
    try:
        atomic_write_json(run_dir / CHECKPOINT_FILE, record)
    except OSError:  # the run is complete all the same; the old checkpoint and its files stay, still resumable
        return
    for entry in os.scandir(run_dir):  # trainer's own names only (checkpoint-*.weights.npz/.h5), never a link's target
        if entry.name.startswith("checkpoint-") and ".weights." in entry.name and not entry.is_dir(follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


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
        self._thread: Any = None
        self._error: BaseException | None = None

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
        import threading

        self.wait()
        self._thread = threading.Thread(target=self._write, args=(record, state, best), name="trainer-checkpoint", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _write(self, record: dict[str, Any], state: dict[str, list[Any]], best: dict[str, Any]) -> None:
        completed = record["epoch"]
        try:
            write_arrays(self.run_dir / record["weights_file"], {"model": state["model"], "optimizer": state["optimizer"]})
            for name, arrays in best.items():
                write_arrays(self.run_dir / name, {"model": arrays})
            atomic_write_json(self.run_dir / CHECKPOINT_FILE, record)
        except OSError as exc:
            self._error = RunFailedError(
                f"cannot write the checkpoint of epoch {completed} in {self.run_dir}: {exc.strerror or exc}; "
                "the previous checkpoint is kept."
            )
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread, which raises it
            self._error = exc
            return
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


def training_state(model, averager: Any = None) -> dict[str, list[Any]]:
    """Copies of the model's weights and the optimizer's variables (taken on the training thread).

    ``Variable.numpy()`` returns a new array on both backends (TensorFlow copies the buffer, JAX
    ``np.array``s it), so training on does not change what the writer thread is writing. With
    ``averager`` (``train.ema``) the model's weights are the raw ones training continues from.
    """
    weights = averager.raw_weights(model) if averager is not None else [v.numpy() for v in model.weights]
    return {"model": weights, "optimizer": [v.numpy() for v in model.optimizer.variables]}


def load_training_state(model, path: Path, check: Any = None) -> None:
    """Put a checkpoint's weights and optimizer state back (``.weights.npz``; ``.weights.h5`` of version 1).

    ``check(path, optimizer_arrays)``: refuses what the arrays hold before anything is assigned (``train.ema``'s state).
    """
    if path.name in FINISHED_WEIGHTS:  # a completed run: the last epoch's model file (weights and optimizer state)
        from trainer.readers.model_h5 import load_h5_state

        load_h5_state(model, path, path.parent, limit=h5_read_limit(model))
        return
    if path.name.endswith(".weights.h5"):
        if check is not None:  # version 1 checkpoints predate train.ema
            raise RunDirError(f"{path} is a checkpoint from before train.ema (no average of the weights in it); this run cannot be resumed with train.ema.")
        model.load_weights(path)
        return
    groups = read_arrays(path, grouped=True)
    if check is not None:
        check(path, groups.get("optimizer", []))
    for group, variables in (("model", model.weights), ("optimizer", model.optimizer.variables)):
        values = groups.get(group, [])
        if len(values) != len(variables):
            raise RunDirError(f"{path} holds {len(values)} {group} arrays but the model has {len(variables)}; this run cannot be resumed.")
        for variable, value in zip(variables, values):
            if tuple(variable.shape) != tuple(value.shape):
                raise RunDirError(f"{path}: {variable.path} is {tuple(value.shape)} in the checkpoint but {tuple(variable.shape)} in the model.")
            variable.assign(value)


def h5_read_limit(model) -> int:
    """The most bytes a run's own ``.h5`` of ``model`` can take (twice the estimate, plus room for the saved config)."""
    from trainer.run.rundir import h5_size_estimate

    return 2 * h5_size_estimate(model) + 64 * 2**20


def write_arrays(path: Path, groups: dict[str, list[Any]]) -> None:
    """Arrays in order, as an uncompressed ``.npz`` (``model/000000``, ...), written atomically."""
    import numpy as np

    named = {f"{group}/{index:06d}": array for group, arrays in groups.items() for index, array in enumerate(arrays)}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **named)


def read_arrays(path: Path, grouped: bool = False) -> Any:
    """What ``write_arrays`` wrote: the ``model`` arrays in order (or every group, ``grouped``)."""
    import numpy as np

    _check_stored_arrays(Path(path))
    try:
        with np.load(path, allow_pickle=False) as data:
            groups: dict[str, list[Any]] = {}
            for key in sorted(data.files):
                group = key.split("/", 1)[0]
                groups.setdefault(group, []).append(data[key])
    except (OSError, ValueError, KeyError) as exc:
        raise RunDirError(f"{path} is unreadable ({exc}); this run cannot be resumed.") from None
    return groups if grouped else groups.get("model", [])


def _check_stored_arrays(path: Path) -> None:
    """Bound a weights ``.npz`` before NumPy allocates: members stored (not compressed), each array no bigger than its bytes.

    ``write_arrays`` stores every array uncompressed, so what an array may allocate is bounded by
    the file's own size; a member whose ``.npy`` header declares more (NumPy would allocate it
    first) or a compressed member (a zip bomb) is refused.
    """
    import zipfile

    import numpy as np

    def refuse(reason: str) -> RunDirError:
        return RunDirError(f"{path} is not a weights file trainer writes ({reason}); this run cannot be resumed.")

    try:
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.compress_type != zipfile.ZIP_STORED or info.file_size > size:
                    raise refuse(f"{info.filename} is compressed or larger than the file")
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version not in ((1, 0), (2, 0)):
                        raise refuse(f"{info.filename} is a .npy file of version {version}")
                    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read_header(member)
                if dtype.hasobject:
                    raise refuse(f"{info.filename} holds Python objects")
                needed = dtype.itemsize
                for dimension in shape:
                    needed *= dimension
                if needed > info.file_size:
                    raise refuse(f"{info.filename} declares {needed:,} bytes of data but holds {info.file_size:,}")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, SyntaxError, TypeError) as exc:
        raise refuse(str(exc)[:160] or type(exc).__name__) from None


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
