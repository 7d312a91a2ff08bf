"""The run directory's life: where it goes, refusing to overwrite, atomic writes (stdlib only)."""
from __future__ import annotations

import contextlib
import csv
import errno
import gc
import json
import os
import re
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from trainer.errors import ConfigError, RunDirError

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.h5"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"


def default_run_dir(output_dir: str, name: str, now: datetime | None = None) -> Path:
    """``<output.dir>/<name>-<YYYYmmdd-HHMMSS>``."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path(output_dir) / f"{name}-{stamp}"


def reserve_run_dir(path: Path) -> Path:
    """Create ``path``, or ``path-2``, ``path-3``, ... when it exists: runs started in the same second never collide.

    ``os.mkdir`` is atomic, so two processes never get the same folder.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create the folder {path.parent} for the run directory: {exc.strerror or exc}") from None
    for attempt in range(1, 10_000):
        candidate = path if attempt == 1 else path.with_name(f"{path.name}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunDirError(f"cannot create the run directory {candidate}: {exc.strerror or exc}") from None
        return create_run_dir(candidate)
    raise RunDirError(f"no free run directory name beside {path}; choose --run-dir.")


def check_new_run_dir(path: Path) -> None:
    """Refuse early (before any work) a run directory that exists and is not empty."""
    if path.exists():
        if not path.is_dir():
            raise RunDirError(f"run directory {path} exists and is a file; choose another --run-dir.")
        if any(path.iterdir()):
            raise RunDirError(
                f"run directory {path} already exists and is not empty; nothing was changed. "
                "Choose another --run-dir (or leave it out for a new timestamped one)."
            )


def create_run_dir(path: Path) -> Path:
    """Make a fresh run directory; an existing non-empty one is never touched."""
    check_new_run_dir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(f"cannot write the run directory {path}: {exc.strerror or exc}") from None
    return path


def check_output_file(path: Path, expected: str) -> None:
    """An ``--output`` file can be written: its folder exists and takes a new file, and it is not itself a folder."""
    from trainer.paths import user_path

    path = user_path(path, "--output")
    if not path.parent.is_dir():
        raise ConfigError(f"--output {path}: the folder {path.parent} does not exist.")
    if path.is_dir():
        raise ConfigError(f"--output {path}: is a folder; expected {expected}.")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"--output {path}: the file exists and cannot be written (permission denied); nothing was computed.")
    check_writable_dir(path.parent, f"--output {path}", ConfigError)


def check_writable_dir(folder: Path, what: str, error: type = RunDirError) -> None:
    """Refuse (before any work) a folder that does not take a new file: read-only, full, no permission."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".trainer-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise error(f"{what}: cannot write in {folder} ({exc.strerror or exc}); nothing was computed.") from None


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffixes); rename it into place only on success.

    All suffixes are kept (``x.weights.h5`` -> ``.x.<random>.tmp.weights.h5``): Keras picks the
    format from them.
    """
    path = Path(path)
    suffixes = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffixes)] if suffixes else path.name
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffixes}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def h5_size_estimate(model: Any) -> int:
    """Bytes an HDF5 file of ``model``'s weights and optimizer state needs, with room for its metadata."""
    variables = list(getattr(model, "weights", []) or [])
    optimizer = getattr(model, "optimizer", None)
    variables += list(getattr(optimizer, "variables", []) or []) if optimizer is not None else []
    total = 0
    for variable in variables:
        count = 1
        for size in getattr(variable, "shape", ()) or ():
            count *= int(size or 1)
        total += count * _itemsize(getattr(variable, "dtype", "float32"))
    return int(total * 1.05) + 256 * 1024


def _itemsize(dtype: Any) -> int:
    import numpy as np

    try:
        return np.dtype(str(dtype).replace("tf.", "")).itemsize
    except TypeError:
        return 8


