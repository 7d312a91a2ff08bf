"""Folder images streamed from disk: batches decoded as they are needed, in the same order as in memory.

The epoch's order is the same permutation as the in-memory pipeline's (``argsort`` of a
stateless uniform draw seeded by (seed, epoch)), so a folder split trains on the same batches
whether its pixels sit in memory, in a disk cache or are decoded every epoch, and a resumed
run sees the same batches as an uninterrupted one. Each batch is decoded by
``trainer.data.folder.decode_image`` (the function ``trainer predict`` uses), several batches
at once (``tf.data`` parallel map; Pillow releases the GIL while it decodes).

``data.cache: disk`` decodes each split once into a file of raw pixels (one fixed-size record
per image, written in chunks) and reads a batch's records with ``pread``; ``none`` decodes the
files every epoch. Either way memory holds a few batches, not the split. A large memory-mapped
array (the frozen backbone's feature cache) is read the same way, by rows.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import sys

import numpy as np

from trainer.data.folder import ImageFiles
from trainer.errors import DataError, RunDirError

# A memory-mapped array (the frozen backbone's features) larger than this is read batch by batch
# instead of loaded whole, so memory does not grow with the number of images.
STREAM_MEMMAP_OVER = 256 << 20
CHUNK = 512  # images decoded per write while the disk cache is filled


class RowFile:
    """Fixed-size rows of a file (raw pixels, or a ``.npy`` array's data), read by index with ``pread``.

    Reads go through the kernel's page cache but are not mapped into this process, so its
    resident memory holds only the batches being read.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: Any, offset: int = 0):
        self.path, self.shape, self.dtype, self.offset = Path(path), tuple(shape), np.dtype(dtype), int(offset)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        size, needed = os.fstat(self._fd).st_size, self.offset + self.shape[0] * self.row_bytes
        if size < needed:  # a short file would give short reads (and garbage rows) in the middle of training
            os.close(self._fd)
            self._fd = None
            raise RunDirError(f"{self.path} is {size:,} bytes but holds {self.shape} of {self.dtype} from byte {self.offset}, i.e. {needed:,}; it was truncated.")

    def read(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), *self.shape[1:]), self.dtype)
        flat = out.reshape(len(indices), -1).view(np.uint8)
        for position, index in enumerate(indices):
            flat[position] = np.frombuffer(os.pread(self._fd, self.row_bytes, self.offset + int(index) * self.row_bytes), np.uint8)
        return out

    def __len__(self) -> int:
        return self.shape[0]

    _close = staticmethod(os.close)  # kept on the class: at interpreter shutdown the module's ``os`` may be None already

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                self._close(fd)
            except OSError:
                pass


_WRITTEN: dict[Path, tuple[int, int, int, int]] = {}  # pixel files this process wrote: (device, inode, size, mtime)


class StreamedDataError(DataError):
    """A data file that went bad while tf.data streamed it (gone, replaced, undecodable): raised by ``surfacing_data_errors``."""


_FAILURES: list[DataError] = []  # DataErrors raised inside tf.data's threads, most recent last
_FAILURES_LOCK = threading.Lock()


def _recording_failures(read):
    """``read`` that notes a DataError before tf.data wraps it into its own error (see ``surfacing_data_errors``)."""
    def call(batch):
        try:
            return read(batch)
        except DataError as exc:
            with _FAILURES_LOCK:
                _FAILURES.append(exc)
                del _FAILURES[:-16]
            raise

    return call


@contextlib.contextmanager
def surfacing_data_errors():
    """Inside it, a DataError raised while a batch is decoded (an image gone, replaced or undecodable) comes out as itself.

    ``tf.numpy_function`` turns it into TensorFlow's ``UnknownError`` holding a Python traceback;
    the recorded DataError whose message that error carries is raised instead, without one.
    """
    try:
        yield
    except Exception as exc:
        tf = sys.modules.get("tensorflow")  # only the tf.data path wraps errors (the PyDataset path raises StreamedDataError itself)
        if tf is None or not isinstance(exc, tf.errors.OpError):
            raise
        text = str(exc)
        with _FAILURES_LOCK:
            found = next((failure for failure in reversed(_FAILURES) if failure.message in text), None)
            if found is not None:
                _FAILURES.remove(found)
        if found is None:
            raise
        raise StreamedDataError(found.message) from None


