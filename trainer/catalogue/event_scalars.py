"""The ``tensorboard`` callback on JAX and PyTorch: epoch scalars written by TensorBoard's own writer, no TensorFlow.

Keras's ``TensorBoard`` callback writes through ``tf.summary`` and so needs TensorFlow. On the
other backends ``callbacks: [tensorboard]`` builds ``EpochScalars`` instead: the same layout as
Keras's (``<log_dir>/train`` and ``<log_dir>/validation``, tags ``epoch_<metric>``, step = epoch
index from 0), written with ``tensorboard.summary.Writer`` (the ``tensorboard`` package alone).
What needs TensorFlow (graphs, histograms, images, profiling, embeddings, per-batch scalars)
is refused with the key named.
"""
from __future__ import annotations

from typing import Any

from trainer.errors import ConfigError

# Keras TensorBoard parameters and the only value EpochScalars supports (write_graph: no graph to write, ignored).
TENSORFLOW_ONLY = {"histogram_freq": 0, "write_images": False, "write_steps_per_second": False, "update_freq": "epoch",
                   "profile_batch": 0, "embeddings_freq": 0, "embeddings_metadata": None}


def epoch_scalars_callback(params: dict[str, Any], key: str) -> Any:
    """An ``EpochScalars`` callback for ``params`` (Keras ``TensorBoard``'s), or ``ConfigError`` naming a TensorFlow-only setting."""
    import keras

    for name, allowed in TENSORFLOW_ONLY.items():
        if name in params and params[name] != allowed:
            raise ConfigError(
                f"{key}.{name}: {params[name]!r} needs the TensorFlow backend (tf.summary); on {keras.backend.backend()} the "
                f"tensorboard callback writes epoch scalars only: remove {name} or set backend: tensorflow."
            )
    return _epoch_scalars_class()(str(params["log_dir"]))


def _epoch_scalars_class():
    import keras

    class EpochScalars(keras.callbacks.Callback):
        """``epoch_<metric>`` scalars into ``<log_dir>/train`` and ``<log_dir>/validation`` (``val_`` metrics)."""

        def __init__(self, log_dir: str):
            super().__init__()
            self.log_dir = log_dir
            self._writers: dict[str, Any] = {}

        def _writer(self, side: str):
            if side not in self._writers:
                from pathlib import Path

                from tensorboard.summary import Writer

                folder = Path(self.log_dir) / side
                folder.mkdir(parents=True, exist_ok=True)
                self._writers[side] = Writer(str(folder))
            return self._writers[side]

        def on_epoch_end(self, epoch, logs=None):
            for name, value in (logs or {}).items():
                side, tag = ("validation", name[4:]) if name.startswith("val_") else ("train", name)
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    continue
                self._writer(side).add_scalar(f"epoch_{tag}", number, step=epoch)
            for writer in self._writers.values():
                writer.flush()

        def on_train_end(self, logs=None):
            for writer in self._writers.values():
                writer.close()
            self._writers = {}

    return EpochScalars
