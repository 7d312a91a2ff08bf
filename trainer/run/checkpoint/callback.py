"""The Keras callback that checkpoints every epoch and restores a resumed run's state (Keras imported inside functions).
"""
from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path
from typing import Any

from trainer.readers.run_files import CHECKPOINT_FILE, CHECKPOINT_VERSION
from trainer.run.best import BestEpoch
from trainer.run.rundir import MODEL_FILE, atomic_write_json
from trainer.run.checkpoint.resume import ResumeState, read_checkpoint_json
from trainer.run.checkpoint.state import h5_read_limit, load_training_state, read_arrays, training_state
from trainer.run.checkpoint.writer import BEST_WEIGHTS_KEY, CheckpointWriter


# The attributes of Keras callbacks that carry state from epoch to epoch.
CALLBACK_STATE = ("wait", "best", "best_epoch", "stopped_epoch", "cooldown_counter")


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
