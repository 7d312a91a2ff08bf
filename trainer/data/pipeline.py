"""The ``tf.data`` input pipeline: the stored arrays in, batches out, with no per-example work.

Images stay uint8 (as stored: no float64 or float32 copy of the dataset); the models cast and
scale them in their first layer, so the pipeline does no per-batch conversion either. One-hot
labels are made once, not per batch.

Every batch is made from its place: (the pass over the data it belongs to, its first position
in that pass). Inside the pipeline each batch carries that place with it (``tagged``: (pass,
start, *columns)), and the order (``epoch_order(count, seed, pass)``) and the augmentation
(``trainer.data.augment.augment_tagged``) are functions of it, never of a variable read while the
batch is produced: prefetch and parallel maps may run ahead of training (Keras keeps one iterator
of an endless dataset across epochs) without changing a batch.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import tensorflow as tf

from trainer.data.order import EpochOrders, EpochStream
from trainer.data.passes import _EPOCH_VARIABLES, batch_tags, epoch_permutation, tagged_batches
from trainer.data.streaming import STREAM_MEMMAP_OVER
from trainer.data.folder import ImageFiles

def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    encoding: str,
    num_classes: int,
    shuffle: bool = False,
    seed: int | None = None,
    weights: np.ndarray | None = None,
    epoch_variable: tf.Variable | None = None,
    drop_remainder: bool = False,
    cache_dir: Any = None,
    augment: Any = None,
    steps_per_epoch: int | None = None,
    initial_epoch: int | None = None,
    steps_per_execution: int = 1,
    augment_on_device: bool = False,
) -> tf.data.Dataset:
    """Batches of (pixels 0..255 as stored [augmented], labels as ``encoding`` says[, per-example weights]).

    One pass a time the dataset is iterated, numbered by ``epoch_variable`` read once at the pass's
    start (the checkpointer sets it at each epoch's start; without one, passes are counted as they
    start, exact within one process only): the shuffle order and ``augment`` (``data.augment``)
    are functions of (seed, that number). With ``steps_per_epoch`` (or ``initial_epoch``) the
    dataset is endless instead, read from epoch ``initial_epoch`` on: ``EpochStream`` says which
    batch each step gets, and the variable is not read at all. ``drop_remainder`` drops a last
    partial batch (JAX splits batches evenly over devices). ``x`` may be a folder split's
    ``ImageFiles``: its images are then streamed from disk (``trainer.data.streaming``), in the
    same order; ``cache_dir`` is where ``data.cache: disk`` keeps their decoded pixels. A large
    ``np.memmap`` is streamed by rows the same way. ``augment_on_device``: the batches are
    ((uint8 images, per-example params), labels[, weights]) for the training step to augment
    (``trainer.data.device_augment``) instead of augmented images.
    """
    labels = y.astype(np.int32)
    if encoding == "onehot":
        labels = np.eye(num_classes, dtype=np.float32)[labels]
    columns = (x, labels) if weights is None else (x, labels, np.asarray(weights, np.float32))
    count = len(x)
    batches = count // batch_size + (1 if count % batch_size and not drop_remainder else 0)
    endless = steps_per_epoch is not None or initial_epoch is not None
    stream = EpochStream(int(steps_per_epoch or batches), batches, int(initial_epoch or 0), int(steps_per_execution)) if endless else None
    if isinstance(x, ImageFiles) or (isinstance(x, np.memmap) and x.nbytes > STREAM_MEMMAP_OVER):
        from trainer.data.streaming import memmap_rows, streamed_batches

        tagged = streamed_batches(
            x if isinstance(x, ImageFiles) else memmap_rows(x), columns[1:], batch_size=batch_size, shuffle=shuffle, seed=seed or 0,
            epoch_variable=epoch_variable, drop_remainder=drop_remainder, cache_dir=cache_dir, stream=stream, tagged=True,
        )
    else:
        tagged = tagged_batches(pass_slices(columns, batch_size, shuffle, seed or 0, drop_remainder), batches, epoch_variable, stream)
    from trainer.data.augment import augment_tagged

    order_of = EpochOrders(count, seed or 0) if shuffle else None
    dataset = augment_tagged(tagged, augment, seed or 0, on_device=augment_on_device, order_of=order_of).prefetch(tf.data.AUTOTUNE)
    if epoch_variable is not None:
        _EPOCH_VARIABLES[dataset] = epoch_variable
    return dataset


def pass_slices(
    columns: tuple[np.ndarray, ...], batch_size: int, shuffle: bool, seed: int, drop_remainder: bool = False
) -> Callable[[tf.Tensor], tf.data.Dataset]:
    """Pass p of in-memory ``columns`` as tagged batches, in ``epoch_order(count, seed, p)`` (stored order without ``shuffle``).

    Once per pass the whole split is gathered into its order in one vectorised op and cut into
    batches by a reshape, so the pipeline does no per-example or per-batch work.
    """
    tensors = tuple(tf.constant(column) for column in columns)
    count = len(columns[0])
    full = count // batch_size * batch_size

    @tf.autograph.experimental.do_not_convert  # plain tensor code: converting it only costs start-up time
    def one_pass(number):
        ordered = tuple(tf.gather(tensor, epoch_permutation(count, seed, number)) for tensor in tensors) if shuffle else tensors
        batches = tf.data.Dataset.from_tensor_slices(
            (*batch_tags(number, full // batch_size, batch_size), *(tf.reshape(column[:full], [-1, batch_size, *column.shape[1:]]) for column in ordered))
        )
        if full < count and not drop_remainder:
            batches = batches.concatenate(tf.data.Dataset.from_tensors((tf.cast(number, tf.int64), np.int64(full), *(column[full:] for column in ordered))))
        return batches

    return one_pass



#END
