"""The run directory's life: where it goes, refusing to overwrite (stdlib only); files are written by ``trainer.outputs``."""
from __future__ import annotations

import csv
import errno
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from trainer.errors import RunDirError
from trainer.outputs import atomic_file, atomic_path, atomic_write_json, atomic_write_text, check_writable_dir  # noqa: F401 - imported from here too

from trainer.readers.run_files import CONFIG_FILE, HISTORY_FILE, MANIFEST_FILE, METRICS_FILE, MODEL_FILE  # noqa: F401 - imported from here too


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
    except OSError as exc:
        raise RunDirError(f"cannot write the run directory {path}: {exc.strerror or exc}") from None
    check_writable_dir(path, "cannot write the run directory", RunDirError)
    return path


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


def write_h5_atomically(path: Path, write: Callable[[Any], Any], needed: int = 0) -> None:
    """``write(handle)`` into an HDF5 file held in memory, then its bytes to ``path`` atomically; a disk failure is one ``OSError``.

    ``handle`` is an ``h5py.File`` open for writing on a memory buffer: the HDF5 library never
    writes to the disk, so a disk that fills cannot crash it (HDF5 can crash the process, not only
    raise, when a write fails mid-file). The finished image is written with ordinary writes to a
    temporary file beside ``path`` and renamed into place; a full disk is an ``OSError``
    (ENOSPC) and the temporary file is removed. ``needed`` (``h5_size_estimate``) and then the
    image's real size are checked against the free space before anything is written.
    """
    import io

    import h5py

    _check_free_space(path, needed)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        write(handle)
    image = buffer.getbuffer()
    try:
        _check_free_space(path, len(image))
        with atomic_file(path) as out:
            out.write(image)
    finally:
        image.release()


def _check_free_space(path: Path, needed: int) -> None:
    """Refuse (ENOSPC) a write of ``needed`` bytes into ``path``'s folder when less is free."""
    import shutil

    try:
        free = shutil.disk_usage(Path(path).parent).free
    except OSError:
        return
    if needed and free < needed:
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({free:,} bytes free, about {needed:,} needed)")


def save_model_h5(model: Any) -> Callable[[Any], None]:
    """What ``model.save("x.h5")`` writes, as a ``write_h5_atomically`` writer (into the open ``h5py.File`` it is given)."""

    def write(handle: Any) -> None:
        from keras.src.legacy.saving.legacy_h5_format import save_model_to_hdf5  # model.save's own .h5 writer

        from trainer.runtime.hidden_tensorflow import keras_without_tensorflow

        with keras_without_tensorflow():  # serializing a layer would import TensorFlow on JAX (4-5 s)
            save_model_to_hdf5(model, handle)

    return write


def read_json(path: Path) -> Any:
    """A run-directory JSON file through ``trainer.readers`` (regular file inside its folder, at most 16 MiB, UTF-8).

    Any problem (missing too) is a ``ValueError`` naming the file, for callers that treat an
    unreadable file as absent; new code calls a typed reader of ``trainer.readers.run_files``.
    """
    from trainer.readers import read_json as read_untrusted_json

    return read_untrusted_json(Path(path), error=ValueError)


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
