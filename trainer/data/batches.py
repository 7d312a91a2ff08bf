"""Training and evaluation batches on any Keras backend: ``tf.data`` on TensorFlow, a ``keras.utils.PyDataset`` elsewhere.

``make_batches`` is what the run and ``trainer eval`` call. On the TensorFlow backend it builds
the ``tf.data`` pipeline (``trainer.data.pipeline``, measured fastest there); on JAX and PyTorch
it returns ``ArrayBatches``, a ``PyDataset`` over the same sources (in-memory arrays, a folder
split's ``ImageFiles`` streamed with ``data.cache: disk | none``, the frozen backbone's feature
cache read by rows), with the same labels, sample weights and augmentation, and no TensorFlow.

Why ``PyDataset`` and not Grain: Keras's ``fit`` takes it on every backend with nothing to
install (Grain is a separate package not carried by the machines this project reaches), and a
batch here is one gather of rows (or one ``pread`` / decode per image): the work a loader could
parallelise is already either trivial or done by ``ImageFiles``'s decode threads.

Both paths share one definition of epoch N's order (``epoch_order``: a pure function of (seed,
N)), read from the epoch counter the checkpointer sets at each epoch's start, so a resumed run
sees the same batches as an uninterrupted one on every backend. With ``train.steps_per_epoch``
both read one endless stream of passes, ``EpochStream``: step k of epoch N is batch
N * steps_per_epoch + k of it, whatever ran (or was prefetched) before.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

from trainer.data.order import EpochOrders, EpochStream
from trainer.data.streaming import STREAM_MEMMAP_OVER


def is_tensorflow_backend() -> bool:
    import keras

    return keras.backend.backend() == "tensorflow"


def needs_tf_data() -> bool:
    """tf.data feeds the batches: on the TensorFlow backend, and under a multi-process Keras distribution
    (``distribute.strategy: multi_worker`` on JAX), whose auto-sharding takes only a ``tf.data.Dataset``."""
    if is_tensorflow_backend():
        return True
    import keras

    distribution = keras.distribution.distribution()
    return bool(getattr(distribution, "_is_multi_process", False) and getattr(distribution, "auto_shard_dataset", True))


class EpochCounter:
    """The epoch whose order the batches follow, outside TensorFlow: what the checkpointer ``assign``s at each epoch's start."""

    def __init__(self, value: int = 0):
        self._value = int(value)

    def assign(self, value: Any) -> None:
        self._value = int(value)

    def read_value(self) -> int:
        return self._value

    def numpy(self) -> int:
        return self._value


def epoch_counter() -> Any:
    """A ``tf.Variable`` on TensorFlow (the ``tf.data`` pipeline reads it in its graph), else an ``EpochCounter``."""
    if needs_tf_data():
        import tensorflow as tf

        return tf.Variable(0, dtype=tf.int64, trainable=False)
    return EpochCounter()


def _keras_py_dataset():
    import keras

    return keras.utils.PyDataset


def make_batches(
    x: Any, y: np.ndarray, *, batch_size: int, encoding: str, num_classes: int, shuffle: bool = False, seed: int | None = None,
    weights: np.ndarray | None = None, epoch_variable: Any = None, drop_remainder: bool = False, cache_dir: Any = None,
    augment: Any = None, repeat: bool = False, steps_per_epoch: int | None = None, initial_epoch: int = 0,
    steps_per_execution: int = 1, augment_on_device: bool = False,
) -> Any:
    """Batches of (pixels 0..255 [augmented], labels as ``encoding`` says[, weights]) for ``fit``/``evaluate``/``predict``.

    ``augment`` (``data.augment``) applies to these batches (training only); with ``augment_on_device``
    the batches are ((uint8 images, per-example params), labels[, weights]) and the training step
    augments them (``trainer.data.device_augment``); ``repeat`` makes the
    input endless (``train.steps_per_epoch``: ``steps_per_epoch``; ``EpochStream``), read from
    ``initial_epoch`` on by a model compiled with ``steps_per_execution``. See
    ``trainer.data.pipeline.make_dataset`` for the rest.
    """
    settings = dict(
        batch_size=batch_size, encoding=encoding, num_classes=num_classes, shuffle=shuffle, seed=seed, weights=weights,
        epoch_variable=epoch_variable, drop_remainder=drop_remainder, cache_dir=cache_dir, augment=augment,
        augment_on_device=augment_on_device,
    )
    if needs_tf_data():
        from trainer.data.pipeline import make_dataset

        stream = dict(steps_per_epoch=steps_per_epoch, initial_epoch=initial_epoch, steps_per_execution=steps_per_execution) if repeat else {}
        return make_dataset(x, y, **settings, **stream)
    return ArrayBatches(x, y, repeat=repeat, steps_per_epoch=steps_per_epoch, **settings)


def labels_for(y: np.ndarray, encoding: str, num_classes: int) -> np.ndarray:
    """Labels as the loss takes them: int32 class indices, or one-hot float32 rows (made once, not per batch)."""
    labels = np.asarray(y).astype(np.int32)
    return np.eye(num_classes, dtype=np.float32)[labels] if encoding == "onehot" else labels


