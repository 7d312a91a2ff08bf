"""Readers of trainer's caches: a frozen backbone's features kept for later runs (a sweep's shared folder).

A cached feature array is ``<split>-<key>.npy`` with an index record ``<split>-<key>.json``
beside it (``FeatureIndex``): the key it was made for, its shape, dtype and the SHA-256 of its
data. ``read_feature_cache`` uses the array only when all of it agrees: the index parses with its
bounds, the ``.npy`` header is read bounded (never more than ``NPY_HEADER_LIMIT`` bytes, no
pickled objects) and its size is exactly what the header implies, and the digest of the data
read back equals the recorded one. Anything else is a ``RunDirError`` naming the file and what
is wrong; the caller computes the features again. The array is then memory-mapped from the file
descriptor that was checked, so a file renamed into its place afterwards is not the one used.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Annotated, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field

from trainer.errors import RunDirError
from trainer.readers import KiB, MiB, open_regular, read_record

FEATURE_CACHE_KIND = "trainer feature cache"
INDEX_LIMIT = 64 * KiB  # an index record is a few hundred bytes
NPY_HEADER_LIMIT = 16 * KiB  # numpy's own default bound is 10,000 bytes; trainer writes ~128
MAX_DIMENSIONS = 8
MAX_SIDE = 2**40  # rows or values per row; the file size check bounds the product
HASH_CHUNK = 8 * MiB



class FeatureIndex(BaseModel):
    """``<split>-<key>.json``: what a cached feature array is, written after the array is complete."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kind: Literal["trainer feature cache"]
    version: Literal[1]
    key: str = Field(pattern=r"^[0-9a-f]{1,64}$")
    split: Literal["train", "validation", "test"]
    shape: list[Annotated[int, Field(ge=0, le=MAX_SIDE)]] = Field(min_length=1, max_length=MAX_DIMENSIONS)
    dtype: Literal["float32"]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


def feature_index_path(npy: Path | str) -> Path:
    """The index record beside a cached feature array."""
    return Path(npy).with_suffix(".json")


def read_feature_cache(npy: Path | str, *, folder: Path | str, key: str, split: str, shape: tuple[int, ...]):
    """The cached features at ``npy`` (read-only, memory-mapped), checked against their index record; else ``RunDirError``."""
    import numpy as np

    npy = Path(npy)
    index_path = feature_index_path(npy)
    index = read_record(FeatureIndex, index_path, limit=INDEX_LIMIT, folder=folder)
    for field, recorded, expected in (("key", index.key, key), ("split", index.split, split), ("shape", tuple(index.shape), tuple(shape))):
        if recorded != expected:
            raise RunDirError(f"{index_path}: {field} is {recorded!r}, but these features need {expected!r}.")
    handle = open_regular(npy, folder=folder)
    try:
        header = read_npy_header(handle, npy)
        header_shape, dtype, offset = header.shape, header.dtype, header.offset
        if header_shape != tuple(shape) or dtype != np.dtype(index.dtype):
            raise RunDirError(f"{npy}: the header says {header_shape} of {dtype}, but {index_path.name} records {tuple(shape)} of {index.dtype}.")
        expected_size = offset + header.nbytes
        size = os.fstat(handle.fileno()).st_size
        if size != expected_size:
            raise RunDirError(f"{npy} is {size:,} bytes, but its header implies {expected_size:,}; it is truncated or garbled.")
        if digest_from(handle, offset) != index.sha256:
            raise RunDirError(f"{npy}: the SHA-256 digest of its data differs from the one {index_path.name} records; it was changed since trainer wrote it.")
        if not header_shape or 0 in header_shape:
            return np.zeros(header_shape, dtype)
        return np.memmap(handle, dtype=dtype, mode="r", shape=header_shape, offset=offset)
    except OSError as exc:
        raise RunDirError(f"{npy} cannot be read ({exc.strerror or exc}).") from None
    finally:
        handle.close()  # a memmap keeps its own mapping


def read_npy_header(handle: BinaryIO, path: Path | str):
    """The header (``trainer.readers.decoders.NpyHeader``) of the cached ``.npy`` open in ``handle``: the bounded decoder's header, C order, no objects."""
    from trainer.errors import DataError
    from trainer.readers.decoders import read_npy_header as read_header

    handle.seek(0)
    try:
        header = read_header(handle, str(path), limit=2**63)  # the file's own size bounds the data (checked by the caller)
    except DataError as exc:
        raise RunDirError(exc.message) from None
    if header.fortran:
        raise RunDirError(f"{path}: is in Fortran order; trainer writes C order.")
    if len(header.shape) > MAX_DIMENSIONS or any(not 0 <= side <= MAX_SIDE for side in header.shape):
        raise RunDirError(f"{path}: the header declares shape {header.shape}, outside what trainer writes.")
    return header


def digest_from(handle: io.BufferedReader, offset: int) -> str:
    """SHA-256 of the file open in ``handle`` from ``offset`` to its end, read in chunks."""
    handle.seek(offset)
    digest = hashlib.sha256()
    while chunk := handle.read(HASH_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()

