"""The one way trainer reads back a file it does not trust (stdlib and pydantic only, no TensorFlow).

Run directories, export folders, caches, sweep folders and stores are *untrusted*: anyone could
have written them. Every file trainer reads back from one goes through a reader here (or in a
module of this package): a regular file (no FIFO, device or link out of its folder), inside the
folder it belongs to, at most a stated size, decoded strictly and parsed into a typed record with
bounds; anything else is a ``RunDirError`` (exit 2) that names the file and the field. Reading
never runs code, contacts a host or reads without bound. The limits are listed in
``docs/security.md``.

New surfaces call these functions; they never ``open``/``json.load``/``np.load`` a path that
came from disk themselves.
"""
from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from trainer.errors import RunDirError

KiB = 2**10
MiB = 2**20

# A JSON record trainer writes (checkpoint.json, manifest.json, metrics.json, tracking.json, export
# reports, cache indexes) is kilobytes; a much bigger one is not trainer's.
JSON_LIMIT = 16 * MiB
CSV_LIMIT = 64 * MiB  # history.csv: ~100 bytes an epoch
CSV_MAX_ROWS = 1_000_000
CSV_MAX_COLUMNS = 1_000
CSV_FIELD_LIMIT = 64 * KiB

Record = TypeVar("Record")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def locate(path: Path | str, folder: Path | str | None = None, *, error: type[Exception] = RunDirError) -> Path:
    """``path`` resolved, refused unless it lies inside ``folder`` (default: its own folder, so a link out of it is refused)."""
    from trainer.paths import check_path_text

    path = Path(check_path_text(path, "file"))
    base = Path(folder) if folder is not None else path.parent
    # a relative path is taken inside ``folder`` unless it already names a place under it (``run/x.json`` with folder ``run``)
    candidate = path if path.is_absolute() or folder is None or _lexically_under(path, base) else base / path
    root, target = base.resolve(), candidate.resolve()
    if root not in target.parents:
        raise error(f"{path}: points outside {root} (a link or '..'); trainer reads such a file only from inside its folder.")
    return target


def _lexically_under(path: Path, base: Path) -> bool:
    return base.parts == path.parts[: len(base.parts)] and len(path.parts) > len(base.parts) and not base.is_absolute()


