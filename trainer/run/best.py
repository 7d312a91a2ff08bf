"""Best and last: ``model.h5`` holds the best epoch by ``train.monitor``, ``last.h5`` the last epoch.

Why not Keras's ``ModelCheckpoint(save_best_only=True)``: it writes a whole ``.h5`` every time the
monitored value improves (a 23 MB CNN several times a run, in the training thread), and its state
(which epoch, which value) is not in trainer's checkpoint, so a resumed run would forget the best
epoch before the kill. ``BestEpoch`` keeps a copy of the best weights in memory and looks to the
checkpointer like ``early_stopping`` with ``restore_best_weights``: its ``best``/``best_epoch`` go
into ``checkpoint.json`` and its weights into ``checkpoint-bestI-epochNNNN.weights.npz``, written
by the background writer only when they change, so a kill and ``--resume`` keep the best epoch.

At the end (``Training.finish``) the last epoch's weights go to ``last.h5`` and the best ones to
``model.h5``, each written atomically; when the last epoch is the best there is one file,
``model.h5`` (``metrics.json``'s ``best.last_weights`` names which file holds the last epoch).
The weights are the ones validation measured: with ``train.ema`` the average (the averaging
callback swaps it in before this one sees the epoch's end).
"""
from __future__ import annotations

import math
from typing import Any

from trainer.readers.run_files import LAST_FILE  # noqa: F401 - imported from here too


class BestEpoch:
    """A Keras callback that remembers the best epoch's value and weights (built by ``best_epoch_callback``)."""


def best_epoch_callback(monitor: str, mode: str, keep_last: bool = False):
    """The callback: ``best`` (the value), ``best_epoch`` (1-based), ``best_weights`` (a copy), carried across fit phases.

    ``keep_last``: also copy each epoch's weights (``last_weights``), for runs where a callback
    (``early_stopping`` with ``restore_best_weights``) puts other weights into the model at the end.
    """
    import keras

    class BestEpochCallback(keras.callbacks.Callback, BestEpoch):
        restore_best_weights = True  # the checkpointer stores best_weights as it does early_stopping's

        def __init__(self):
            super().__init__()
            self.monitor, self.mode = monitor, mode
            self.best: Any = math.inf if mode == "min" else -math.inf
            self.best_epoch: int | None = None
            self.best_weights: list[Any] | None = None
            self.last_epoch: int | None = None
            self.last_weights: list[Any] | None = None

        def improves(self, value: float) -> bool:
            return value < self.best if self.mode == "min" else value > self.best

        def on_epoch_end(self, epoch, logs=None):
            self.last_epoch = epoch + 1
            if keep_last:
                self.last_weights = self.model.get_weights()
            value = (logs or {}).get(self.monitor)
            if value is None:
                return
            value = float(keras.ops.convert_to_numpy(value))
            if math.isfinite(value) and self.improves(value):  # a NaN epoch is never the best
                self.best, self.best_epoch = value, epoch + 1
                self.best_weights = self.model.get_weights()  # copies (numpy), taken before early_stopping may restore others

    return BestEpochCallback()


def best_record(callback: Any, epochs_completed: int) -> dict[str, Any] | None:
    """``metrics.json``'s ``best``: the monitor, its direction, the best epoch and value, and where the last epoch is."""
    if callback is None:
        return None
    epoch = callback.best_epoch
    return {
        "monitor": callback.monitor,
        "mode": callback.mode,
        "epoch": epoch,
        "value": callback.best if epoch is not None else None,
        "last_epoch": epochs_completed,
        "last_weights": LAST_FILE if keeps_last_apart(callback, epochs_completed) else "model.h5",
    }


def keeps_last_apart(callback: Any, epochs_completed: int) -> bool:
    """Whether the last epoch differs from the best one (then ``last.h5`` is written beside ``model.h5``)."""
    return callback is not None and callback.best_weights is not None and callback.best_epoch != epochs_completed


def best_epoch_for(config: Any, user_callbacks: list[Any]):
    """The run's ``BestEpoch`` callback for ``train.monitor`` (checked by ``plan_run`` already)."""
    from trainer.config.monitor import resolve_monitor

    monitor, mode = resolve_monitor(config)
    restores = any(getattr(callback, "restore_best_weights", False) for callback in user_callbacks)
    return best_epoch_callback(monitor, mode, keep_last=restores)


def last_weights_file(callback: Any, epochs_completed: int) -> str:
    """The file holding the last epoch once the run completed: ``last.h5``, or ``model.h5`` when the last epoch is the best."""
    return LAST_FILE if keeps_last_apart(callback, epochs_completed) else "model.h5"


def keep_last_then_use_best(model: Any, trained: Any, callback: Any, epochs_completed: int, run_dir: Any) -> None:
    """Write ``last.h5`` (the last epoch) when it is not the best, then put the best epoch's weights into ``trained``.

    ``model`` is what is saved, ``trained`` what fit trained (the head alone when features were
    cached; its layers are ``model``'s). A ``last.h5`` left from before a resume is removed when
    the last epoch is now the best, so the run directory never holds a stale one.
    """
    import contextlib
    import os
    from pathlib import Path

    from trainer.run.rundir import h5_size_estimate, save_model_h5, write_h5_atomically

    path = Path(run_dir) / LAST_FILE
    if keeps_last_apart(callback, epochs_completed):
        if callback.last_weights is not None:  # early_stopping restored other weights at the end: the last epoch's copy
            trained.set_weights(callback.last_weights)
        write_h5_atomically(path, save_model_h5(model), h5_size_estimate(model))
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    if callback is not None and callback.best_weights is not None:
        trained.set_weights(callback.best_weights)
