"""Paths a user or a file gives us: refused when they cannot be a path, or when they leave a folder (stdlib only).

Every path typed by a user (a config file, ``--run-dir``, ``data.path``, predict inputs, ``--code``)
goes through ``user_path``; every path read from a run directory's own files (``checkpoint.json``,
``manifest.json``) goes through ``inside``, so a crafted run directory cannot point outside itself.
"""
from __future__ import annotations

import os
from pathlib import Path

from trainer.errors import BadInputError, RunDirError


def check_path_text(value: str | os.PathLike, what: str) -> str:
    """The path as text; a NUL byte (which no file name can hold) is a BadInputError naming ``what``."""
    text = os.fspath(value)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    if "\x00" in text:
        raise BadInputError(f"{what}: {text!r} contains a NUL byte (\\x00), which no file name can hold; pass a real path.")
    return text


def user_path(value: str | os.PathLike, what: str) -> Path:
    """``Path(value)`` after ``check_path_text``."""
    return Path(check_path_text(value, what))


def inside(base: Path, name: str | os.PathLike, what: str) -> Path:
    """``base / name`` resolved, refused (RunDirError, exit 2) unless it is a path strictly inside ``base``.

    Symbolic links are followed, so a link inside ``base`` that points elsewhere is refused too.
    """
    text = check_path_text(name, what)
    if not text:
        raise RunDirError(f"{what}: the file name is empty.")
    root = Path(base).resolve()
    target = (root / text).resolve()
    if root not in target.parents:
        raise RunDirError(
            f"{what}: {text!r} points outside the run directory {root}; a run directory's files may only name files inside it."
        )
    return target


def is_inside(base: Path, name: str | os.PathLike) -> bool:
    """Whether ``base / name`` resolves inside ``base`` (never raises)."""
    try:
        inside(base, name, "path")
    except (BadInputError, OSError, ValueError):
        return False
    return True


# The files and folders trainer itself writes in a run directory (rundir.py, checkpoint.py,
# features.py, plots.py own them; a test keeps this list in step): a callback may not write there.
TRAINER_RUN_FILES = (
    "config.yaml", "model.h5", "last.h5", "history.csv", "metrics.json", "manifest.json", "checkpoint.json",
    ".trainer.lock", "curves.png", "report.html", "features", "data-cache",
)
TRAINER_RUN_PATTERNS = ("checkpoint-*.weights.*", "eval-*.json", "confusion_matrix-*.png", ".*.tmp*")


def run_file_problem(name: str) -> str | None:
    """Why ``name`` (relative to a run directory) may not be written by a callback, or None when it may."""
    import fnmatch
    import posixpath

    if "\x00" in name:
        return "contains a NUL byte"
    if not name.strip():
        return "is empty"
    if os.path.isabs(name) or name.startswith("~"):
        return "is an absolute path; callback files go inside the run directory, so give a name relative to it"
    normal = posixpath.normpath(name.replace("\\", "/"))
    parts = normal.split("/")
    if normal in (".", "") or parts[0] == "..":
        return "points outside the run directory (or at the run directory itself); give a file name inside it"
    if parts[0] in TRAINER_RUN_FILES or any(fnmatch.fnmatch(parts[0], pattern) for pattern in TRAINER_RUN_PATTERNS):
        return f"is one of trainer's own files ({parts[0]}); choose another name"
    return None
