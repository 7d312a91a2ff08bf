"""The persistent compilation cache: a program compiled by one run is read back by the next run of the same shapes.

Where: ``$TRAINER_CACHE``, else ``$XDG_CACHE_HOME/trainer``, else ``~/.cache/trainer``; inside it one
folder per backend and version (``compile/jax-0.10.2``), so a new JAX never reads an old one's files.
Deleting any of it is safe: the next run compiles again and fills it. ``TRAINER_CACHE=off`` turns it off.

Which backends: JAX's own persistent cache (``jax_compilation_cache_dir``) holds every compiled XLA
program of a run (the training step, evaluation, prediction). TensorFlow has a persistent cache only
for XLA-compiled functions (``--tf_xla_persistent_cache_directory`` in ``TF_XLA_FLAGS``, read once when
TensorFlow starts), and Keras compiles with XLA on TensorFlow only where a GPU is present; the
PyTorch backend does not compile (Keras runs it eagerly), so there is nothing to keep. Those two
run without one and the header says so.

Trust (docs/security.md): a compiled executable is a program, so the folder must be this user's own:
trainer creates it with mode 0700, and refuses (no cache, one notice, the run goes on) a folder that
is a link, not a folder, owned by another user, writable by group or others, or not writable (a full
disk included: a probe file is written and removed). JAX's cache entries are keyed by a digest of
the program, its compile options and the JAX/XLA versions; an entry that does not decompress or
load is a warning and a fresh compile (JAX's own handling), never a failed run.

Whether it was used: the header gives the folder and how many programs it held when the run began;
after the first epoch a notice says how many of the programs compiled so far came from the cache
(JAX's own ``/jax/compilation_cache/cache_hits`` events) and how many were compiled and stored.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

CACHE_ENV = "TRAINER_CACHE"
OFF_VALUES = ("off", "none", "false", "0")
MIN_COMPILE_SECONDS = 0.0  # JAX's default (1 s) skips every program of a small CPU run; all of them are worth keeping
_HIT = "/jax/compilation_cache/cache_hits"
_REQUEST = "/jax/compilation_cache/compile_requests_use_cache"
_COUNTS = {_HIT: 0, _REQUEST: 0}  # this process's JAX cache events (one listener per process)
_LISTENING = False
_ACTIVE: str | None = None  # the folder JAX's cache was last set to by this module


def cache_root(environ: Mapping[str, str] | None = None) -> Path | None:
    """trainer's cache folder: ``$TRAINER_CACHE``, ``$XDG_CACHE_HOME/trainer`` or ``~/.cache/trainer``; None when turned off."""
    environ = os.environ if environ is None else environ
    given = environ.get(CACHE_ENV)
    if given is not None and given.strip().lower() in OFF_VALUES + ("",):
        return None
    if given:
        return Path(given).expanduser().absolute()
    xdg = environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"  # XDG: a relative value is ignored
    return base / "trainer"


def backend_folder(backend: str) -> str | None:
    """The cache's subfolder for ``backend`` at its installed version (``jax-0.10.2``), or None where the backend has no persistent cache."""
    if backend != "jax":
        return None
    import jax

    return f"jax-{jax.__version__}"


def own_folder(path: Path, *, probe: bool = False) -> str | None:
    """Create ``path`` (mode 0700, parents as needed) or check it; the reason it cannot hold compiled programs, else None.

    ``probe``: also write (and remove) a small file, so that a read-only or full disk is found now.
    """
    try:
        made = []
        for part in reversed([path, *path.parents]):
            if not os.path.lexists(part):
                os.mkdir(part, 0o700)
                made.append(part)
        info = os.lstat(path)
    except OSError as exc:
        return f"cannot create it ({exc.strerror or exc})"
    if stat.S_ISLNK(info.st_mode):
        return "it is a symbolic link (a cache holds programs: only a real folder of your own is used)"
    if not stat.S_ISDIR(info.st_mode):
        return "it is not a folder"
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return f"it belongs to another user (uid {info.st_uid})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"others may write to it (mode {stat.S_IMODE(info.st_mode):o}; chmod 700 it)"
    if not probe:
        return None
    probe_file = path / f".probe-{os.getpid()}"
    try:
        with open(probe_file, "xb") as handle:
            handle.write(b"\0" * 4096)  # a full disk fails here, not in the middle of a run
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        return f"cannot write to it ({exc.strerror or exc})"
    finally:
        try:
            os.unlink(probe_file)
        except OSError:
            pass
    return None


