"""The ``trainer`` command line: one module per command, each parsing, calling ``trainer.api``, rendering.

TensorFlow is imported only inside the bodies of commands that need it, so ``--help`` and
``trainer validate`` stay fast. A new command is a function in ``trainer.api`` and a module here
with one function, added to ``COMMANDS`` below; below ``trainer.api`` a command imports only the
console, the errors and the event types it renders (tests/cli/test_cli_door.py).
"""
from __future__ import annotations

import os
import sys
from typing import Any

import typer

from trainer import __version__
from trainer.cli.catalogue import list_catalogue
from trainer.cli.compare import compare
from trainer.cli.evaluate import eval_
from trainer.cli.export import export
from trainer.cli.lr_find import LR_FIND_EPILOG, lr_find
from trainer.cli.predict import predict
from trainer.cli.report import REPORT_EPILOG, report
from trainer.cli.run import RUN_EPILOG, run
from trainer.cli.runs import runs
from trainer.cli.serve import SERVE_EPILOG, serve
from trainer.cli.sweep import SWEEP_EPILOG, sweep
from trainer.cli.validate import validate

app = typer.Typer(
    name="trainer",
    help="Train, evaluate and use Keras image classifiers from one YAML config.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# (name, function, extra typer.command settings), in the order --help lists them
COMMANDS: list[tuple[str, Any, dict[str, Any]]] = [
    ("validate", validate, {}),
    ("run", run, {"epilog": RUN_EPILOG}),
    ("eval", eval_, {}),
    ("predict", predict, {}),
    ("export", export, {}),
    ("sweep", sweep, {"epilog": SWEEP_EPILOG}),
    ("lr-find", lr_find, {"epilog": LR_FIND_EPILOG}),
    ("serve", serve, {"epilog": SERVE_EPILOG}),
    ("report", report, {"epilog": REPORT_EPILOG}),
    ("compare", compare, {}),
    ("runs", runs, {}),
    ("list", list_catalogue, {}),
]
for _name, _command, _settings in COMMANDS:
    app.command(_name, **_settings)(_command)


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"trainer {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", metavar="", callback=version_callback, is_eager=True, help="Show the version and exit."),
) -> None:
    """Train, evaluate and use Keras image classifiers from one YAML config."""


def entrypoint() -> None:
    """The ``trainer`` console script."""
    try:
        app()
        code: Any = 0
    except SystemExit as done:
        code = done.code
    if ("tensorflow" in sys.modules or "keras" in sys.modules) and isinstance(code, (int, type(None))):
        # Every file is written, fsynced and closed by now. The exit handlers still run (they
        # remove TensorFlow's temporary autograph files, flush logs); the interpreter's module
        # teardown after them takes about a second with TensorFlow (0.7 s with Keras on JAX) and
        # does nothing the user needs, so skip it.
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)
    raise SystemExit(code)
