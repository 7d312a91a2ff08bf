"""Readers for the files of an export folder: ``export-<format>.json``, the ``manifest.json`` beside it, the export's own files.

An export folder is untrusted (anyone can hand you one). Its report and manifest are bounded
JSON parsed into typed records; the export's files are walked without following links, each a
regular file inside the export, at most ``EXPORT_FILE_LIMIT`` bytes, at most ``EXPORT_MAX_FILES``
of them and ``EXPORT_TOTAL_LIMIT`` bytes in all. Anything else is a ``RunDirError`` (exit 2)
naming the file and the field. Reading never runs the export (stdlib and pydantic only).
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from trainer.errors import RunDirError
from trainer.readers import JSON_LIMIT, MiB, read_bytes, read_record

GiB = 2**30
EXPORT_FILE_LIMIT = 2 * GiB  # protobuf's own limit for saved_model.pb and .onnx; a .tflite or variables shard of trainer's is far smaller
EXPORT_TOTAL_LIMIT = 4 * GiB
EXPORT_MAX_FILES = 1000
REPORT_LIMIT = JSON_LIMIT  # class names of a 1,000,000-class model fit
MANIFEST_LIMIT = 16 * MiB
FORMAT_NAMES = ("savedmodel", "onnx", "litert")

Sha256 = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]
Dimension = Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]


def _relative_name(name: str) -> str:
    parts = name.split("/")
    if not name or len(name) > 1024 or name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in name or "\x00" in name:
        raise ValueError("expected a relative path inside the export (no '..', no leading '/')")
    return name


class ExportSignature(BaseModel):
    """``signature`` of an export report: what trainer wrote, keyed with the user's export key (trainer.inference.provenance)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    version: Literal[1]
    format: Literal["savedmodel", "onnx", "litert"]
    file: StrictStr = Field(min_length=1, max_length=255)
    files: dict[StrictStr, Sha256] = Field(min_length=1, max_length=EXPORT_MAX_FILES)
    manifest: Sha256
    input_shape: list[Dimension] = Field(min_length=3, max_length=3)
    num_classes: Annotated[StrictInt, Field(ge=1, le=1_000_000)]
    algorithm: Literal["hmac-sha256"]
    key_id: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{16}$")]
    mac: Sha256

    @field_validator("file")
    @classmethod
    def _one_name(cls, value: str) -> str:
        if "/" in value or "\\" in value or value in (".", "..") or "\x00" in value:
            raise ValueError("expected the name of the export inside its folder")
        return value

    @field_validator("files")
    @classmethod
    def _relative(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            _relative_name(name)
        return value


class ExportReportRecord(BaseModel):
    """``export-<format>.json`` as predict reads it back (the parity numbers are for people; only these fields are used)."""

    model_config = ConfigDict(extra="ignore")

    format: Literal["savedmodel", "onnx", "litert"]
    path: StrictStr = Field(max_length=4096)
    signature: Optional[ExportSignature] = None


def read_export_report(path: Path | str) -> ExportReportRecord:
    """The export report at ``path`` (inside its own folder), typed and bounded."""
    return read_record(ExportReportRecord, path, limit=REPORT_LIMIT, folder=Path(path).parent)


def read_manifest_beside(path: Path | str) -> tuple[Any, bytes]:
    """``(Manifest, its bytes)`` of the ``manifest.json`` at ``path``: read once, so the digest signed at export is of what is used."""
    import json

    from trainer.readers.records import Manifest

    path = Path(path)
    what = "the manifest.json trainer export writes"
    data = read_bytes(path, limit=MANIFEST_LIMIT, folder=path.parent, what=what)
    try:
        record = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RunDirError(f"{path}: byte {exc.start} is not UTF-8 text; expected {what}.") from None
    except (ValueError, RecursionError) as exc:
        raise RunDirError(f"{path} is not valid JSON ({(str(exc).splitlines() or ['nested too deeply'])[0][:160]}); expected {what}.") from None
    if not isinstance(record, dict):
        raise RunDirError(f"{path} holds a JSON {type(record).__name__}; expected {what}.")
    return Manifest.from_dict(record, path), data


def _lstat(path: Path) -> os.stat_result:
    """The entry itself (a link is not followed), or RunDirError naming it."""
    try:
        return os.lstat(path)
    except OSError as exc:
        raise RunDirError(f"{path} cannot be read ({exc.strerror or exc}).") from None


def export_files(export: Path | str) -> Iterator[tuple[str, Path]]:
    """``(name relative to the export, path)`` for each file of an export (the file itself, or a SavedModel folder's files, sorted).

    Links, FIFOs and devices are refused, and so are more than ``EXPORT_MAX_FILES`` files or
    ``EXPORT_TOTAL_LIMIT`` bytes in all (checked before anything is read).
    """
    export = Path(export)
    info = _lstat(export)
    if stat.S_ISLNK(info.st_mode):
        raise RunDirError(f"{export} is a symbolic link; trainer runs an export only from the folder that holds it.")
    if not stat.S_ISDIR(info.st_mode):
        yield export.name, export
        return
    found: list[tuple[str, Path]] = []
    total = 0
    for root, dirs, files in os.walk(export, onerror=_raise_walk_error, followlinks=False):
        for name in sorted(dirs) + sorted(files):
            path = Path(root) / name
            relative = path.relative_to(export).as_posix()
            entry = _lstat(path)
            if stat.S_ISLNK(entry.st_mode):
                raise RunDirError(f"{path} is a symbolic link; an export trainer wrote holds none (it could point anywhere).")
            if stat.S_ISDIR(entry.st_mode):
                continue
            if not stat.S_ISREG(entry.st_mode):
                raise RunDirError(f"{path} is not a regular file (a FIFO, device or socket); an export trainer wrote holds none.")
            total += entry.st_size
            found.append((relative, path))
            if len(found) > EXPORT_MAX_FILES:
                raise RunDirError(f"{export} holds more than {EXPORT_MAX_FILES} files; an export trainer wrote holds a handful.")
            if total > EXPORT_TOTAL_LIMIT:
                raise RunDirError(f"{export} holds more than {EXPORT_TOTAL_LIMIT // GiB} GiB; trainer reads at most that of an export.")
    yield from sorted(found)


def _raise_walk_error(exc: OSError) -> None:
    raise RunDirError(f"{exc.filename} cannot be read ({exc.strerror or exc}).")


def read_export_file(path: Path, export: Path) -> bytes:
    """One file of an export: regular, inside ``export`` (or its folder for a one-file export), at most ``EXPORT_FILE_LIMIT`` bytes."""
    folder = export if export.is_dir() and not export.is_symlink() else export.parent
    return read_bytes(path, limit=EXPORT_FILE_LIMIT, folder=folder, what="a file of an export trainer wrote")


def export_digests(export: Path | str) -> dict[str, str]:
    """SHA-256 of each file of an export, by its name relative to the export (one file at a time in memory)."""
    export = Path(export)
    return {name: hashlib.sha256(read_export_file(path, export)).hexdigest() for name, path in export_files(export)}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
