"""The one rule for everything trainer writes outside a run directory it just made (stdlib only).

- Write into a folder trainer created, or one that is empty (``claim_dir``).
- Replace a file only when trainer recognises it as its own, by name *and* content
  (``check_replaceable`` with a recogniser); anything else there is refused, and nothing changes.
- Remove only what this process made (``Made``): never ``rmtree`` a path a user typed.

A refusal is a ``BadInputError`` (exit 2) that says what is there and what to do.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

from trainer.errors import BadInputError


def claim_dir(path: Path | str, what: str, *, error: type[Exception] = BadInputError) -> tuple[Path, bool]:
    """Make ``path`` a folder trainer may write into: create it (returns ``(path, True)``) or accept it empty (``False``).

    A file there, a non-empty folder, or the working directory itself (``--output .``) is refused.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        if path.is_symlink() or not path.is_dir():
            raise error(f"{what} {path}: exists and is not a folder; nothing was changed. Choose a new path.")
        with contextlib.suppress(OSError):
            if path.resolve() == Path.cwd().resolve():
                raise error(f"{what} {path}: is the working directory; give a new folder name (trainer writes only into folders it creates or that are empty).")
        try:
            empty = not any(os.scandir(path))
        except OSError as exc:
            raise error(f"{what} {path}: cannot be read ({exc.strerror or exc}); nothing was changed.") from None
        if not empty:
            raise error(
                f"{what} {path}: is a folder that is not empty; trainer writes only into folders it creates or that are empty, "
                "so nothing was changed. Choose a new path (or empty it yourself)."
            )
        return path, False
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        raise error(f"{what} {path}: cannot be created ({exc.strerror or exc}); nothing was changed.") from None
    return path, True


def check_replaceable(path: Path | str, what: str, is_own: Callable[[Path], bool], *, error: type[Exception] = BadInputError) -> bool:
    """Whether ``path`` exists (and may be replaced); refused unless ``is_own(path)`` recognises it as trainer's.

    ``is_own`` must check content, not only the name (a digest recorded when trainer wrote it, a
    marker inside the file). A link is never replaced: it may point anywhere.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return False
    if path.is_symlink():
        raise error(f"{what} {path}: is a symbolic link; trainer does not write through links. Choose a new path.")
    try:
        own = is_own(path)
    except Exception:  # noqa: BLE001 - a recogniser that cannot read the file does not recognise it
        own = False
    if not own:
        raise error(
            f"{what} {path}: already exists and is not a file trainer wrote (or it was changed since); "
            "nothing was changed. Choose a new path, or remove it yourself."
        )
    return True


class Made:
    """What this process created, in order; ``undo()`` removes exactly those (newest first), nothing else.

    Use ``make_dir``, or ``track_dir``/``track_file`` right after creating a path. Removing a folder checks it is
    still the folder that was made (same inode), so a folder swapped in by someone else is left.
    """

    def __init__(self) -> None:
        self._paths: list[tuple[Path, tuple[int, int] | None, bool]] = []

    def make_dir(self, path: Path | str, what: str, *, error: type[Exception] = BadInputError) -> Path:
        """Create the folder ``path`` (its parents must exist) and remember it; an existing one is refused."""
        path = Path(path)
        try:
            path.mkdir()
        except OSError as exc:
            raise error(f"{what} {path}: cannot be created ({exc.strerror or exc}).") from None
        return self.track_dir(path)

    def track_dir(self, path: Path | str) -> Path:
        """Remember a folder this process has just created (its identity now is what ``undo`` removes)."""
        path = Path(path)
        self._paths.append((path, _identity(path), True))
        return path

    def track_file(self, path: Path | str) -> Path:
        path = Path(path)
        self._paths.append((path, None, False))
        return path

    def undo(self) -> list[Path]:
        """Remove what was made (errors ignored: this runs while another error is reported); return what went."""
        removed = []
        for path, identity, is_dir in reversed(self._paths):
            with contextlib.suppress(OSError):
                if is_dir:
                    # identity None: tracked just before it was created (then any folder there, never a link)
                    if path.is_symlink() or (identity is not None and _identity(path) != identity):
                        continue
                    shutil.rmtree(path)
                elif path.is_file() or path.is_symlink():
                    path.unlink()
                else:
                    continue
                removed.append(path)
        self._paths.clear()
        return removed

    def keep(self) -> None:
        """Success: forget what was made (nothing will be removed)."""
        self._paths.clear()

    @contextlib.contextmanager
    def undone_on_error(self) -> Iterator["Made"]:
        """Remove what was made if the block raises (anything, Ctrl-C included); keep it if the block ends."""
        try:
            yield self
        except BaseException:
            self.undo()
            raise
        self.keep()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


SPREADSHEET_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """A CSV cell that a spreadsheet shows as text: a string starting with = + - @ (a formula) gets a leading '.

    The CSV files people open in a spreadsheet (``trials.csv``, ``predict --output FILE.csv``) hold
    names that come from untrusted places (file and folder names, a study's records); OWASP's
    CSV-injection rule. Numbers are left alone, so ``-0.5`` stays a number.
    """
    if isinstance(value, str) and value.startswith(SPREADSHEET_TRIGGERS):
        return "'" + value
    return value