def checked_folder(root: Path, sub: str) -> tuple[Path | None, str | None]:
    """``root/compile/sub`` checked level by level (each trainer's own, 0700); (folder, None) or (None, why not)."""
    folder = root
    for part in ("", "compile", sub):
        folder = folder / part if part else folder
        problem = own_folder(folder, probe=part == sub)
        if problem:
            return None, f"{folder}: {problem}"
    return folder, None


def count_entries(folder: Path | None) -> int:
    """How many entries the cache folder holds (files whose name does not start with a dot)."""
    if folder is None:
        return 0
    try:
        return sum(1 for entry in os.scandir(folder) if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False))
    except OSError:
        return 0


@dataclass
class CompileCache:
    """The compilation cache of one run: where, what it held at the start, and why none when there is none."""

    backend: str
    folder: Path | None = None
    entries_at_start: int = 0
    notice: str | None = None  # why this run has no cache (shown once), None when it has one or none is expected
    reason: str = ""  # the header's words when there is no folder
    counts_at_start: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """The header row: ``~/.cache/trainer/compile/jax-0.10.2 (12 programs from earlier runs)``, or why there is none."""
        if self.folder is None:
            return self.reason
        count = self.entries_at_start
        held = f"{count:,} program{'s' if count != 1 else ''} from earlier runs" if count else "empty: this run fills it"
        return f"{self.folder} ({held})"

    def usage(self) -> str | None:
        """After the first epoch: how many programs came from the cache (``hit``) and how many were compiled (``new``)."""
        if self.folder is None:
            return None
        hits = _COUNTS[_HIT] - self.counts_at_start.get(_HIT, 0)
        requests = _COUNTS[_REQUEST] - self.counts_at_start.get(_REQUEST, 0)
        compiled = max(requests - hits, 0)
        written = max(count_entries(self.folder) - self.entries_at_start, 0)
        verdict = "hit" if hits and not compiled else ("partly hit" if hits else "new")
        return (
            f"compile cache: {verdict}: {hits} of {requests} programs so far read from {self.folder}, "
            f"{compiled} compiled (the folder holds {written} more than at the start)"
            + (" - some could not be stored (JAX's warnings above: a full or unwritable folder); the next run compiles them again"
               if written < compiled and requests else "")
        )


def _count(event: str, **_: Any) -> None:
    if event in _COUNTS:
        _COUNTS[event] += 1


def _set_jax_cache(folder: str | None) -> None:
    """Point JAX's persistent cache at ``folder`` (None: off); JAX reads the setting once, so a change resets it."""
    global _ACTIVE, _LISTENING
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if not _LISTENING:
        jax.monitoring.register_event_listener(_count)
        _LISTENING = True
    if folder != _ACTIVE:
        jax.config.update("jax_compilation_cache_dir", folder)
        compilation_cache.reset_cache()
        _ACTIVE = folder
    if folder is not None:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # no size floor: small CPU programs too


def use_compile_cache(backend: str, environ: Mapping[str, str] | None = None) -> CompileCache:
    """Turn on ``backend``'s persistent compilation cache in trainer's cache folder, before the first compile.

    A folder that cannot be used leaves the run without a cache and gives ``notice`` (one line);
    this never fails a run.
    """
    root = cache_root(environ)
    sub = backend_folder(backend)
    if sub is None:
        what = "TensorFlow keeps compiled programs only for XLA on a GPU" if backend == "tensorflow" else "Keras runs PyTorch without compiling"
        return CompileCache(backend, reason=f"none ({what})")
    if root is None:
        _set_jax_cache(None)
        return CompileCache(backend, reason=f"off ({CACHE_ENV} is {(os.environ if environ is None else environ).get(CACHE_ENV, '')!r})")
    folder, problem = checked_folder(root, sub)
    if folder is None:
        _set_jax_cache(None)
        return CompileCache(
            backend, reason="none (see the notice)",
            notice=f"compile cache not used, this run compiles from scratch: {problem}. Set {CACHE_ENV} to a folder of your own, or {CACHE_ENV}=off.",
        )
    _set_jax_cache(str(folder))
    return CompileCache(backend, folder, count_entries(folder), counts_at_start=dict(_COUNTS))

