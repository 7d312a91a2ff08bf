"""Passes over the data in ``tf.data``: numbered by the epoch variable, each batch tagged with (pass, first position).

What the in-memory pipeline (``trainer.data.pipeline``), the streamed folder path
(``trainer.data.streaming``) and augmentation (``trainer.data.augment``) share; the order of a
pass is ``trainer.data.order.epoch_order``.
"""
from __future__ import annotations

import itertools
import weakref
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from trainer.data.order import EpochStream, epoch_order

# The epoch variable each dataset made here reads (``augment_dataset`` defaults to it).
_EPOCH_VARIABLES: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_ENDLESS = np.iinfo(np.int64).max


def epoch_variable_of(dataset: Any) -> Any:
    """The epoch variable ``make_dataset`` gave ``dataset`` (None when it was made without one)."""
    try:
        return _EPOCH_VARIABLES.get(dataset)
    except TypeError:  # not weakly referenceable: not one of ours
        return None


def tagged_batches(
    pass_batches: Callable[[tf.Tensor], tf.data.Dataset], batches: int, epoch_variable: Any = None, stream: EpochStream | None = None
) -> tf.data.Dataset:
    """The batches ``pass_batches(pass number)`` gives, tagged (pass, start, ...): one pass numbered by ``pass_numbers``, or
    the endless ``stream`` (epoch N: ``read_per_epoch`` batches from batch N * steps_per_epoch of the passes 0, 1, 2 ...)."""
    if stream is None or not batches:  # (no batch at all: an endless stream of empty passes would never yield)
        return pass_numbers(epoch_variable).flat_map(pass_batches).apply(tf.data.experimental.assert_cardinality(batches))
    per_epoch, read = np.int64(stream.steps_per_epoch), np.int64(stream.read_per_epoch)

    @tf.autograph.experimental.do_not_convert
    def epoch(number):
        first = number * per_epoch  # the epoch's first batch in the stream of passes
        passes = tf.data.Dataset.range(first // batches, _ENDLESS)
        return passes.flat_map(pass_batches).skip(first % batches).take(read)

    epochs = tf.data.Dataset.range(stream.initial_epoch, _ENDLESS).flat_map(epoch)
    return epochs.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))


def pass_numbers(epoch_variable: Any = None) -> tf.data.Dataset:
    """One element: the number of the pass that starts when it is read (the epoch variable's value then, or a count)."""
    start = tf.data.Dataset.from_tensors(np.int64(0))
    if epoch_variable is not None:
        return start.map(lambda _: tf.cast(epoch_variable.read_value(), tf.int64))
    counted = itertools.count()
    return start.map(lambda _: tf.ensure_shape(tf.numpy_function(lambda: np.int64(next(counted)), [], tf.int64, stateful=True), []))


def epoch_permutation(count: int, seed: int, epoch: tf.Tensor) -> tf.Tensor:
    """The order of the examples in pass ``epoch`` (an int64 tensor): ``trainer.data.order.epoch_order(count, seed, epoch)``.

    A function of (seed, epoch) only, so a resumed run sees the same order as an uninterrupted one; the
    in-memory and the streamed pipelines both take it, so every ``data.cache`` trains on the same
    batches, and so does the ``PyDataset`` path of the other backends (the same NumPy function).
    """
    order = tf.numpy_function(lambda number: epoch_order(count, seed, int(number)), [tf.cast(epoch, tf.int64)], tf.int32, stateful=False)
    order.set_shape([count])
    return order


def batch_tags(number: tf.Tensor, batches: int, batch_size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(the pass number, the first position) of each of a pass's ``batches`` batches."""
    return tf.fill([batches], tf.cast(number, tf.int64)), tf.range(batches, dtype=tf.int64) * batch_size


def tag_passes(dataset: tf.data.Dataset, epoch_variable: Any = None) -> tf.data.Dataset:
    """Any dataset of batches (images, ...) tagged (pass, start, images, ...): passes numbered by ``pass_numbers``,
    positions counted from each pass's start."""

    @tf.autograph.experimental.do_not_convert
    def one_pass(number):
        def count(start, element):
            return start + tf.cast(tf.shape(element[0])[0], tf.int64), (number, start, *element)

        return dataset.scan(np.int64(0), count)

    return pass_numbers(epoch_variable).flat_map(one_pass)
