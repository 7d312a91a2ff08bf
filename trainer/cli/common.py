"""What every command shares: error handling, quiet TensorFlow start-up, SIGTERM as Ctrl-C, help texts.

Only the CLI prints, exits, sets environment variables and installs signal handlers; the
library below it never does.
"""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Any, Callable

import typer

from trainer.errors import EXIT_INTERRUPTED, RunInterrupted, TrainerError
from trainer.run.events import RunEvents

# The metavar of an on/off flag: Typer 0.29 would show "<bool>" as if the flag took a value.
FLAG = ""
SET_HELP = "Override a config key with a YAML value, e.g. --set train.epochs=3 or --set model.hidden_units=[128,64]. Repeatable."
CODE_HELP = (
    "A folder to import the model's custom code (module:attr losses, metrics) from. Repeatable. A run directory "
    "never causes code to be imported by itself: without --code only --config's folder and the working directory are used, and only with --config."
)
CONFIG_HELP = "The YAML config the model was trained with, when TARGET is a model file rather than a run directory."


def handles_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a ``TrainerError`` into one message and its exit code; anything else is a bug and keeps its traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from trainer.console import print_error

        try:
            return command(*args, **kwargs)
        except TrainerError as error:
            print_error(error)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            print_error(RunInterrupted("interrupted"))
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper


def quiet_tensorflow() -> None:
    """Import TensorFlow with its native start-up chatter (oneDNN, CUDA probing) kept off the terminal.

    Set TRAINER_TF_LOGS=1 to see it (for CUDA set-up problems). On JAX and PyTorch only Keras is
    imported, and without the optional packages it would load for nothing (as on TensorFlow).
    """
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=".*HDF5 file via `model.save\\(\\)`.*")
    if os.environ.get("TRAINER_TF_LOGS") != "1":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        # JAX and PyTorch train without TensorFlow (trainer.data.batches): it is not imported at all.
        # Keras's own import would still load scikit-learn, pandas, matplotlib and IPython: 2-3 s on JAX here.
        with without_unused_imports():
            import keras  # noqa: F401
        return
    if os.environ.get("TRAINER_TF_LOGS") == "1":
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull, without_unused_imports():
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # the CUDA probe logs here, once
            import keras  # noqa: F401 - here, so that its optional imports are skipped too
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    logging.getLogger("absl").setLevel(logging.ERROR)


def quiet_mlflow() -> None:
    """MLflow announces creating its SQLite tables at INFO on first use; keep the terminal for the run."""
    import logging

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)


# Imported by TensorFlow and Keras at start-up only for features trainer never uses, when they are
# installed (the mlflow, jax and sweep extras bring them): keras.wrappers' scikit-learn estimators,
# pandas inputs to fit, keras.visualization's pyplot galleries, the legacy tf.compat.v1 Keras's
# scipy.sparse inputs, tf.lite's converter from JAX functions, and IPython for the notebook display of
# keras.saving's file editor. Together 1-2 s of every command that loads TensorFlow on this project's
# machine. JAX is skipped only on the TensorFlow backend (the JAX backend needs it, and JAX needs
# scipy). TRAINER_LEAN_IMPORT=0 imports all of them as usual.
UNUSED_IMPORTS = ("sklearn", "pandas", "matplotlib", "scipy", "jax", "IPython")
NEEDED_BY_JAX = ("jax", "scipy")


def unused_imports(backend: str | None = None, environ: Any = None) -> tuple[str, ...]:
    """The optional packages to keep out of TensorFlow's and Keras's import for ``backend`` (KERAS_BACKEND by default)."""
    environ = os.environ if environ is None else environ
    if environ.get("TRAINER_LEAN_IMPORT", "1") == "0":
        return ()
    backend = backend or environ.get("KERAS_BACKEND", "tensorflow")
    return tuple(name for name in UNUSED_IMPORTS if backend == "tensorflow" or name not in NEEDED_BY_JAX)


@contextlib.contextmanager
def without_unused_imports(names: tuple[str, ...] | None = None):
    """While TensorFlow and Keras import, make ``names`` (``unused_imports()``) look absent; restored after.

    Keras and TensorFlow then skip the integrations built on them. A module already imported is
    left alone, and afterwards ``import pandas`` (or any of them) works as usual.
    """
    import sys

    names = unused_imports() if names is None else names
    blocked = [name for name in names if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment] - the import system's "not available" marker
    try:
        yield
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


class Notices(RunEvents):
    """A workflow's notices (``on_notice``) as ``notice:`` lines on stderr; every other event is ignored."""

    def on_notice(self, text: str) -> None:
        from trainer.console import notice

        notice(text)


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt():
    """SIGTERM behaves like Ctrl-C (checkpoint kept, metrics.json says interrupted, exit 130).

    Used as a decorator on the commands that run TensorFlow (run, eval, predict), so it holds
    from the command's first line, TensorFlow's import included, to its last. Both signals also
    set ``trainer.errors.interrupt_requested()``: an error that follows the interrupt (TensorFlow
    turns a KeyboardInterrupt raised inside its tensor conversion into a TypeError) is the interrupt.
    """
    import signal
    import threading

    from trainer.errors import clear_interrupt, follows_interrupt, request_interrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupt(signum, frame):
        request_interrupt()
        raise KeyboardInterrupt

    clear_interrupt()
    previous = {number: signal.signal(number, raise_interrupt) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except Exception as exc:  # trainer's own errors (RunInterrupted with its resume command) pass unchanged
        if follows_interrupt(exc):
            raise KeyboardInterrupt from None  # the interrupt, turned into another error by a C++ layer it crossed
        raise
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        clear_interrupt()


def short_path(path: str, limit: int = 36) -> str:
    """A long path as its last parts (``.../folder/file.png``), so a table keeps the file name visible."""
    if len(path) <= limit:
        return path
    parts = Path(path).parts
    return os.sep.join(["…", *parts[-2:]]) if len(parts) > 2 else path
