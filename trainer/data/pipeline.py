"""The ``tf.data`` input pipeline: the stored arrays in, batches out, with no per-example work.

Images stay uint8 (as stored: no float64 or float32 copy of the dataset); the models cast and
scale them in their first layer, so the pipeline does no per-batch conversion either. One-hot
labels are made once, not per batch.
"""
from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import tensorflow as tf

from trainer.data.batches import STREAM_MEMMAP_OVER, epoch_order
from trainer.data.folder import ImageFiles

# The epoch variable each dataset made here reads: data.augment draws from (seed, epoch, position) with it.
_EPOCH_VARIABLES: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def epoch_variable_of(dataset: Any) -> Any:
    """The epoch variable ``make_dataset`` gave ``dataset`` (None when it was made without one)."""
    try:
        return _EPOCH_VARIABLES.get(dataset)
    except TypeError:  # not weakly referenceable: not one of ours
        return None


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
) -> tf.data.Dataset:
    """Batches of (pixels 0..255 as stored, labels as ``encoding`` says[, per-example weights]).

    With ``epoch_variable`` the shuffle order is a function of (seed, the variable's value), so a
    resumed run sees the same order in epoch N as an uninterrupted one. ``drop_remainder`` drops
    a last partial batch (JAX splits batches evenly over devices). ``x`` may be a folder split's
    ``ImageFiles``: its images are then streamed from disk (``trainer.data.streaming``), in the
    same order; ``cache_dir`` is where ``data.cache: disk`` keeps their decoded pixels. A large
    ``np.memmap`` is streamed by rows the same way.
    """
    labels = y.astype(np.int32)
    if encoding == "onehot":
        labels = np.eye(num_classes, dtype=np.float32)[labels]
    columns = (x, labels) if weights is None else (x, labels, np.asarray(weights, np.float32))
    if isinstance(x, ImageFiles) or (isinstance(x, np.memmap) and x.nbytes > STREAM_MEMMAP_OVER):
        from trainer.data.streaming import memmap_rows, streamed_batches

        dataset = streamed_batches(
            x if isinstance(x, ImageFiles) else memmap_rows(x), columns[1:], batch_size=batch_size, shuffle=shuffle, seed=seed or 0, epoch_variable=epoch_variable,
            drop_remainder=drop_remainder, cache_dir=cache_dir,
        )
    elif shuffle and epoch_variable is not None:
        dataset = epoch_shuffled_batches(columns, batch_size, seed or 0, epoch_variable, drop_remainder)
    else:
        dataset = tf.data.Dataset.from_tensor_slices(columns)
        if shuffle:
            dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    if epoch_variable is not None:
        _EPOCH_VARIABLES[dataset] = epoch_variable
    return dataset


def epoch_permutation(count: int, seed: int, epoch_variable: tf.Variable) -> tf.Tensor:
    """The order of the examples in epoch N (the variable's value): ``trainer.data.batches.epoch_order(count, seed, N)``.

    A function of (seed, N) only, so a resumed run sees the same order as an uninterrupted one; the
    in-memory and the streamed pipelines both take it, so every ``data.cache`` trains on the same
    batches, and so does the ``PyDataset`` path of the other backends (the same NumPy function).
    """
    order = tf.numpy_function(
        lambda epoch: epoch_order(count, seed, int(epoch)), [tf.cast(epoch_variable.read_value(), tf.int64)], tf.int32, stateful=False,
    )
    order.set_shape([count])
    return order


def epoch_shuffled_batches(
    columns: tuple[np.ndarray, ...], batch_size: int, seed: int, epoch_variable: tf.Variable, drop_remainder: bool = False
) -> tf.data.Dataset:
    """Batches in an order drawn from the stateless seed (seed, epoch): reproducible per epoch, whatever ran before.

    Once per epoch the whole split is gathered into the new order in one vectorised op and cut
    into batches by a reshape, so the pipeline does no per-example or per-batch work.
    """
    tensors = tuple(tf.constant(column) for column in columns)
    count = len(columns[0])
    full = count // batch_size * batch_size

    @tf.autograph.experimental.do_not_convert  # plain tensor code: converting it only costs start-up time
    def epoch(_):
        order = epoch_permutation(count, seed, epoch_variable)
        shuffled = tuple(tf.gather(tensor, order) for tensor in tensors)
        batches = tf.data.Dataset.from_tensor_slices(
            tuple(tf.reshape(column[:full], [-1, batch_size, *column.shape[1:]]) for column in shuffled)
        )
        if full < count and not drop_remainder:
            batches = batches.concatenate(tf.data.Dataset.from_tensors(tuple(column[full:] for column in shuffled)))
        return batches

    batches = count // batch_size + (1 if full < count and not drop_remainder else 0)
    # flat_map hides the length; stating it lets Keras count steps (and not warn that the input "ran out").
    return tf.data.Dataset.from_tensors(0).flat_map(epoch).apply(tf.data.experimental.assert_cardinality(batches))
