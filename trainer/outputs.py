"""The one rule for every file trainer writes (stdlib only); ``tests/project/test_outputs_rule.py`` fails on any other writer.

- Write into a folder trainer created, or one that is empty (``claim_dir``).
- Write a named output file (``--output FILE``, the picture beside it) with ``write_file``: a new
  file, or one trainer recognises as its own by name *and* content (``is_own``); any other file
  there only with ``overwrite`` (``--overwrite``). Never through a symbolic link, never onto a
  folder, FIFO, socket or device, and never into a folder that does not exist.
- Replace a whole export only when trainer recognises it as its own (``check_replaceable``).
- Every file is written atomically (``atomic_path``: a temporary file beside it, fsync, rename):
  a reader sees the old file or the new one, a full disk leaves the old one and no temporary file,
  and a replaced file keeps its permission bits (a 0600 file stays 0600; set-uid bits are dropped).
- Remove only what this process made (``Made``): never ``rmtree`` a path a user typed.

A refusal is a ``BadInputError`` (exit 2) that says what is there and what to do; a write that
fails (a full disk, an I/O error) is an ``OutputError`` (exit 1) naming the file.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from trainer.errors import BadInputError, OutputError  # noqa: F401 - OutputError is raised here (and imported from here)

OVERWRITE_FLAG = "--overwrite"


# --------------------------------------------------------------------------- atomic writes


def new_file_mode() -> int:
    """The permission bits of a new file: 0o666 less the process's umask (read without changing it)."""
    umask = 0o022
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:  # Linux 4.7+
            for line in status:
                if line.startswith("Umask:"):
                    umask = int(line.split()[1], 8)
                    break
    return 0o666 & ~umask


def _mode_for(path: Path) -> int:
    """The mode a file written to ``path`` gets: that of the regular file it replaces (set-uid/gid, sticky dropped), else new."""
    try:
        info = os.lstat(path)
    except OSError:
        return new_file_mode()
    return stat.S_IMODE(info.st_mode) & 0o777 if stat.S_ISREG(info.st_mode) else new_file_mode()


@contextlib.contextmanager
def atomic_path(path: Path | str, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffixes); on success it is fsynced and renamed onto ``path``.

    All suffixes are kept (``x.weights.h5`` -> ``.x.<random>.tmp.weights.h5``): Keras picks the
    format from them. The file gets the mode of the regular file it replaces (else 0o666 less the
    umask). ``replace=False`` never replaces anything: the file is linked into place, and a file
    that appeared meanwhile is a ``FileExistsError``. On any error the temporary file is removed.
    """
    path = Path(path)
    suffixes = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffixes)] if suffixes else path.name
    if len(suffixes) > 48:  # a name near the 255-byte limit still gets a temporary name that fits
        suffixes = path.suffix[-48:]
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem[:96]}.", suffix=f".tmp{suffixes}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _mode_for(path))
        _fsync_file(tmp)
        _install(tmp, path, replace)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _install(tmp: Path, path: Path, replace: bool) -> None:
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic, and never replaces: EEXIST when a file appeared since it was checked
    except FileExistsError:
        raise
    except OSError as exc:  # a file system without hard links
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV, errno.ENOSYS):
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.replace(tmp, path)


@contextlib.contextmanager
def atomic_file(path: Path | str, *, text: bool = False, newline: str | None = None) -> Iterator[Any]:
    """An open handle (binary, or UTF-8 text) on ``atomic_path(path)``'s temporary file: for writers that take a handle."""
    with atomic_path(path) as tmp:
        if text:
            with open(tmp, "w", encoding="utf-8", newline=newline) as handle:
                yield handle
        else:
            with open(tmp, "wb") as handle:
                yield handle


def atomic_write_bytes(path: Path | str, data: bytes | bytearray | memoryview) -> None:
    with atomic_file(path) as handle:
        handle.write(data)


def atomic_write_text(path: Path | str, text: str, *, newline: str | None = None) -> None:
    with atomic_file(path, text=True, newline=newline) as handle:
        handle.write(text)