class ArrayBatches(_keras_py_dataset()):
    """A ``keras.utils.PyDataset`` of (rows [augmented], labels[, weights]) in epoch N's order; no TensorFlow.

    Rows come from an array (gathered), a folder split's ``ImageFiles`` (decoded, or read from the
    ``data.cache: disk`` pixel file) or a large memory-mapped array (read by rows). A data file that
    goes bad while it is read raises ``StreamedDataError`` naming it, as on the ``tf.data`` path.
    """

    def __init__(
        self, x: Any, y: np.ndarray, *, batch_size: int, encoding: str, num_classes: int, shuffle: bool = False,
        seed: int | None = None, weights: np.ndarray | None = None, epoch_variable: Any = None, drop_remainder: bool = False,
        cache_dir: Any = None, augment: Any = None, repeat: bool = False, steps_per_epoch: int | None = None,
        augment_on_device: bool = False,
    ):
        from trainer.data.folder import ImageFiles

        super().__init__(workers=1, use_multiprocessing=False)
        labels = labels_for(y, encoding, num_classes)
        self.columns = (labels,) if weights is None else (labels, np.asarray(weights, np.float32))
        self.count, self.batch_size = len(x), int(batch_size)
        self.shuffle, self.seed, self.epoch_variable, self.repeat = shuffle, int(seed or 0), epoch_variable, repeat
        self.augment = augment if augment is not None and augment.active else None
        self.on_device = augment_on_device and self.augment is not None
        self.streamed = isinstance(x, ImageFiles)
        if self.streamed:
            from trainer.data.streaming import pixel_file

            self.read = pixel_file(x, cache_dir).read if x.cache == "disk" and cache_dir is not None else x.decode
        elif isinstance(x, np.memmap) and x.nbytes > STREAM_MEMMAP_OVER:
            from trainer.data.streaming import memmap_rows

            self.read = memmap_rows(x).read
        else:
            array = np.asarray(x)
            self.read = array.__getitem__  # one gather of the batch's rows
        full = self.count // self.batch_size
        self.batches = full + (1 if self.count % self.batch_size and not drop_remainder else 0)
        self._orders = EpochOrders(self.count, self.seed)
        self._lock = threading.Lock()
        self._passes = -1  # without an epoch counter: passes counted as they start (exact within one process only)
        self._stream = EpochStream(int(steps_per_epoch), self.batches) if steps_per_epoch and self.batches else None
        self._epoch_start: tuple[int, int] | None = None  # (epoch, the first index Keras asked for in it)

    @property
    def num_batches(self) -> int | None:
        return None if self.repeat else self.batches

    def __len__(self) -> int:
        return self.batches

    def _epoch(self, index: int) -> int:
        if self.epoch_variable is not None:
            return int(self.epoch_variable.read_value())
        if index == 0:
            self._passes += 1
        return max(self._passes, 0)

    def _order(self, epoch: int) -> np.ndarray | None:
        return self._orders(epoch) if self.shuffle else None

    def _place(self, index: int) -> tuple[int, int]:
        """(the pass over the data whose order and augmentation apply, the batch within it) for Keras's ``index``.

        Endless (``train.steps_per_epoch``) with an epoch counter: step k of epoch N is batch
        N * steps_per_epoch + k of the stream of passes, so a resumed run continues the very stream
        an uninterrupted one reads (Keras's own index runs on across epochs, and restarts on resume).
        """
        if not self.repeat:
            if not 0 <= index < self.batches:
                raise IndexError(index)
            return self._epoch(index), index
        if self.epoch_variable is None or self._stream is None:
            return self._epoch(index % self.batches), index % self.batches
        epoch = int(self.epoch_variable.read_value())
        with self._lock:
            if self._epoch_start is None or self._epoch_start[0] != epoch:
                self._epoch_start = (epoch, index)
            step = index - self._epoch_start[1]
        return self._stream.place(epoch, step)

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        from trainer.data.streaming import StreamedDataError
        from trainer.errors import DataError

        epoch, index = self._place(int(index))
        start = index * self.batch_size
        stop = min(start + self.batch_size, self.count)
        order = self._order(epoch)
        indices = np.arange(start, stop, dtype=np.int64) if order is None else order[start:stop]
        try:
            rows = self.read(indices)
        except DataError as exc:
            if self.streamed:  # a file that went bad mid-run: the run fails and keeps its checkpoints
                raise StreamedDataError(exc.message) from None
            raise
        columns = [column[indices] for column in self.columns]
        if self.on_device:  # the pixels as stored (uint8) and the numbers the training step augments them with
            from trainer.data.augment import device_params

            params = device_params(self.augment, self.seed, epoch, np.arange(start, stop), rows.shape[1], rows.shape[2], indices)
            return ((rows, params), *columns)
        if self.augment is not None:
            from trainer.data.augment import augment_examples

            rows, columns[0] = augment_examples(rows, columns[0], self.augment, self.seed, epoch, np.arange(start, stop), indices)
        return (rows, *columns)
