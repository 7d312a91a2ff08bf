"""Errors a user can cause, each carrying the exit code the CLI turns it into.

Anything that is *not* a ``TrainerError`` is a bug in trainer and keeps its traceback.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

# Set by the CLI's signal handler (SIGINT, SIGTERM) before it raises KeyboardInterrupt. TensorFlow's C++
# tensor conversion swallows a KeyboardInterrupt raised inside it and raises a TypeError of its own
# ("Failed to convert elements of ..."); the flag says that such an error was really the interrupt.
_interrupt_requested = False


def request_interrupt() -> None:
    global _interrupt_requested
    _interrupt_requested = True


def clear_interrupt() -> None:
    global _interrupt_requested
    _interrupt_requested = False


def interrupt_requested() -> bool:
    """Whether Ctrl-C or SIGTERM arrived in this command: any error after it counts as the interrupt."""
    return _interrupt_requested


def follows_interrupt(exc: BaseException) -> bool:
    """An error that is really the interrupt: any non-trainer ``Exception`` raised after Ctrl-C or SIGTERM."""
    return _interrupt_requested and isinstance(exc, Exception) and not isinstance(exc, TrainerError)


class TrainerError(Exception):
    """Base class: a message meant for the user and an exit code."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class BadInputError(TrainerError):
    """Anything the user gave us (config, data, files, arguments) is wrong: exit 2."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(BadInputError):
    """The config (file or ``--set``) is invalid. May carry several problems at once."""

    def __init__(self, message: str, *, problems: list[str] | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.problems = list(problems or [])

    def __str__(self) -> str:
        lines = [self.message, *(f"  - {p}" for p in self.problems)]
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)


class DataError(BadInputError):
    """A data file or folder is missing, malformed or disagrees with the config."""


class RunDirError(BadInputError):
    """The run directory cannot be used (exists, locked, not writable)."""


class RunFailedError(TrainerError):
    """Training started but could not finish (NaN loss, out of memory, ...): exit 1."""

    exit_code = EXIT_FAILED


class OutputError(TrainerError):
    """A file could not be written (full disk, I/O error): exit 1; nothing was replaced and no temporary file is left."""

    exit_code = EXIT_FAILED


class RunInterrupted(TrainerError):
    """The user pressed Ctrl-C or the process got SIGTERM: exit 130."""

    exit_code = EXIT_INTERRUPTED