def atomic_write_json(path: Path | str, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


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


def check_writable_dir(folder: Path | str, what: str, error: type[Exception] = BadInputError) -> None:
    """Refuse (before any work) a folder that does not take a new file: read-only, full, no permission."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".trainer-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise error(f"{what}: cannot write in {folder} ({exc.strerror or exc}); nothing was computed.") from None


def open_lock(path: Path | str) -> Any:
    """``path`` open for ``flock`` (append mode): created if missing, a regular file only, never through a link.

    A run directory may come from anyone: a lock file that is a link (to a file elsewhere, or
    dangling) would otherwise create or open its target. An ``OSError`` when it cannot be used.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags, new_file_mode())
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    return os.fdopen(fd, "a+")


# --------------------------------------------------------------------------- named output files


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def check_output_file(
    path: Path | str,
    what: str,
    *,
    overwrite: bool = False,
    is_own: Callable[[Path], bool] | None = None,
    expected: str = "a file name",
    error: type[Exception] = BadInputError,
) -> bool:
    """Whether ``path`` may be written by ``write_file`` (checked before any work, and again when writing): True when it replaces a file.

    Allowed: a new file in an existing folder that takes one; a regular file that ``is_own``
    recognises as trainer's (by content); any other regular file only with ``overwrite``. Refused,
    whatever ``overwrite`` says: a symbolic link (it may point anywhere), a folder, a FIFO, socket
    or device, a read-only file, a missing or unwritable folder.
    """
    from trainer.paths import user_path

    path = user_path(path, what)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise error(f"{what} {path}: cannot be used ({exc.strerror or exc}); nothing was computed.") from None
    if info is not None and stat.S_ISLNK(info.st_mode):
        raise error(f"{what} {path}: is a symbolic link; trainer never writes through a link, not even with {OVERWRITE_FLAG}. Name the file itself or a new path.")
    if not path.parent.is_dir():
        raise error(f"{what} {path}: the folder {path.parent} does not exist; nothing was computed. Create it first, or choose another path.")
    if info is not None:
        if stat.S_ISDIR(info.st_mode):
            raise error(f"{what} {path}: is a folder; expected {expected}.")
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{what} {path}: is a {_kind(info.st_mode)}, not a regular file; trainer replaces only regular files, not even with {OVERWRITE_FLAG}. Choose a new path.")
        own = False
        if is_own is not None:
            try:
                own = bool(is_own(path))
            except Exception:  # noqa: BLE001 - a recogniser that cannot read the file does not recognise it
                own = False
        if not own and not overwrite:
            raise error(
                f"{what} {path}: already exists and is not a file trainer wrote; nothing was changed. "
                f"Pass {OVERWRITE_FLAG} to replace it (its permissions are kept), or choose a new path."
            )
        if not (info.st_mode & 0o222):
            raise error(f"{what} {path}: is read-only (mode {stat.S_IMODE(info.st_mode):04o}); nothing was changed. Make it writable to have it replaced, or choose a new path.")
    check_writable_dir(path.parent, f"{what} {path}", error)
    return info is not None


def write_file(
    path: Path | str,
    data: bytes | str,
    what: str,
    *,
    overwrite: bool = False,
    is_own: Callable[[Path], bool] | None = None,
    expected: str = "a file name",
    error: type[Exception] = BadInputError,
) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` under the output rule (``check_output_file``), atomically.

    Checked again right before the rename: a file that appeared meanwhile is not replaced (unless
    it may be), and one that changed identity since it was checked is not either. A replaced file
    keeps its permission bits. A write that fails (full disk) is an ``OutputError`` naming the file;
    the temporary file is removed and what was there is unchanged.
    """
    path = Path(path)
    replaces = check_output_file(path, what, overwrite=overwrite, is_own=is_own, expected=expected, error=error)
    before = _identity(path) if replaces else None
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with atomic_path(path, replace=replaces) as tmp:
            with open(tmp, "wb") as handle:
                handle.write(payload)
            if replaces and _identity(path) != before:
                raise error(f"{what} {path}: was replaced by something else while trainer wrote it; nothing was changed. Run the command again.")
    except FileExistsError:
        raise error(
            f"{what} {path}: appeared while trainer was writing it; nothing was changed. "
            f"Pass {OVERWRITE_FLAG} to replace it, or choose a new path."
        ) from None
    except OSError as exc:
        raise OutputError(f"{what} {path}: cannot be written ({exc.strerror or exc}); nothing was changed and no temporary file was left.") from None
    return path



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
