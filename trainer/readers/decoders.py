"""Bounded decoders for data files: ``.npy`` headers, ``.npz`` members, images and HDF5 weights (NumPy and stdlib at import).

Data files (``data.path``, ``train.sample_weights``, predict inputs, ``model.weights``) are named
by the user, but their *contents* are untrusted: a 1 KiB ``.npz`` may declare a member of
terabytes, a ``.npy`` header may declare a shape that no memory holds, a PNG may declare
100000 x 100000 pixels, a weights file may hold datasets of any size. Every decoder here reads
the declaration first (zip directory, ``.npy`` header, image header, HDF5 dataset shape), checks
it against a stated bound and against the bytes actually present, and only then allocates.
Everything it refuses is a ``DataError`` (exit 2) naming the file (and the member or field).
The limits are listed in ``docs/security.md``.
"""
from __future__ import annotations

import io
import math
import os
import stat
import struct
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from trainer.errors import DataError

GiB = 2**30
MAX_ARRAY_BYTES = 16 * GiB  # the most one data file (all its arrays together) may decode into, on any machine
MEMORY_SHARE = 0.5  # ... and at most this share of the machine's memory
NPY_HEADER_LIMIT = 10_000  # bytes; numpy writes headers of a few hundred
CHUNK = 16 * 2**20

# Pillow's plug-ins trainer lets decode an image: the formats it documents. Pillow would otherwise
# pick a decoder by the file's content, among them EPS (which runs Ghostscript) and dozens more.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "GIF", "TIFF", "WEBP", "PPM")  # JPEG opens multi-picture files (MPO) too
MAX_IMAGE_PIXELS = 89_478_485  # width x height of one image before it is decoded (Pillow's own default, held here)


def array_limit() -> int:
    """Bytes one data file may decode into: ``MAX_ARRAY_BYTES``, or half the machine's memory when that is less."""
    try:
        machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        machine = 2 * MAX_ARRAY_BYTES
    return int(min(MAX_ARRAY_BYTES, MEMORY_SHARE * machine))


