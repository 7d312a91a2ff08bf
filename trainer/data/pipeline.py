"""The ``tf.data`` input pipeline: uint8 arrays in, float32 batches out, converted on the fly."""
from __future__ import annotations

import numpy as np
import tensorflow as tf


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
) -> tf.data.Dataset:
    """Batches of (float32 pixels 0..255, labels as ``encoding`` says[, per-example weights]).

    The data stays uint8 until batched. With ``epoch_variable`` the shuffle order is a function of
    (seed, the variable's value), so a resumed run sees the same order in epoch N as an
    uninterrupted one. ``drop_remainder`` drops a last partial batch (JAX splits batches evenly over devices).
    """
    columns = (x, y.astype(np.int32)) if weights is None else (x, y.astype(np.int32), np.asarray(weights, np.float32))
    if shuffle and epoch_variable is not None:
        dataset = epoch_shuffled_batches(columns, batch_size, seed or 0, epoch_variable, drop_remainder)
    else:
        dataset = tf.data.Dataset.from_tensor_slices(columns)
        if shuffle:
            dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)

    def convert(images, labels, *weights):
        images = tf.cast(images, tf.float32)
        if encoding == "onehot":
            labels = tf.one_hot(labels, num_classes, dtype=tf.float32)
        return (images, labels, *weights)

    return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def epoch_shuffled_batches(
    columns: tuple[np.ndarray, ...], batch_size: int, seed: int, epoch_variable: tf.Variable, drop_remainder: bool = False
) -> tf.data.Dataset:
    """Batches in an order drawn from the stateless seed (seed, epoch): reproducible per epoch, whatever ran before.

    Each batch is one vectorised gather of its indices, not ``batch_size`` separate elements.
    """
    tensors = tuple(tf.constant(column) for column in columns)
    count = len(columns[0])
    seed_part = tf.constant(int(seed) % (2**63), dtype=tf.int64)

    def order(_):
        keys = tf.random.stateless_uniform([count], seed=tf.stack([seed_part, tf.cast(epoch_variable.read_value(), tf.int64)]))
        return tf.argsort(keys)

    indices = tf.data.Dataset.from_tensors(0).map(order).unbatch().batch(batch_size, drop_remainder=drop_remainder)
    return indices.map(lambda index: tuple(tf.gather(tensor, index) for tensor in tensors))
