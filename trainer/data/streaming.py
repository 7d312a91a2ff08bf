"""Folder images streamed from disk: batches decoded as they are needed, in the same order as in memory.

The epoch's order is the same permutation as the in-memory pipeline's (``argsort`` of a
stateless uniform draw seeded by (seed, epoch)), so a folder split trains on the same batches
whether its pixels sit in memory, in a disk cache or are decoded every epoch, and a resumed
run sees the same batches as an uninterrupted one. Each batch is decoded by
``trainer.data.folder.decode_image`` (the function ``trainer predict`` uses), several batches
at once (``tf.data`` parallel map; Pillow releases the GIL while it decodes).

``data.cache: disk`` decodes each split once into a file of raw pixels (one fixed-size record
per image, written in chunks) and reads a batch's records with ``pread``; ``none`` decodes the
files every epoch. Either way memory holds a few batches, not the split.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from trainer.data.folder import ImageFiles

CHUNK = 512  # images decoded per write while the disk cache is filled


class PixelFile:
    """A split's decoded pixels on disk, one ``image_bytes`` record per image, read by index."""

    def __init__(self, files: ImageFiles, folder: Path):
        self.files = files
        key = hashlib.sha1("\n".join(map(str, files.paths)).encode("utf-8", "surrogateescape"))
        key.update(repr((files.image_size, files.color_mode)).encode())
        self.path = Path(folder) / f"{key.hexdigest()[:20]}.pixels"
        if not self.path.exists():
            self._fill(Path(folder))
        self._fd = os.open(self.path, os.O_RDONLY)

    def _fill(self, folder: Path) -> None:
        from trainer.run.rundir import atomic_path

        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as handle:
                for start in range(0, len(self.files), CHUNK):
                    handle.write(self.files.decode(range(start, min(start + CHUNK, len(self.files)))).tobytes())

    def read(self, indices: np.ndarray) -> np.ndarray:
        size = self.files.image_bytes
        out = np.empty((len(indices), *self.files.shape[1:]), np.uint8)
        flat = out.reshape(len(indices), size)
        for position, index in enumerate(indices):
            flat[position] = np.frombuffer(os.pread(self._fd, size, int(index) * size), np.uint8)
        return out

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def streamed_batches(
    files: ImageFiles, columns: tuple[np.ndarray, ...], *, batch_size: int, shuffle: bool, seed: int,
    epoch_variable: tf.Variable | None, drop_remainder: bool, cache_dir: Path | None = None,
) -> tf.data.Dataset:
    """Batches of (uint8 images, *columns gathered alike) for an ``ImageFiles`` split.

    ``cache_dir``: where ``data.cache: disk`` keeps the decoded pixels (without it, or with
    ``cache: none``, the files are decoded every epoch).
    """
    count = len(files)
    if files.cache == "disk" and cache_dir is not None:
        read = PixelFile(files, cache_dir).read
    else:
        read = files.decode
    if shuffle and epoch_variable is not None:
        seed_part = tf.constant(int(seed) % (2**63), dtype=tf.int64)

        @tf.autograph.experimental.do_not_convert
        def order(_):
            keys = tf.random.stateless_uniform([count], seed=tf.stack([seed_part, tf.cast(epoch_variable.read_value(), tf.int64)]))
            return tf.data.Dataset.from_tensor_slices(tf.argsort(keys))

        indices = tf.data.Dataset.from_tensors(0).flat_map(order)
    else:
        indices = tf.data.Dataset.range(count)
        if shuffle:
            indices = indices.shuffle(count, seed=seed, reshuffle_each_iteration=True)
        indices = indices.map(lambda i: tf.cast(i, tf.int32))
    tensors = tuple(tf.constant(column) for column in columns)
    shape = files.shape[1:]

    def pixels(batch: np.ndarray) -> np.ndarray:
        return read(batch)

    @tf.autograph.experimental.do_not_convert
    def load(batch):
        images = tf.numpy_function(pixels, [batch], tf.uint8, stateful=False)
        images = tf.ensure_shape(images, [None, *shape])
        return (images, *(tf.gather(tensor, batch) for tensor in tensors))

    batches = count // batch_size + (1 if count % batch_size and not drop_remainder else 0)
    dataset = indices.batch(batch_size, drop_remainder=drop_remainder).map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.apply(tf.data.experimental.assert_cardinality(batches))
