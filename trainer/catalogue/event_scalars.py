"""The ``tensorboard`` callback on JAX and PyTorch: epoch scalars in TensorBoard's event files, no TensorFlow.

Keras's ``TensorBoard`` callback writes through ``tf.summary`` and so needs TensorFlow. On the
other backends ``callbacks: [tensorboard]`` builds ``EpochScalars`` instead: the same layout as
Keras's (``<log_dir>/train`` and ``<log_dir>/validation``, tags ``epoch_<metric>``, step = epoch
index from 0), written by ``EventFile`` with the ``tensorboard`` package's protos and plain file I/O.
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
            self._writers: dict[str, EventFile] = {}

        def _writer(self, side: str) -> "EventFile":
            if side not in self._writers:
                from pathlib import Path

                self._writers[side] = EventFile(Path(self.log_dir) / side)
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


class EventFile:
    """One TensorBoard event file (``events.out.tfevents.*``) written with plain file I/O: no TensorFlow.

    ``tensorboard.summary.Writer`` opens its file through ``tensorboard.compat.tf``, which imports
    TensorFlow wherever it is installed (measured: ``tensorflow`` in ``sys.modules`` after one
    ``add_scalar`` on JAX). The records are the same: TFRecord framing (``RecordWriter``, masked
    CRC-32C) around ``Event`` protos, a ``brain.Event:2`` header, and each scalar a float32 tensor
    tagged for the scalars plugin, as TensorFlow 2's ``tf.summary.scalar`` writes it. The file is
    created new (``x`` mode), never replacing one, inside the callback's folder in the run directory.
    """

    def __init__(self, folder) -> None:
        import os
        import socket
        import time

        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        folder.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{id(self)}.trainer"
        self._file = open(folder / name, "xb")
        self._records = RecordWriter(self._file)
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        self.flush()

    def _write(self, event) -> None:
        self._records.write(event.SerializeToString())

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        import time

        from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
        from tensorboard.plugins.scalar import metadata

        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[float(value)])
        tensor.tensor_shape.SetInParent()  # a scalar: a shape with no dimensions
        event = event_pb2.Event(wall_time=time.time(), step=int(step))
        event.summary.value.add(tag=tag, tensor=tensor, metadata=metadata.create_summary_metadata(display_name=tag, description=""))
        self._write(event)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