def pixel_file(files: ImageFiles, folder: Path) -> RowFile:
    """A split's decoded pixels on disk in ``folder`` (decoded once, in chunks, on first use), one record per image.

    Reused (by a later dataset of the same run) only while it is the very file this process
    wrote: same device, inode, size and modification time. Anything else there (a file left by
    another process, one changed since) is decoded again and replaced, never read as pixels.
    """
    from trainer.outputs import atomic_path

    key = hashlib.sha1("\n".join(map(str, files.paths)).encode("utf-8", "surrogateescape"))
    key.update(repr((files.image_size, files.color_mode)).encode())
    path = Path(folder) / f"{key.hexdigest()[:20]}.pixels"
    if _identity(path) is None or _identity(path) != _WRITTEN.get(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                for start in range(0, len(files), CHUNK):
                    handle.write(files.decode(range(start, min(start + CHUNK, len(files)))).tobytes())
        _WRITTEN[path] = _identity(path)
    return RowFile(path, files.shape, np.uint8)


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def memmap_rows(array: np.memmap) -> RowFile:
    """A memory-mapped ``.npy`` (the frozen backbone's feature cache) read by rows instead of mapped whole."""
    return RowFile(Path(array.filename), array.shape, array.dtype, array.offset)


def streamed_batches(
    source: "ImageFiles | RowFile", columns: tuple[np.ndarray, ...], *, batch_size: int, shuffle: bool, seed: int,
    epoch_variable: "tf.Variable | None", drop_remainder: bool, cache_dir: Path | None = None, stream: Any = None, tagged: bool = False,
) -> "tf.data.Dataset":
    """Batches of (rows of ``source``, *columns gathered alike), the rows read or decoded batch by batch.

    ``source``: a folder split's ``ImageFiles`` (``cache_dir``: where ``data.cache: disk`` keeps
    its decoded pixels; without it, or with ``cache: none``, the files are decoded every epoch),
    or a ``RowFile``. The TensorFlow backend's path (``trainer.data.batches.ArrayBatches`` is the others').
    Passes and their order as ``trainer.data.passes.tagged_batches`` says (``stream``: endless);
    ``tagged``: each batch keeps its (pass, start) in front.
    """
    import tensorflow as tf

    from trainer.data.passes import batch_tags, epoch_permutation, tagged_batches

    count = len(source)
    if isinstance(source, ImageFiles):
        read, dtype = (pixel_file(source, cache_dir).read if source.cache == "disk" and cache_dir is not None else source.decode), np.uint8
        read = _recording_failures(read)
    else:
        read, dtype = source.read, source.dtype
    full = count // batch_size * batch_size
    batches = count // batch_size + (1 if full < count and not drop_remainder else 0)

    @tf.autograph.experimental.do_not_convert
    def one_pass(number):
        order = epoch_permutation(count, seed, number) if shuffle else tf.range(count, dtype=tf.int32)
        indices = tf.data.Dataset.from_tensor_slices((*batch_tags(number, full // batch_size, batch_size), tf.reshape(order[:full], [-1, batch_size])))
        if full < count and not drop_remainder:
            indices = indices.concatenate(tf.data.Dataset.from_tensors((tf.cast(number, tf.int64), np.int64(full), order[full:])))
        return indices

    tensors = tuple(tf.constant(column) for column in columns)
    shape = source.shape[1:]
    tf_dtype = tf.as_dtype(dtype)

    @tf.autograph.experimental.do_not_convert
    def load(number, start, batch):
        rows = tf.numpy_function(read, [batch], tf_dtype, stateful=False)
        rows = tf.ensure_shape(rows, [None, *shape])
        return (number, start, rows, *(tf.gather(tensor, batch) for tensor in tensors))

    dataset = tagged_batches(one_pass, batches, epoch_variable, stream).map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset if tagged else dataset.map(lambda number, start, *batch: batch)
