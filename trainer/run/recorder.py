"""The callback that turns each epoch into a ``history.csv`` row and run events (Keras lazily)."""
from __future__ import annotations

import time
from typing import Any


def epoch_recorder(history: Any, events: Any, rows: list[dict[str, Any]], train_examples: int, phase: str | None = None):
    """A Keras callback: appends a history row per epoch (with learning rate, time, throughput) and tells ``events``.

    ``phase`` (``head``, ``fine_tune``) becomes a column after ``epoch`` when the run trains in phases.
    """
    import keras

    class EpochRecorder(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()
            events.on_epoch_start(epoch + 1, self.params.get("epochs"), self.params.get("steps"))

        def on_train_batch_end(self, batch, logs=None):
            events.on_progress(batch + 1, logs or {})

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self._start
            logs = dict(logs or {})
            row: dict[str, Any] = {"epoch": epoch + 1, **({"phase": phase} if phase else {})}
            keys = [k for k in logs if not k.startswith("val_") and k != "learning_rate"]
            keys += [k for k in logs if k.startswith("val_")]
            for key in keys:
                row[key] = float(logs[key])
            row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            row["epoch_seconds"] = round(seconds, 4)
            row["examples_per_second"] = round(train_examples / seconds, 1) if seconds > 0 else None
            rows.append(row)
            if history is not None:
                history.append(row)
            events.on_epoch_end(epoch + 1, dict(row))

    return EpochRecorder()


def after_first_epoch(function):
    """A Keras callback that calls ``function()`` once, when the first epoch of this ``fit`` has ended.

    By then the step functions are traced and compiled (Python work that holds the GIL), so what
    ``function`` starts on a background thread overlaps with native training code instead.
    """
    import keras

    class AfterFirstEpoch(keras.callbacks.Callback):
        called = False

        def on_epoch_end(self, epoch, logs=None):
            if not self.called:
                self.called = True
                function()

    return AfterFirstEpoch()
