"""Readers of the published on-disk dataset formats: Keras .npz, MNIST IDX and CIFAR pickles.

NumPy and the standard library only: importing this module must stay cheap and must not pull in
TensorFlow. Every reader returns the same ``Splits`` (uint8 images with a channel axis, int64
labels) and reports bad data as a ``DataError`` naming the file, what it found and what is allowed.
"""
from __future__ import annotations

import gzip
import math
import pickle
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from trainer.errors import DataError
from trainer.catalogue.datasets import FORMAT_DESCRIPTIONS, get_dataset_info
from trainer.readers.decoders import array_limit, size_text

SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass
class Splits:
    """Train and test arrays of one dataset, as every reader returns them."""

    x_train: np.ndarray  # uint8, (N, H, W, C)
    y_train: np.ndarray  # int64, (N,)
    x_test: np.ndarray  # uint8, (M, H, W, C)
    y_test: np.ndarray  # int64, (M,)
    class_names: list[str] | None = None  # from the file's metadata when the format has it
    notices: list[str] = field(default_factory=list)  # conversions made on the way (one-hot labels read as integers)


# --------------------------------------------------------------------------- normalisation


def normalize_images(x: np.ndarray, source: str) -> np.ndarray:
    """Images as contiguous uint8 (N, H, W, C); floats in [0, 1] are scaled to [0, 255]."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4:
        raise DataError(
            f"{source}: images have shape {x.shape}; expected (N, height, width) "
            "or (N, height, width, channels)."
        )
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if np.issubdtype(x.dtype, np.floating):
        x = _float_pixels_to_0_255(x, source)
    elif not np.issubdtype(x.dtype, np.integer):
        raise DataError(
            f"{source}: images have dtype {x.dtype}; expected unsigned 8-bit integers "
            "(or other integers in 0..255, or floats in 0..1 or 0..255)."
        )
    if x.size and (x.min() < 0 or x.max() > 255):
        raise DataError(
            f"{source}: pixel values range from {x.min()} to {x.max()}; "
            "expected 0..255 (or floats in 0..1)."
        )
    return np.ascontiguousarray(x.astype(np.uint8))


def _float_pixels_to_0_255(x: np.ndarray, source: str) -> np.ndarray:
    """Float pixels rounded onto the 0..255 scale; NaN or infinity is refused."""
    not_finite = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    if not_finite:
        raise DataError(
            f"{source}: {not_finite} pixel value(s) are NaN or infinite; "
            "expected finite numbers in 0..255 (or 0..1)."
        )
    if x.size and x.max() <= 1.0:  # already scaled to [0, 1] for training
        x = x * 255.0
    return np.rint(x)


def normalize_labels(y: np.ndarray, source: str, notices: list[str] | None = None) -> np.ndarray:
    """Labels as int64 (N,); accepts (N,), (N, 1), integral floats and one-hot (N, C) rows (said in ``notices``)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2 and y.shape[1] > 1 and _is_one_hot(y):
        if notices is not None:
            notices.append(
                f"{source}: the labels are one-hot rows ({y.shape[0]:,} x {y.shape[1]}); read as class indices 0..{y.shape[1] - 1} "
                "(labels.encoding decides what the loss gets)."
            )
        return np.argmax(y, axis=1).astype(np.int64)
    if y.ndim != 1:
        raise DataError(
            f"{source}: labels have shape {y.shape}; expected (N,), (N, 1) "
            "or one-hot (N, classes) rows of 0/1 that each sum to 1."
        )
    if np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating):
        not_integral = int(np.count_nonzero(~np.isfinite(y) | (y != np.round(y))))
        if not_integral:
            raise DataError(
                f"{source}: {not_integral} label(s) are not whole numbers; "
                "expected integer class indices."
            )
        return y.astype(np.int64)
    raise DataError(f"{source}: labels have dtype {y.dtype}; expected integer class indices.")


def _is_one_hot(y: np.ndarray) -> bool:
    """True when every row holds only 0s and 1s and sums to exactly 1."""
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        return False
    return bool(np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all())


def check_lengths(x: np.ndarray, y: np.ndarray, what: str, source: str) -> None:
    """Refuse images and labels of one split ("train" or "test") whose counts disagree."""
    if len(x) != len(y):
        raise DataError(
            f"{source}: x_{what} has {len(x)} examples but y_{what} has {len(y)}; "
            "expected one label per image."
        )