def write_h5_atomically(path: Path, write: Callable[[Path], Any], needed: int = 0) -> None:
    """``write(tmp)`` an HDF5 file (model, weights) beside ``path``, then rename; any failure is one ``OSError``.

    ``needed``: the bytes it will take (``h5_size_estimate``); with less free space the write is not
    started, because HDF5 can crash the process (not only raise) when the disk fills mid-write.
    On a full disk h5py raises mid-write and then, when its half-open file object is freed, prints
    an "Exception ignored" traceback for the failed close; that close is done here, quietly, so the
    space is released (``metrics.json`` can still be written) and the user sees one message.
    """
    import shutil

    try:
        free: int | None = shutil.disk_usage(Path(path).parent).free
    except OSError:
        free = None
    if needed and free is not None and free < needed:
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({free:,} bytes free, about {needed:,} needed)")
    failure: tuple[int | None, str] | None = None
    previous, previous_excepthook = sys.unraisablehook, sys.excepthook
    sys.unraisablehook = _ignore_failed_close
    sys.excepthook = _ignore_failed_close_traceback  # Cython prints a freed object's error through both hooks
    try:
        try:
            with atomic_path(path) as tmp:
                write(tmp)
        except (OSError, RuntimeError) as exc:  # h5py raises both for HDF5 write errors
            failure = _write_failure(exc)
            gc.collect()  # free (and close) the HDF5 objects the failed write left, while the hook is quiet
    finally:
        sys.unraisablehook, sys.excepthook = previous, previous_excepthook
    if failure is not None:
        raise OSError(failure[0] or errno.EIO, failure[1])


def _ignore_failed_close(unraisable: Any) -> None:
    if not ("h5py" in repr(unraisable.object) or "h5py" in str(unraisable.err_msg or "")):
        sys.__unraisablehook__(unraisable)


def _ignore_failed_close_traceback(kind: type, value: BaseException, traceback: Any) -> None:
    frames, step = [], traceback
    while step is not None:
        frames.append(step.tb_frame.f_code.co_filename)
        step = step.tb_next
    if not any("h5py" in name for name in frames):
        sys.__excepthook__(kind, value, traceback)


def _write_failure(exc: BaseException) -> tuple[int | None, str]:
    """(errno, short reason) of an OSError or an h5py error message (``..., errno = 28, error message = '...'``)."""
    text = str(exc)
    code = getattr(exc, "errno", None)
    found = re.search(r"errno = (\d+)", text)
    if code is None and found:
        code = int(found.group(1))
    if code:
        return code, os.strerror(code)
    reason = getattr(exc, "strerror", None) or (text.splitlines()[0][:200] if text else type(exc).__name__)
    return None, reason


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: Path) -> Any:
    """A run-directory JSON file through ``trainer.readers`` (regular file inside its folder, at most 16 MiB, UTF-8).

    Any problem (missing too) is a ``ValueError`` naming the file, for callers that treat an
    unreadable file as absent; new code calls a typed reader of ``trainer.readers.run_files``.
    """
    from trainer.readers import read_json as read_untrusted_json

    return read_untrusted_json(Path(path), error=ValueError)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class HistoryWriter:
    """Appends one row per finished epoch to ``history.csv``, durable as each epoch ends."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.columns: list[str] | None = None
        if self.path.exists() or self.path.is_symlink():  # a resumed run, or a later phase: continue its columns
            from trainer.readers.run_files import read_history_table

            self.columns = read_history_table(self.path).columns or None

    def append(self, row: dict[str, Any]) -> None:
        if self.columns is None:
            self.columns = list(row)
            with open(self.path, "w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerow(self.columns)
        for key in row:
            if key not in self.columns:
                raise RunDirError(f"{self.path}: a new column {key!r} appeared after the first epoch")
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow([_csv_value(row.get(c)) for c in self.columns])
            handle.flush()
            os.fsync(handle.fileno())


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def read_history(path: Path) -> list[dict[str, Any]]:
    """Rows of ``history.csv`` (or a csv_logger file) with numbers parsed, read with the run directory's bounds.

    A RunDirError names the file when it is not a bounded, well-formed per-epoch CSV log
    (``trainer.readers.run_files.read_history_table``).
    """
    from trainer.readers.run_files import read_history_table

    return read_history_table(Path(path)).rows
