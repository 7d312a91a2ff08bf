"""``data.augment``: random changes to training batches, on the ``tf.data`` side, seeded.

Keras preprocessing layers (RandomFlip, RandomRotation, RandomZoom, RandomTranslation,
RandomContrast) run inside the pipeline's ``map``, on whole batches, so the saved model stays a
plain classifier and validation, test, ``trainer eval`` and ``trainer predict`` never see them.
``crop: N`` pads by N pixels and crops back at a random place per image (Keras's RandomCrop
draws one place per batch, which is a much weaker augmentation).

Every random source is seeded from the run's seed and the map runs in order, so two runs with
the same seed see the same augmented batches. A resumed run continues from fresh generators:
its batches differ from an uninterrupted run's after the resume point.
"""
from __future__ import annotations

from typing import Any

import tensorflow as tf

# Added to the run's seed so the augmentation draws differ from the model's own (dropout, init).
SEED_OFFSET = 7919


def augmentation_steps(augment: Any, seed: int) -> list[Any]:
    """The Keras preprocessing layers ``augment`` asks for, each with its own seed, in the order they apply."""
    import keras

    layers: list[Any] = []
    base = int(seed) + SEED_OFFSET
    if augment.flip != "none":
        layers.append(keras.layers.RandomFlip(augment.flip, seed=base + 1))
    if augment.rotation:
        layers.append(keras.layers.RandomRotation(augment.rotation, seed=base + 2))
    if augment.zoom:
        layers.append(keras.layers.RandomZoom(augment.zoom, seed=base + 3))
    if augment.translate:
        layers.append(keras.layers.RandomTranslation(augment.translate, augment.translate, seed=base + 4))
    if augment.contrast:
        layers.append(keras.layers.RandomContrast(augment.contrast, value_range=(0, 255), seed=base + 5))
    return layers


def random_pad_crop(images: tf.Tensor, pad: int, generator: tf.random.Generator) -> tf.Tensor:
    """Zero-pad each image by ``pad`` pixels and cut it back to its size at a random place (one per image)."""
    batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = generator.uniform([batch, 2], minval=0, maxval=2 * pad + 1, dtype=tf.int32)
    rows = offsets[:, :1] + tf.range(height)[tf.newaxis, :]  # (batch, height)
    cols = offsets[:, 1:] + tf.range(width)[tf.newaxis, :]  # (batch, width)
    images = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(images, cols, axis=2, batch_dims=1)


def augment_dataset(dataset: tf.data.Dataset, augment: Any, seed: int) -> tf.data.Dataset:
    """``dataset`` (batches of images 0..255 [, labels, weights]) with the images augmented; as is when nothing is on."""
    if augment is None or not augment.active:
        return dataset
    layers = augmentation_steps(augment, seed)
    generator = tf.random.Generator.from_seed(int(seed) + SEED_OFFSET)

    def augment_images(images):
        greyscale = images.shape.rank == 3  # (batch, height, width): image layers need a channel axis
        images = tf.cast(images, tf.float32)
        if greyscale:
            images = images[..., tf.newaxis]
        if augment.crop:
            images = random_pad_crop(images, augment.crop, generator)
        for layer in layers:
            images = layer(images, training=True)
        return images[..., 0] if greyscale else images

    # One map call at a time, in order: the generators' draws then follow the batch order (reproducible).
    return dataset.map(lambda images, *rest: (augment_images(images), *rest)).prefetch(tf.data.AUTOTUNE)