def _assemble(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    sources: dict[str, str],
    class_names: list[str] | None = None,
) -> Splits:
    """Normalise raw arrays into ``Splits``; ``sources`` names the file behind each key."""
    notices: list[str] = []
    x_train = normalize_images(train[0], sources["x_train"])
    y_train = normalize_labels(train[1], sources["y_train"], notices)
    x_test = normalize_images(test[0], sources["x_test"])
    y_test = normalize_labels(test[1], sources["y_test"], notices)
    check_lengths(x_train, y_train, "train", sources["y_train"])
    check_lengths(x_test, y_test, "test", sources["y_test"])
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{sources['x_test']}: test images have shape {x_test.shape[1:]} but training "
            f"images have {x_train.shape[1:]}; expected the same image shape in both splits."
        )
    return Splits(x_train, y_train, x_test, y_test, class_names, notices)


# --------------------------------------------------------------------------- Keras .npz


def load_npz(path: Path) -> Splits:
    """Read a Keras ``mnist.npz``-style archive with x_train, y_train, x_test, y_test (sizes checked before inflating)."""
    from trainer.readers.decoders import read_npz

    path = Path(path)
    arrays = read_npz(path, SPLIT_KEYS, expected=FORMAT_DESCRIPTIONS["npz"])
    sources = {key: f"{path} [{key}]" for key in SPLIT_KEYS}
    return _assemble(
        (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"]), sources
    )


# --------------------------------------------------------------------------- IDX (MNIST)

# The third byte of an IDX magic number says how the payload is stored (big-endian).
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

GZIP_MAGIC = b"\x1f\x8b"


MAX_IDX_DIMENSIONS = 4  # MNIST-style files hold images (3) or labels (1)


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (gzipped or not) into an array of its declared dtype and shape.

    The header is checked before the payload is read, and exactly the declared number of bytes is
    read (a gzip bomb or a lying header costs no more memory than the shape it declares).
    """
    path = Path(path)
    try:
        with open(path, "rb") as probe:
            gzipped = probe.read(2) == GZIP_MAGIC
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as handle:
            return _read_idx_stream(handle, path)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DataError(f"{path}: cannot be read or decompressed ({error}).") from None


def _read_idx_stream(handle: BinaryIO, path: Path) -> np.ndarray:
    raw = handle.read(4)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(
            f"{path}: not an IDX file (header bytes {raw[:4].hex() or 'missing'}); "
            "expected 00 00, a type code (08 for unsigned bytes) and the number of dimensions."
        )
    dtype, ndim = IDX_DTYPES[raw[2]], raw[3]
    if not 1 <= ndim <= MAX_IDX_DIMENSIONS:
        raise DataError(f"{path}: the header declares {ndim} dimensions; an IDX image or label file has 1 to {MAX_IDX_DIMENSIONS}.")
    header_size = 4 + 4 * ndim
    dims = handle.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataError(
            f"{path}: the header declares {ndim} dimension(s), needing {header_size} bytes, "
            f"but the file has only {4 + len(dims)} bytes."
        )
    shape = tuple(int(size) for size in np.frombuffer(dims, ">u4", count=ndim))
    expected = math.prod(shape) * dtype.itemsize  # exact: no int64 overflow
    limit = array_limit()
    if expected > limit:
        raise DataError(
            f"{path}: the header declares shape {shape} of {dtype.name}, i.e. {size_text(expected)} of data, more than "
            f"the {size_text(limit)} trainer decodes from one file; refused before reading (the header is truncated or garbled, or the data needs splitting)."
        )
    payload = bytearray()
    while len(payload) <= expected:  # chunk by chunk: memory follows the bytes really there, never the header's claim
        chunk = handle.read(min(IDX_CHUNK, expected + 1 - len(payload)))
        if not chunk:
            break
        payload += chunk
    if len(payload) != expected:
        found = "more" if len(payload) > expected else len(payload)
        raise DataError(
            f"{path}: the header declares shape {shape} of {dtype.name}, i.e. {expected} bytes "
            f"of data, but the file holds {found}; it is truncated or garbled."
        )
    values = np.frombuffer(payload, dtype).reshape(shape)
    return values.astype(dtype.newbyteorder("="))  # a native, writable copy


IDX_CHUNK = 16 * 2**20


def _find_idx_files(folder: Path) -> dict[str, Path]:
    """The IDX files present in ``folder``, by split key (plain name or ``.gz``)."""
    found = {}
    for key, name in IDX_FILES.items():
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
    return found


def load_idx_dir(path: Path) -> Splits:
    """Read the four MNIST / Fashion-MNIST IDX files (gzipped or not) from a folder."""
    path = Path(path)
    files = _find_idx_files(path) if path.is_dir() else {}
    missing = [IDX_FILES[key] for key in IDX_FILES if key not in files]
    if missing:
        raise DataError(
            f"{path}: missing IDX file(s) {', '.join(missing)} (each may end in .gz); "
            f"found {_describe_contents(path)}."
        )
    arrays = {key: read_idx(file) for key, file in files.items()}
    sources = {key: str(file) for key, file in files.items()}
    return _assemble(
        (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"]), sources
    )


# --------------------------------------------------------------------------- CIFAR pickles


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its batches and which pickle keys it uses."""

    folder: str
    train_members: tuple[str, ...]
    test_members: tuple[str, ...]
    meta_member: str
    labels_key: bytes
    names_key: bytes

    @property
    def members(self) -> tuple[str, ...]:
        return (*self.train_members, *self.test_members, self.meta_member)


CIFAR_LAYOUTS = {
    "cifar10": CifarLayout(
        folder="cifar-10-batches-py",
        train_members=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_members=("test_batch",),
        meta_member="batches.meta",
        labels_key=b"labels",
        names_key=b"label_names",
    ),
    "cifar100": CifarLayout(
        folder="cifar-100-python",
        train_members=("train",),
        test_members=("test",),
        meta_member="meta",
        labels_key=b"fine_labels",
        names_key=b"fine_label_names",
    ),
}

CIFAR_SIDE = 32
CIFAR_ROW_BYTES = 3 * CIFAR_SIDE * CIFAR_SIDE


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches, refusing any global other than the few numpy arrays need.

    The published files are Python-2 pickles; a plain ``pickle.load`` would run whatever code
    a tampered file names, so only array reconstruction (and bytes decoding) is allowed.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in protocol-2 pickles
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle_dict(stream: BinaryIO, source: str, size: int) -> dict:
    """One CIFAR pickle of ``size`` bytes (a dict with bytes keys), or a DataError naming ``source``.

    The member's size is bounded before it is read, and the arrays it unpickles into may not hold
    more bytes than the member itself (``numpy.ndarray(shape)`` would allocate any size it is given).
    """
    limit = array_limit()
    if size > limit:
        raise DataError(f"{source}: {size_text(size)}, more than the {size_text(limit)} trainer decodes from one file; not a CIFAR batch.")
    try:
        value = _CifarUnpickler(stream, encoding="bytes").load()
    except Exception as error:  # pickle raises many types on garbled input
        raise DataError(
            f"{source}: cannot be unpickled as a CIFAR batch ({type(error).__name__}: {str(error)[:160]})."
        ) from None
    if not isinstance(value, dict):
        raise DataError(f"{source}: holds a {type(value).__name__}; expected a dict.")
    held = sum(item.nbytes for item in value.values() if isinstance(item, np.ndarray))
    if held > size + 2**20:
        raise DataError(f"{source}: its arrays declare {size_text(held)}, more than the {size_text(size)} file holds; it is garbled.")
    return value


def _require_keys(batch: dict, keys: tuple[bytes, ...], source: str) -> None:
    """Refuse a CIFAR dict that lacks any of ``keys``."""
    missing = [key.decode() for key in keys if key not in batch]
    if missing:
        found = ", ".join(str(key) for key in batch) or "nothing"
        raise DataError(f"{source}: missing key(s) {', '.join(missing)}; found {found}.")


def _cifar_batch(batch: dict, labels_key: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) and raw labels from one unpickled CIFAR batch."""
    _require_keys(batch, (b"data", labels_key), source)
    data, labels = batch[b"data"], batch[labels_key]
    if not isinstance(data, np.ndarray) or not isinstance(labels, (np.ndarray, list, tuple)):
        raise DataError(
            f"{source}: data is a {type(data).__name__} and {labels_key.decode()} a {type(labels).__name__}; "
            "expected a NumPy array of pixel rows and a list of class indices."
        )
    try:
        labels = np.asarray(labels)
    except (ValueError, TypeError, OverflowError) as error:
        raise DataError(f"{source}: {labels_key.decode()} is not a flat list of class indices ({error}).") from None
    if data.ndim != 2 or data.shape[1] != CIFAR_ROW_BYTES:
        raise DataError(
            f"{source}: data has shape {data.shape}; expected (N, {CIFAR_ROW_BYTES}) "
            "rows of 32x32 pixels in channel-first order."
        )
    images = data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).transpose(0, 2, 3, 1)
    return images, labels


MemberOpener = Callable[[str], BinaryIO]


def _find_cifar_folder(path: Path, layout: CifarLayout) -> Path | None:
    """The folder holding ``layout``'s batches: ``path`` itself or its named subfolder."""
    for folder in (path, path / layout.folder):
        if (folder / layout.meta_member).is_file():
            return folder
    return None


def _read_cifar(
    open_member: MemberOpener, describe: Callable[[str], str], layout: CifarLayout, member_size: Callable[[str], int]
) -> Splits:
    """Read every batch of ``layout`` through ``open_member`` (of ``member_size`` bytes each) into ``Splits``."""

    def unpickle(name: str) -> dict:
        with open_member(name) as stream:
            return _unpickle_dict(stream, describe(name), member_size(name))

    def read_members(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        parts = [_cifar_batch(unpickle(name), layout.labels_key, describe(name)) for name in names]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    meta = unpickle(layout.meta_member)
    _require_keys(meta, (layout.names_key,), describe(layout.meta_member))
    names = meta[layout.names_key]
    if not isinstance(names, (list, tuple)) or not all(isinstance(name, (bytes, str)) for name in names):
        raise DataError(f"{describe(layout.meta_member)}: {layout.names_key.decode()} is not a list of class names.")
    class_names = [name.decode("utf-8", "replace") if isinstance(name, bytes) else name for name in names]
    sources = {
        "x_train": describe(layout.train_members[0]),
        "y_train": describe(layout.train_members[0]),
        "x_test": describe(layout.test_members[0]),
        "y_test": describe(layout.test_members[0]),
    }
    return _assemble(
        read_members(layout.train_members), read_members(layout.test_members), sources, class_names
    )


def _is_tarball(path: Path) -> bool:
    return path.name.endswith((".tar.gz", ".tgz", ".tar"))


def load_cifar(path: Path, variant: str) -> Splits:
    """Read CIFAR-10 or CIFAR-100 from its .tar.gz, its extracted folder, or a parent folder."""
    path = Path(path)
    layout = CIFAR_LAYOUTS.get(variant)
    if layout is None:
        raise DataError(
            f"unknown CIFAR variant {variant!r}; expected one of {', '.join(CIFAR_LAYOUTS)}."
        )
    if path.is_file() and _is_tarball(path):
        return _load_cifar_tarball(path, layout, variant)
    folder = _find_cifar_folder(path, layout) if path.is_dir() else None
    if folder is None:
        raise DataError(
            f"{path}: no {layout.folder}/{layout.meta_member} found ({_describe_contents(path)}); "
            f"expected {FORMAT_DESCRIPTIONS[variant]}."
        )
    missing = [name for name in layout.members if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{folder}: missing CIFAR file(s) {', '.join(missing)}; "
            f"expected {', '.join(layout.members)}."
        )
    return _read_cifar(
        lambda name: open(folder / name, "rb"), lambda name: str(folder / name), layout,
        lambda name: (folder / name).stat().st_size,
    )


def _load_cifar_tarball(path: Path, layout: CifarLayout, variant: str) -> Splits:
    """Read CIFAR members straight out of the published archive, without extracting it."""
    try:
        with tarfile.open(path, "r:*") as archive:
            members = {
                info.name.removeprefix("./"): info for info in archive.getmembers() if info.isfile()
            }
            wanted = {name: f"{layout.folder}/{name}" for name in layout.members}
            missing = [inside for inside in wanted.values() if inside not in members]
            if missing:
                raise DataError(
                    f"{path}: the archive lacks {', '.join(missing)}; "
                    f"expected {FORMAT_DESCRIPTIONS[variant]}."
                )

            def open_member(name: str) -> BinaryIO:
                return archive.extractfile(members[wanted[name]])

            return _read_cifar(
                open_member, lambda name: f"{path}:{wanted[name]}", layout, lambda name: members[wanted[name]].size
            )
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise DataError(f"{path}: cannot be read as a tar archive ({error}).") from error


# --------------------------------------------------------------------------- dispatch


def _describe_contents(path: Path, limit: int = 8) -> str:
    """What is at ``path``, for error messages: a file, an empty folder, or some entries."""
    if not path.exists():
        return "nothing at that path"
    if not path.is_dir():
        return f"a file named {path.name!r}"
    names = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in path.iterdir())
    if not names:
        return "an empty folder"
    shown = ", ".join(names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"a folder containing {shown}{more}"


def detect_and_load(path: Path, dataset: str) -> Splits:
    """Load ``dataset`` from ``path`` in whichever accepted format ``path`` turns out to be."""
    path = Path(path)
    info = get_dataset_info(dataset)
    if not path.exists():
        raise DataError(
            f"{path}: no such file or folder; for {info.name} expected {info.accepted_formats}."
        )
    loader = _choose_loader(path, info.formats)
    if loader is None:
        raise DataError(
            f"{path}: found {_describe_contents(path)}, which is not a format accepted for "
            f"{info.name}; expected {info.accepted_formats}."
        )
    return loader(path)


def _choose_loader(path: Path, formats: tuple[str, ...]) -> Callable[[Path], Splits] | None:
    """The reader for the first of ``formats`` that ``path`` looks like, or None."""
    for name in formats:
        if name == "npz" and path.is_file() and path.suffix == ".npz":
            return load_npz
        if name == "idx" and path.is_dir() and _find_idx_files(path):
            return load_idx_dir  # even when some files are missing: it names which
        if name in CIFAR_LAYOUTS:
            layout = CIFAR_LAYOUTS[name]
            if (path.is_file() and _is_tarball(path)) or (
                path.is_dir() and _find_cifar_folder(path, layout) is not None
            ):
                return lambda p, variant=name: load_cifar(p, variant)
    return None