def size_text(count: int) -> str:
    """``count`` bytes for people: 3.2 GiB, 12 MiB, 512 bytes."""
    for unit, size in (("TiB", 2**40), ("GiB", GiB), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"


# --------------------------------------------------------------------------- .npy headers


class NpyHeader:
    """What a ``.npy`` header declares: shape, dtype, order, where the data starts and how many bytes it takes."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, fortran: bool, offset: int):
        self.shape, self.dtype, self.fortran, self.offset = shape, dtype, fortran, offset
        self.nbytes = math.prod(shape) * dtype.itemsize  # exact Python int: no overflow

    def describe(self) -> str:
        return f"shape {self.shape} of {self.dtype}"


def read_npy_header(stream: BinaryIO, source: str, *, limit: int | None = None) -> NpyHeader:
    """The header of the ``.npy`` data at ``stream`` (positioned at its start), checked; the stream is left at the data."""
    limit = array_limit() if limit is None else limit
    try:
        # numpy reads the whole length a header declares (up to 4 GiB) before checking max_header_size:
        # the length is read and bounded here first, and numpy parses only those bytes.
        start = stream.tell() if stream.seekable() else 0
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"format version {version[0]}.{version[1]}; trainer reads versions 1.0 and 2.0")
        length_format = "<H" if version == (1, 0) else "<I"
        length_bytes = stream.read(struct.calcsize(length_format))
        (header_length,) = struct.unpack(length_format, length_bytes)
        if header_length > NPY_HEADER_LIMIT:
            raise ValueError(f"the header declares {header_length:,} bytes, more than the {NPY_HEADER_LIMIT:,} trainer reads")
        text = stream.read(header_length)
        prefix = io.BytesIO(np.lib.format.magic(*version) + length_bytes + text)
        prefix.seek(8)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy's "created on Python 2" warning: not a file numpy.save wrote here
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(prefix, max_header_size=NPY_HEADER_LIMIT)
        offset = start + prefix.tell()
    except Exception as exc:  # noqa: BLE001 - numpy parses the header text as a Python literal: any error is a bad header
        raise DataError(f"{source}: not a NumPy .npy array ({_reason(exc)}); expected an array written by numpy.save.") from None
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise DataError(f"{source}: holds Python objects (dtype {dtype}), which only pickle can read; trainer reads numeric arrays.")
    if dtype.itemsize == 0:
        raise DataError(f"{source}: dtype {dtype} has no size; trainer reads numeric arrays.")
    header = NpyHeader(tuple(int(d) for d in shape), dtype, bool(fortran), int(offset))
    if header.nbytes > limit:
        raise DataError(
            f"{source}: declares {header.describe()}, {size_text(header.nbytes)} of data, more than the "
            f"{size_text(limit)} trainer decodes from one file (at most {MEMORY_SHARE:.0%} of this machine's memory, "
            f"{MAX_ARRAY_BYTES // GiB} GiB); refused before reading. Split the data into smaller files."
        )
    return header


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:160] if str(exc) else ""
    return text or type(exc).__name__


def _read_into(stream: BinaryIO, header: NpyHeader, source: str) -> np.ndarray:
    """Exactly ``header.nbytes`` bytes from ``stream`` into a new array of the declared shape (chunked: no second copy)."""
    flat = np.empty(math.prod(header.shape), header.dtype)
    view = memoryview(flat.view(np.uint8)) if flat.size else memoryview(bytearray())
    done = 0
    while done < header.nbytes:
        chunk = stream.read(min(CHUNK, header.nbytes - done))
        if not chunk:
            raise DataError(
                f"{source}: declares {header.describe()}, {header.nbytes:,} bytes of data, but holds only {done:,}; "
                "it is truncated."
            )
        view[done:done + len(chunk)] = chunk
        done += len(chunk)
    if stream.read(1):
        raise DataError(f"{source}: holds more bytes than its header declares ({header.describe()}); it is garbled.")
    return flat.reshape(header.shape, order="F" if header.fortran else "C")


# --------------------------------------------------------------------------- .npy files


def open_npy(path: Path | str, what: str = "") -> np.ndarray:
    """A ``.npy`` file memory-mapped read-only (nothing read into memory yet), its header and size checked first.

    The file must be a regular file whose size is exactly its header plus the data the header
    declares; the data may be larger than memory (it is mapped, not loaded). ``what`` prefixes
    messages (a config key such as ``train.sample_weights``).
    """
    path = Path(path)
    source = f"{what}: {path}" if what else str(path)
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise DataError(f"{source}: not a regular file; expected a .npy array written by numpy.save.")
            header = read_npy_header(handle, source, limit=2**63)  # mapped, not loaded: the file's own size bounds it below
    except FileNotFoundError:
        raise DataError(f"{source}: no such file; expected a .npy array written by numpy.save.") from None
    except OSError as exc:
        raise DataError(f"{source}: cannot be read ({exc.strerror or exc}).") from None
    if header.offset + header.nbytes != info.st_size:
        raise DataError(
            f"{source}: declares {header.describe()}, {header.nbytes:,} bytes of data, but the file holds "
            f"{info.st_size - header.offset:,}; it is truncated or garbled."
        )
    if header.nbytes == 0:
        return np.empty(header.shape, header.dtype, order="F" if header.fortran else "C")
    try:
        return np.memmap(path, dtype=header.dtype, mode="r", offset=header.offset, shape=header.shape,
                         order="F" if header.fortran else "C")
    except (OSError, ValueError) as exc:
        raise DataError(f"{source}: cannot be memory-mapped ({_reason(exc)}).") from None


def check_decoded_size(nbytes: int, source: str, what: str) -> None:
    """Refuse ``nbytes`` of decoded data (``what``: what it would become) over ``array_limit()``."""
    limit = array_limit()
    if nbytes > limit:
        raise DataError(
            f"{source}: {what} would take {size_text(nbytes)} of memory, more than the {size_text(limit)} trainer "
            "decodes at once; split the data into smaller files."
        )


# --------------------------------------------------------------------------- .npz archives


def read_npz(path: Path | str, names: tuple[str, ...] | None, *, expected: str = "", stored: bool = False) -> dict[str, np.ndarray]:
    """The arrays ``names`` (None: every member, by name) of a ``.npz`` archive, each member's sizes checked before it is inflated.

    Before a byte is decompressed: the zip directory's declared size of every wanted member (and
    their sum) is at most ``array_limit()``, no member is encrypted (``stored``: none is compressed
    at all, as in the archives trainer writes itself), and each ``.npy`` header inside declares
    exactly the bytes the member holds. Then each member is inflated straight into its array.
    A missing member is a ``DataError`` naming what the archive holds. The one ``.npz`` reader: data
    files and checkpoint weights (``trainer.readers.run_files.read_checkpoint_arrays``) both come through here.
    """
    path = Path(path)
    also = f"; expected {expected}" if expected else ""
    if not zipfile.is_zipfile(path):  # np.load would read a lone .npy or try pickle instead
        raise DataError(
            f"{path}: cannot be read as a .npz archive (it is not a zip of .npy arrays: truncated, or another "
            f"format such as a lone .npy){also}."
        )
    limit = array_limit()
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist() if not info.is_dir()}
            names = tuple(sorted(members)) if names is None else names
            missing = [name for name in names if name not in members]
            if missing:
                raise DataError(
                    f"{path}: missing key(s) {', '.join(missing)}; found {', '.join(sorted(members)[:20]) or 'no arrays'}. "
                    f"Expected {', '.join(names)}."
                )
            total = 0
            for name in names:
                info = members[name]
                total += info.file_size
                if info.flag_bits & 0x1:
                    raise DataError(f"{path} [{name}]: the member is encrypted; trainer reads plain .npz archives{also}.")
                if stored and info.compress_type != zipfile.ZIP_STORED:
                    raise DataError(f"{path} [{name}]: the member is compressed; trainer writes these archives uncompressed{also}.")
                if info.file_size > limit or total > limit:
                    raise DataError(
                        f"{path} [{name}]: the archive declares {size_text(info.file_size)} for this member "
                        f"({size_text(total)} for the arrays so far), more than the {size_text(limit)} trainer decodes "
                        "from one file; refused before inflating it (a zip bomb, or data to split into smaller files)."
                    )
            arrays = {}
            for name in names:
                info, source = members[name], f"{path} [{name}]"
                with archive.open(info) as stream:
                    header = read_npy_header(stream, source, limit=limit)
                    if header.offset + header.nbytes != info.file_size:
                        raise DataError(
                            f"{source}: the .npy header declares {header.describe()}, {header.nbytes:,} bytes of data, "
                            f"but the member holds {info.file_size - header.offset:,}; it is truncated or garbled."
                        )
                    arrays[name] = _read_into(stream, header, source)
            return arrays
    except DataError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError,
            RuntimeError, OverflowError, KeyError, IndexError, MemoryError) as exc:
        # RuntimeError/NotImplementedError: encrypted or unsupported compression; BadZipFile: a CRC mismatch too
        raise DataError(f"{path}: cannot be read as a .npz archive of numeric arrays ({_reason(exc)}){also}.") from None


# --------------------------------------------------------------------------- images


def open_image(path: Path | str):
    """A Pillow image opened (header only) from one of ``IMAGE_FORMATS``, at most ``MAX_IMAGE_PIXELS``; else DataError.

    The pixel bound is trainer's own, checked before anything is decoded, whatever
    ``PIL.Image.MAX_IMAGE_PIXELS`` another library has set. The caller closes the image.
    """
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # trainer's own bound applies below
            image = Image.open(path, formats=IMAGE_FORMATS)
    except Image.DecompressionBombError:
        image = None
        width = height = None
    except Exception as exc:  # noqa: BLE001 - Pillow's plug-ins raise many types on hostile bytes
        raise undecodable_image(path, exc) from None
    limit = image_pixel_limit()
    if image is not None:
        width, height = image.size
    if image is None or width * height > limit:
        if image is not None:
            image.close()
        declared = f"{width} x {height} = {width * height:,} pixels" if width is not None else "more pixels than Pillow's own limit"
        raise DataError(
            f"{path}: refused: the image declares {declared}, more than the {limit:,} trainer decodes "
            "(a decompression bomb, or a huge image). Remove or shrink the file."
        )
    return image


def undecodable_image(path: Path | str, exc: BaseException) -> DataError:
    """The one message for an image file Pillow cannot open or decode (gone, truncated, garbled, another format)."""
    if isinstance(exc, FileNotFoundError):
        return DataError(f"{path}: the image file is gone (deleted or renamed since it was listed?).")
    return DataError(
        f"{path}: cannot decode this image ({_reason(exc)}); expected a readable {', '.join(IMAGE_FORMATS[:-1])} or "
        f"{IMAGE_FORMATS[-1]} file. Remove or replace the file."
    )


def image_pixel_limit() -> int:
    """``MAX_IMAGE_PIXELS``, or Pillow's ``MAX_IMAGE_PIXELS`` when the program has set it lower (the stricter bound wins)."""
    from PIL import Image

    pillow = Image.MAX_IMAGE_PIXELS
    return MAX_IMAGE_PIXELS if not pillow else min(MAX_IMAGE_PIXELS, int(pillow))


# --------------------------------------------------------------------------- HDF5 datasets


def read_h5_dataset(dataset: Any, expected_shape: tuple[int, ...], source: str) -> np.ndarray:
    """One HDF5 dataset read only once its declared shape equals ``expected_shape`` (and its dtype is numeric)."""
    import h5py

    if not isinstance(dataset, h5py.Dataset):
        raise DataError(f"{source} is a {type(dataset).__name__}, not an array of weights.")
    shape, dtype = tuple(dataset.shape or ()), dataset.dtype
    if shape != tuple(expected_shape):
        raise DataError(f"{source} has shape {shape}; the model needs {tuple(expected_shape)}.")
    if dtype.kind not in "biuf":
        raise DataError(f"{source} holds {dtype} values; weights are numbers.")
    try:
        return np.asarray(dataset[()] if shape == () else dataset[...])
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise DataError(f"{source} cannot be read ({_reason(exc)}).") from None
