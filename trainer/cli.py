"""The ``trainer`` command line. Thin commands: parse, call one library function, print.

TensorFlow is imported only inside the bodies of commands that need it, so ``--help`` and
``trainer validate`` stay fast.
"""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from . import __version__
from .errors import EXIT_INTERRUPTED, RunInterrupted, TrainerError

app = typer.Typer(
    name="trainer",
    help="Train, evaluate and use Keras image classifiers from one YAML config.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

SET_HELP = "Override a config key with a YAML value, e.g. --set train.epochs=3 or --set model.hidden_units=[128,64]. Repeatable."


def handles_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a ``TrainerError`` into one message and its exit code; anything else is a bug and keeps its traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .console import print_error

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

    Set TRAINER_TF_LOGS=1 to see it (for CUDA set-up problems).
    """
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=".*HDF5 file via `model.save\\(\\)`.*")
    if os.environ.get("TRAINER_TF_LOGS") == "1":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # the CUDA probe logs here, once
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    logging.getLogger("absl").setLevel(logging.ERROR)


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"trainer {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True, help="Show the version and exit."),
) -> None:
    """Train, evaluate and use Keras image classifiers from one YAML config."""


@app.command()
@handles_errors
def validate(
    config: Path = typer.Argument(..., help="The YAML config file.", show_default=False),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP, show_default=False),
) -> None:
    """Check a config and the loss / label / model agreement, without TensorFlow (fast)."""
    from .checks import plan_run
    from .config import load_config
    from .console import info, notice

    loaded = load_config(config, set_ or [])
    plan = plan_run(loaded)
    for text in plan.notices:
        notice(text)
    info(
        f"{config}: valid. {loaded.model.type} on {loaded.data.dataset}, loss {plan.loss_name} "
        f"with {plan.encoding} labels, {loaded.train.epochs} epochs of batch {loaded.train.batch_size}."
    )


@app.command()
@handles_errors
def run(
    config: Path = typer.Argument(..., help="The YAML config file.", show_default=False),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP, show_default=False),
    run_dir: Optional[Path] = typer.Option(
        None, "--run-dir", help="Put the run exactly here (default: <output.dir>/<name>-<YYYYmmdd-HHMMSS>). Must be new or empty.", show_default=False
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate, load the data, build and compile the model, print its summary; train and write nothing."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --run-dir from its last completed epoch (same config; train.epochs may grow)."),
) -> None:
    """Train the model a config describes and write a run directory (config, model.h5, history, metrics)."""
    from .checks import plan_run
    from .config import load_config
    from .console import TrainingProgress, console, key_value_table, print_table
    from .rundir import check_new_run_dir, default_run_dir

    loaded = load_config(config, set_ or [])
    plan_run(loaded)  # a loss/label/model mismatch is refused before TensorFlow is even imported
    target = run_dir or default_run_dir(loaded.output.dir, loaded.name)
    resume_state = None
    if resume:
        resume_state = check_resume_options(config, target if run_dir else None, loaded, dry_run)
    elif not dry_run:
        check_new_run_dir(target)  # created only once data and model are ready

    quiet_tensorflow()
    from .training import run_training

    with interrupts_as_keyboard_interrupt():
        try:
            result = run_training(loaded, None if dry_run else target, reporter=TrainingProgress(), dry_run=dry_run, resume=resume_state)
        except RunInterrupted as error:
            error.hint = interrupted_hint(config, target, set_ or [])
            raise
    if dry_run:
        console.print(result.model_summary)
        console.print("[ok]dry run:[/ok] config, data and model are fine; nothing was trained or written.")
        return
    test = result.metrics.get("test") or {}
    validation = result.metrics.get("validation") or {}
    print_table(
        key_value_table(
            "run finished",
            [
                ("status", result.status),
                ("epochs", result.metrics.get("epochs_completed")),
                *((f"validation {k}", v) for k, v in validation.items() if k in ("loss", "accuracy")),
                *((f"test {k}", v) for k, v in test.items()),
                ("wall seconds", result.metrics.get("wall_seconds")),
            ],
        )
    )
    console.print(f"run directory: {target}", soft_wrap=True)


def check_resume_options(config: Path, run_dir: Optional[Path], loaded: Any, dry_run: bool) -> Any:
    """``--resume`` needs ``--run-dir`` and no ``--dry-run``; the checkpoint and config must fit (no TensorFlow yet)."""
    from .checkpoint import check_resume
    from .errors import BadInputError

    if run_dir is None:
        raise BadInputError("--resume needs --run-dir DIR: the run directory to continue.")
    if dry_run:
        raise BadInputError("--resume and --dry-run cannot be combined.")
    return check_resume(run_dir, loaded)


def interrupted_hint(config: Path, run_dir: Path, overrides: List[str]) -> str:
    """What to type next after Ctrl-C: the exact resume command, or why there is nothing to resume."""
    from .checkpoint import read_checkpoint_quiet, resume_command

    if read_checkpoint_quiet(run_dir) is None:
        return "no epoch was completed, so there is nothing to resume; start again with a new --run-dir."
    return f"resume with: {resume_command(config, run_dir, overrides)}"


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt():
    """SIGTERM behaves like Ctrl-C while training (checkpoint kept, metrics.json says interrupted, exit 130)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def entrypoint() -> None:
    """The ``trainer`` console script."""
    app()
