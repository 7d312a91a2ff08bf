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
) -> tf.data.Dataset:
    """Batches of (float32 pixels 0..255, labels as ``encoding`` says[, per-example weights]); the data stays uint8 until batched."""
    columns = (x, y.astype(np.int32)) if weights is None else (x, y.astype(np.int32), np.asarray(weights, np.float32))
    dataset = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)

    def convert(images, labels, *weights):
        images = tf.cast(images, tf.float32)
        if encoding == "onehot":
            labels = tf.one_hot(labels, num_classes, dtype=tf.float32)
        return (images, labels, *weights)

    return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