def read_bytes(path: Path | str, *, limit: int, folder: Path | str | None = None, error: type[Exception] = RunDirError, what: str = "") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes inside ``folder``; anything else is ``error`` naming the file.

    Opened without following a final link and without blocking (a FIFO would hang a plain
    ``open``); the type and size are checked on the open descriptor, and at most ``limit + 1``
    bytes are read, so a file that grows while it is read is refused too.
    """
    shown = Path(path)
    expected = f"; expected {what}" if what else ""
    with open_regular(path, folder=folder, error=error, what=what) as handle:
        try:
            size = os.fstat(handle.fileno()).st_size
            if size > limit:
                raise error(f"{shown} is {size:,} bytes, more than the {_size(limit)} trainer reads of such a file{expected}.")
            data = handle.read(limit + 1)
        except OSError as exc:
            raise error(f"{shown} cannot be read ({exc.strerror or exc}){expected}.") from None
    if len(data) > limit:
        raise error(f"{shown} grew past {_size(limit)} while it was read{expected}.")
    return data


def open_regular(path: Path | str, *, folder: Path | str | None = None, error: type[Exception] = RunDirError, what: str = "") -> BinaryIO:
    """``path`` open for binary reading: a regular file inside ``folder``, no final link followed, never blocking.

    For files read in parts or memory-mapped (arrays); ``read_bytes`` reads a small file whole.
    """
    shown = Path(path)
    target = locate(path, folder, error=error)
    expected = f"; expected {what}" if what else ""
    flags = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        handle = open(target, "rb", opener=lambda name, mode: os.open(name, mode | flags))  # noqa: SIM115 - returned open
    except FileNotFoundError:
        raise error(f"{shown} is missing{expected}.") from None
    except IsADirectoryError:
        raise error(f"{shown} is not a regular file (it is a folder){expected}.") from None
    except OSError as exc:
        raise error(f"{shown} cannot be opened ({exc.strerror or exc}){expected}.") from None
    if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
        handle.close()
        raise error(f"{shown} is not a regular file (a folder, FIFO, device or socket){expected}.")
    return handle


def _size(limit: int) -> str:
    return f"{limit // MiB} MiB" if limit >= MiB and limit % MiB == 0 else f"{limit // KiB} KiB" if limit % KiB == 0 else f"{limit:,} bytes"


def read_text(path: Path | str, *, limit: int, folder: Path | str | None = None, error: type[Exception] = RunDirError, what: str = "") -> str:
    """``read_bytes`` decoded as strict UTF-8 (a NUL byte is refused too: no text file trainer writes has one)."""
    data = read_bytes(path, limit=limit, folder=folder, error=error, what=what)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: byte {exc.start} is not UTF-8 text{'; expected ' + what if what else ''}.") from None
    if "\x00" in text:
        raise error(f"{path}: holds a NUL byte at character {text.index(chr(0))}; expected {what or 'text'}.")
    return text


def read_json(path: Path | str, *, limit: int = JSON_LIMIT, folder: Path | str | None = None, error: type[Exception] = RunDirError, what: str = "") -> Any:
    """A JSON document (``NaN`` and ``Infinity`` parse; bounds are the record's job)."""
    text = read_text(path, limit=limit, folder=folder, error=error, what=what)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else "nested too deeply"
        raise error(f"{path} is not valid JSON ({reason}){'; expected ' + what if what else ''}.") from None


def read_json_object(path: Path | str, *, limit: int = JSON_LIMIT, folder: Path | str | None = None, error: type[Exception] = RunDirError, what: str = "the JSON object trainer writes") -> dict[str, Any]:
    """``read_json`` that must be an object."""
    data = read_json(path, limit=limit, folder=folder, error=error, what=what)
    if not isinstance(data, dict):
        raise error(f"{path} holds a JSON {type(data).__name__}; expected {what}.")
    return data


def validate(record_type: type[Record], data: Any, source: Path | str, *, error: type[Exception] = RunDirError) -> Record:
    """``data`` (parsed JSON, or its text) as ``record_type``, a pydantic model validated strictly as JSON.

    Every problem is named by field, value received and what is allowed.
    """
    from pydantic import ValidationError

    try:  # strict JSON typing: true is no integer, 1e308 no epoch, "3" no number; arrays may fill tuples
        text = data if isinstance(data, (str, bytes)) else json.dumps(data)
        return record_type.model_validate_json(text, strict=True)  # type: ignore[attr-defined]
    except ValidationError as exc:
        problems = []
        for problem in exc.errors()[:8]:
            field = ".".join(str(part) for part in problem["loc"]) or "(the whole record)"
            problems.append(f"{field} is {_short(problem.get('input'))}: {problem['msg']}")
        more = f" (and {exc.error_count() - 8} more)" if exc.error_count() > 8 else ""
        raise error(f"{source} is malformed: {'; '.join(problems)}{more}.") from None
    except (RecursionError, OverflowError, ValueError, TypeError) as exc:  # a validator's own refusal
        raise error(f"{source} is malformed ({str(exc)[:160]}).") from None


def read_record(record_type: type[Record], path: Path | str, *, limit: int = JSON_LIMIT, folder: Path | str | None = None, error: type[Exception] = RunDirError) -> Record:
    """A JSON object file parsed into ``record_type`` (pydantic) with its bounds checked."""
    data = read_json_object(path, limit=limit, folder=folder, error=error)  # its own messages for bad JSON
    return validate(record_type, data, path, error=error)


def read_csv(
    path: Path | str, *, limit: int = CSV_LIMIT, folder: Path | str | None = None, error: type[Exception] = RunDirError,
    max_rows: int = CSV_MAX_ROWS, max_columns: int = CSV_MAX_COLUMNS, what: str = "a CSV file trainer writes",
) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a bounded CSV file; every row has at most ``max_columns`` fields of at most 64 KiB."""
    text = read_text(path, limit=limit, folder=folder, error=error, what=what)
    previous = csv.field_size_limit()
    csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if header is None:
            return [], []
        rows = []
        for row in reader:
            if len(rows) >= max_rows:
                raise error(f"{path}: more than {max_rows:,} rows; expected {what}.")
            if len(row) > max_columns:
                raise error(f"{path}: line {reader.line_num} has {len(row)} fields, more than {max_columns}; expected {what}.")
            rows.append(row)
    except csv.Error as exc:
        raise error(f"{path}: line {reader.line_num} is not CSV ({exc}); expected {what}.") from None
    finally:
        csv.field_size_limit(previous)
    if len(header) > max_columns:
        raise error(f"{path}: the header has {len(header)} columns, more than {max_columns}; expected {what}.")
    return header, rows


def starts_and_ends_with(path: Path | str, head: bytes, tail: bytes = b"") -> bool:
    """Whether the regular file ``path`` begins with ``head`` and ends with ``tail``: a cheap, bounded recogniser of trainer's own text files.

    Read through ``open_regular`` (no link followed, no FIFO opened); only those bytes are read.
    """
    from trainer.errors import BadInputError

    with open_regular(path, error=BadInputError) as handle:
        if handle.read(len(head)) != head:
            return False
        if not tail:
            return True
        size = os.fstat(handle.fileno()).st_size
        if size < len(head) + len(tail):
            return False
        handle.seek(size - len(tail))
        return handle.read(len(tail)) == tail
