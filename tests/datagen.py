"""Write tiny, learnable datasets in the real published on-disk formats (for tests).

Each class draws a bright block at its own position over dim noise, so even a small MLP or a
nearest-centroid rule separates the classes after a glance.
"""
from __future__ import annotations

import gzip
import io
import math
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

from trainer.catalogue.datasets import CIFAR10_CLASSES, CIFAR100_CLASSES, CIFAR100_COARSE_CLASSES

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


# --------------------------------------------------------------------------- images


def class_pattern(
    label: int, num_classes: int, shape: tuple[int, ...], rng: np.random.Generator
) -> np.ndarray:
    """One uint8 image of ``shape``: noise in 0..40 plus a bright block where ``label`` says."""
    image = rng.integers(0, 41, size=shape)
    grid = math.ceil(math.sqrt(num_classes))
    height, width = shape[0], shape[1]
    row, col = divmod(label, grid)
    top, bottom = row * height // grid, (row + 1) * height // grid
    left, right = col * width // grid, (col + 1) * width // grid
    image[top:bottom, left:right] = rng.integers(200, 256, size=image[top:bottom, left:right].shape)
    return image.astype(np.uint8)


def make_labels(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Balanced int64 labels 0..num_classes-1 in random order."""
    return rng.permutation(np.arange(n) % num_classes).astype(np.int64)


def make_images(
    n: int, num_classes: int, shape: tuple[int, ...] = (28, 28), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of ``shape`` (uint8) with balanced labels (int64), reproducible by ``seed``."""
    rng = np.random.default_rng(seed)
    y = make_labels(n, num_classes, rng)
    x = np.stack([class_pattern(int(label), num_classes, shape, rng) for label in y])
    return x.reshape((n, *shape)), y


def _file_path(path: Path, default_name: str) -> Path:
    """``path`` itself when it names a file, else ``default_name`` inside that folder."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path.mkdir(parents=True, exist_ok=True)
        return path / default_name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------- Keras .npz


def write_mnist_npz(
    path: Path,
    n_train: int = 200,
    n_test: int = 50,
    seed: int = 0,
    num_classes: int = 10,
    label_offset: int = 0,
    shape: tuple[int, ...] = (28, 28),
) -> Path:
    """Write a Keras ``mnist.npz`` (x_train, y_train, x_test, y_test); labels shifted by offset."""
    path = _file_path(path, "mnist.npz")
    x_train, y_train = make_images(n_train, num_classes, shape, seed)
    x_test, y_test = make_images(n_test, num_classes, shape, seed + 1)
    np.savez(
        path,
        x_train=x_train,
        y_train=(y_train + label_offset).astype(np.uint8),
        x_test=x_test,
        y_test=(y_test + label_offset).astype(np.uint8),
    )
    return path


# --------------------------------------------------------------------------- IDX


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` (uint8) in the IDX format: magic 0x0000 08 <ndim>, big-endian dims, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x00000800 | array.ndim
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    """Write one IDX file, gzipped (``.gz`` appended) when ``gz``; returns the path written."""
    data = idx_bytes(array)
    path = Path(f"{path}.gz") if gz else Path(path)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_idx_dir(
    dir: Path, n_train: int = 200, n_test: int = 50, gz: bool = True, seed: int = 0
) -> Path:
    """Write the four MNIST IDX files into ``dir``; returns ``dir``."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    x_train, y_train = make_images(n_train, 10, (28, 28), seed)
    x_test, y_test = make_images(n_test, 10, (28, 28), seed + 1)
    write_idx(dir / "train-images-idx3-ubyte", x_train, gz)
    write_idx(dir / "train-labels-idx1-ubyte", y_train, gz)
    write_idx(dir / "t10k-images-idx3-ubyte", x_test, gz)
    write_idx(dir / "t10k-labels-idx1-ubyte", y_test, gz)
    return dir


# --------------------------------------------------------------------------- CIFAR


class Python2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle wrote it: bytes as ``str`` opcodes, numpy as numpy.core.

    Python 3 would write bytes as ``_codecs.encode`` calls; the published CIFAR files do not.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str

    def save_global(self, obj, name=None) -> None:
        module = getattr(obj, "__module__", "") or ""
        if module.startswith("numpy._core"):
            module = module.replace("numpy._core", "numpy.core")
            name = name or obj.__qualname__
            self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


def python2_pickle(value: object) -> bytes:
    """``value`` pickled the way the published CIFAR files are."""
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(value)
    return buffer.getvalue()


def _cifar_rows(x: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) images as the published (N, 3072) channel-first rows."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), -1))


def _cifar_batch(x: np.ndarray, labels: dict[bytes, list[int]], batch_label: str) -> bytes:
    """One pickled CIFAR batch dict with bytes keys, as in the published files."""
    batch = {
        b"batch_label": batch_label.encode(),
        **labels,
        b"data": _cifar_rows(x),
        b"filenames": [f"synthetic_{i:05d}.png".encode() for i in range(len(x))],
    }
    return python2_pickle(batch)


def cifar10_members(n_per_batch: int = 20, n_test: int = 20, seed: int = 0) -> dict[str, bytes]:
    """The files of ``cifar-10-batches-py`` (name -> bytes): 5 data batches, test, meta."""
    members = {}
    for index in range(1, 6):
        x, y = make_images(n_per_batch, 10, (32, 32, 3), seed + index)
        members[f"data_batch_{index}"] = _cifar_batch(
            x, {b"labels": y.tolist()}, f"training batch {index} of 5"
        )
    x, y = make_images(n_test, 10, (32, 32, 3), seed)
    members["test_batch"] = _cifar_batch(x, {b"labels": y.tolist()}, "testing batch 1 of 1")
    members["batches.meta"] = python2_pickle({
        b"num_cases_per_batch": n_per_batch,
        b"label_names": [name.encode() for name in CIFAR10_CLASSES],
        b"num_vis": 3072,
    })
    return members


def cifar100_members(n_train: int = 200, n_test: int = 100, seed: int = 0) -> dict[str, bytes]:
    """The files of ``cifar-100-python`` (name -> bytes): train, test, meta."""
    members = {}
    for name, n, split_seed in (("train", n_train, seed), ("test", n_test, seed + 1)):
        x, fine = make_images(n, 100, (32, 32, 3), split_seed)
        labels = {b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist()}
        members[name] = _cifar_batch(x, labels, f"{name}ing batch 1 of 1")
    members["meta"] = python2_pickle({
        b"fine_label_names": [name.encode() for name in CIFAR100_CLASSES],
        b"coarse_label_names": [name.encode() for name in CIFAR100_COARSE_CLASSES],
    })
    return members


def _write_members_dir(folder: Path, members: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in members.items():
        (folder / name).write_bytes(data)
    return folder


def _write_members_targz(path: Path, folder_name: str, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        folder = tarfile.TarInfo(folder_name)
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        for name, data in members.items():
            info = tarfile.TarInfo(f"{folder_name}/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def write_cifar10_dir(dir: Path, n_per_batch: int = 20, n_test: int = 20, seed: int = 0) -> Path:
    """Write ``dir/cifar-10-batches-py/``; returns that folder."""
    members = cifar10_members(n_per_batch, n_test, seed)
    return _write_members_dir(Path(dir) / "cifar-10-batches-py", members)


def write_cifar10_targz(
    path: Path, n_per_batch: int = 20, n_test: int = 20, seed: int = 0
) -> Path:
    """Write ``cifar-10-python.tar.gz`` (at ``path``, or inside it when a folder)."""
    path = _file_path(path, "cifar-10-python.tar.gz")
    members = cifar10_members(n_per_batch, n_test, seed)
    return _write_members_targz(path, "cifar-10-batches-py", members)


def write_cifar100_dir(dir: Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """Write ``dir/cifar-100-python/``; returns that folder."""
    members = cifar100_members(n_train, n_test, seed)
    return _write_members_dir(Path(dir) / "cifar-100-python", members)


def write_cifar100_targz(
    path: Path, n_train: int = 200, n_test: int = 100, seed: int = 0
) -> Path:
    """Write ``cifar-100-python.tar.gz`` (at ``path``, or inside it when a folder)."""
    path = _file_path(path, "cifar-100-python.tar.gz")
    members = cifar100_members(n_train, n_test, seed)
    return _write_members_targz(path, "cifar-100-python", members)


# --------------------------------------------------------------------------- image folders


def write_image_folders(
    root: Path,
    splits: tuple[str, ...] = ("train", "test"),
    classes: tuple[str, ...] = ("cat", "dog", "frog"),
    n_per_class: int = 6,
    size: tuple[int, int] = (40, 30),
    modes: tuple[str, ...] = ("RGB", "L"),
    formats: tuple[str, ...] = ("png", "jpg", "bmp"),
    seed: int = 0,
) -> Path:
    """Write ``root/<split>/<class>/*.<format>`` images, cycling sizes, modes and formats.

    ``size`` is PIL's (width, height); every other image is a few pixels larger, so readers
    must resize. Returns ``root``.
    """
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in splits:
        for label, class_name in enumerate(classes):
            folder = root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(n_per_class):
                width = size[0] + (index % 2) * 8
                height = size[1] + (index % 3) * 4
                pixels = class_pattern(label, len(classes), (height, width, 3), rng)
                image = Image.fromarray(pixels, "RGB").convert(modes[index % len(modes)])
                extension = formats[index % len(formats)]
                image.save(folder / f"{class_name}_{index:03d}.{extension}")
    return root
