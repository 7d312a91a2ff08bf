"""The ``trainer`` command line. Thin commands: parse, call one library function, print.

TensorFlow is imported only inside the bodies of commands that need it, so ``--help`` and
``trainer validate`` stay fast.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from . import __version__
from trainer.errors import EXIT_INTERRUPTED, RunInterrupted, TrainerError

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
    from trainer.config.checks import plan_run
    from trainer.config import load_config
    from trainer.console import info, notice

    loaded = load_config(config, set_ or [])
    plan = plan_run(loaded)
    for text in plan.notices:
        notice(text)
    info(
        f"{config}: valid. {loaded.model.type} on {loaded.data.dataset}, loss {plan.loss_name} "
        f"with {plan.encoding} labels, {loaded.train.epochs} epochs of batch {loaded.train.batch_size}."
    )


RUN_EPILOG = (
    "Exit codes: 0 done, 1 the run failed (NaN loss, out of memory), 2 bad input (config, data, arguments), "
    "130 interrupted. Every epoch is checkpointed: after Ctrl-C or a crash, add --resume to continue. "
    "KERAS_BACKEND=jax trains on JAX; distribute.strategy spreads a run over devices or machines."
)


@app.command(epilog=RUN_EPILOG)
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
    from trainer.config.checks import plan_run
    from trainer.config import load_config
    from trainer.console import TrainingProgress, console, key_value_table, print_table
    from trainer.run.rundir import check_new_run_dir, default_run_dir

    loaded = load_config(config, set_ or [])
    plan_run(loaded)  # a loss/label/model mismatch is refused before TensorFlow is even imported
    setup = prepare_distribution(loaded, resume)  # backend chosen and processes met before Keras is imported
    target = run_dir or default_run_dir(loaded.output.dir, loaded.name)
    resume_state = None
    if resume:
        resume_state = check_resume_options(config, target if run_dir else None, loaded, dry_run)
    elif not dry_run and setup.is_chief:
        check_new_run_dir(target)  # created only once data and model are ready

    quiet_tensorflow()
    from trainer.run.training import run_training

    with interrupts_as_keyboard_interrupt():
        try:
            result = run_training(
                loaded, None if dry_run else target, reporter=TrainingProgress(), dry_run=dry_run, resume=resume_state, distribute=setup
            )
        except RunInterrupted as error:
            error.hint = interrupted_hint(config, target, set_ or [])
            raise
    if dry_run:
        console.print(result.model_summary)
        console.print("[ok]dry run:[/ok] config, data and model are fine; nothing was trained or written.")
        return
    if not setup.is_chief:
        console.print(f"process {setup.process_id} of {setup.num_processes} finished; process 0 writes the run directory {target}", soft_wrap=True)
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
                ("examples per second", (result.history[-1] if result.history else {}).get("examples_per_second")),
                ("wall seconds", result.metrics.get("wall_seconds")),
            ],
        )
    )
    console.print(f"run directory: {target}", soft_wrap=True)


CONFIG_HELP = "The YAML config the model was trained with, when TARGET is a model file rather than a run directory."


@app.command("eval")
@handles_errors
def eval_(
    target: Path = typer.Argument(..., help="A run directory (config.yaml + model.h5), or a model file with --config.", show_default=False),
    split: str = typer.Option("test", "--split", help="Which split to measure: test, train or validation."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override the run's config for this evaluation only, e.g. --set data.path=/data/mnist.npz. Repeatable.", show_default=False),
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP, show_default=False),
    output: Optional[Path] = typer.Option(None, "--output", help="Write the JSON report here (default: <run dir>/eval-<split>.json); the confusion matrix PNG goes beside it.", show_default=False),
) -> None:
    """Measure a finished run on a split: loss, metrics, per-class precision/recall/F1, confusion matrix."""
    from trainer.console import console, key_value_table, print_table, records_table
    from trainer.errors import ConfigError
    from trainer.inference.evaluate import SPLITS
    from trainer.run.rundir import check_output_file

    if split not in SPLITS:
        raise ConfigError(f"--split: unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if output is not None:
        check_output_file(output, f"a file name for the JSON report, such as {output / f'eval-{split}.json'}")
    choose_keras_backend()
    quiet_tensorflow()
    from trainer.inference.evaluate import evaluate_run, load_run
    from trainer.inference.plots import confusion_matrix_file, write_confusion_matrix
    from trainer.run.rundir import atomic_write_json

    loaded = load_run(target, config_path=config, overrides=set_ or [])
    result = evaluate_run(loaded, split)
    report = output or loaded.run_dir / f"eval-{split}.json"
    picture = report.parent / confusion_matrix_file(split)
    write_confusion_matrix(result.confusion_matrix, result.class_names, picture, f"{split}: rows true class, columns predicted")
    atomic_write_json(report, result.to_dict())

    metrics = [(name, value) for name, value in result.metrics.items() if name not in ("loss", "accuracy")]
    print_table(key_value_table(f"eval on {split}", [("examples", result.examples), ("loss", result.loss), ("accuracy", result.accuracy), *metrics]))
    print_table(records_table("per class", result.per_class, ["class", "name", "precision", "recall", "f1", "support"]))
    if len(result.confusion_matrix) <= 20:
        names = result.class_names
        rows = [{"true / predicted": names[i], **{names[j]: count for j, count in enumerate(row)}} for i, row in enumerate(result.confusion_matrix)]
        print_table(records_table("confusion matrix (rows true class, columns predicted)", rows))
    console.print(f"report: {report}\nconfusion matrix: {picture}", soft_wrap=True)


@app.command()
@handles_errors
def predict(
    target: Path = typer.Argument(..., help="A run directory (config.yaml + model.h5), or a model file with --config.", show_default=False),
    inputs: List[Path] = typer.Argument(..., help="Image files (PNG, JPEG, BMP, GIF), folders of images, or .npy arrays (one image or a batch, raw pixels 0..255).", show_default=False),
    top_k: int = typer.Option(3, "--top-k", min=1, help="How many of the most likely classes to list per image."),
    output: Optional[Path] = typer.Option(None, "--output", help="Also write the predictions to FILE.json (everything) or FILE.csv (input, index, predicted, name, probability).", show_default=False),
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP, show_default=False),
) -> None:
    """Classify images with a finished run; inputs are converted the way the training data was."""
    from trainer.console import notice, print_table, records_table
    from trainer.inference.predict import check_output_path

    if output is not None:
        check_output_path(output)
    choose_keras_backend()
    quiet_tensorflow()
    from trainer.inference.evaluate import load_run
    from trainer.inference.predict import load_inputs, predict_records, write_predictions

    loaded = load_run(target, config_path=config)
    images = load_inputs(inputs, loaded.input_shape)
    for text in images.notices:
        notice(text)
    records = predict_records(loaded, images, top_k)
    if output is not None:
        write_predictions(records, output)
    rows = [
        {
            "input": short_path(r["input"]) + ("" if r["index"] is None else f"[{r['index']}]"),
            "predicted": r["predicted"],
            "name": r["name"],
            "probability": r["probability"],
            f"top {top_k}": "  ".join(f"{t['name']}:{t['probability']:.2f}" for t in r["top_k"]),
        }
        for r in records
    ]
    print_table(records_table(f"predictions ({len(records)} images)", rows))


def short_path(path: str, limit: int = 36) -> str:
    """A long path as its last parts (``.../folder/file.png``), so a table keeps the file name visible."""
    if len(path) <= limit:
        return path
    parts = Path(path).parts
    return os.sep.join(["…", *parts[-2:]]) if len(parts) > 2 else path


@app.command()
@handles_errors
def runs(
    folder: Optional[Path] = typer.Argument(None, help="The folder holding run directories (default: output.dir's default, outputs).", show_default=False),
) -> None:
    """List the runs in a folder: name, status, epochs, validation and test accuracy, wall time, oldest first."""
    from trainer.config import OutputConfig
    from trainer.console import info, print_table, records_table
    from trainer.run.listing import list_runs

    root = folder or Path(OutputConfig().dir)
    found = list_runs(root)
    if not found:
        info(f"no runs under {root}.")
        return
    headers = {"validation_accuracy": "val acc", "test_accuracy": "test acc", "wall_seconds": "seconds"}
    rows = [{headers.get(key, key): value for key, value in row.items()} for row in found]
    print_table(records_table(f"runs under {root}", rows))


@app.command("list")
@handles_errors
def list_catalogue(
    catalogue: str = typer.Argument(..., help="Which catalogue: losses, metrics, optimizers or callbacks.", show_default=False),
) -> None:
    """Show a catalogue (losses, metrics, optimizers, callbacks) with each entry's parameters and defaults."""
    from trainer.catalogue.overview import CATALOGUES, catalogue_rows
    from trainer.console import print_table, records_table

    if catalogue in CATALOGUES and catalogue != "losses":
        quiet_tensorflow()  # the parameters are read from the Keras classes themselves
    rows = catalogue_rows(catalogue)
    print_table(records_table(catalogue, rows))
    if catalogue != "losses":
        typer.echo("Custom entries: name: 'my_module:Name' (a module beside the config or in the working directory).")


def check_resume_options(config: Path, run_dir: Optional[Path], loaded: Any, dry_run: bool) -> Any:
    """``--resume`` needs ``--run-dir`` and no ``--dry-run``; the checkpoint and config must fit (no TensorFlow yet)."""
    from trainer.run.checkpoint import check_resume
    from trainer.errors import BadInputError

    if run_dir is None:
        raise BadInputError("--resume needs --run-dir DIR: the run directory to continue.")
    if dry_run:
        raise BadInputError("--resume and --dry-run cannot be combined.")
    return check_resume(run_dir, loaded)


def choose_keras_backend(strategy: str = "none") -> tuple[str, str | None]:
    """Decide the Keras backend before Keras is imported (KERAS_BACKEND; multi_worker picks JAX); refuse what cannot run."""
    import sys

    from trainer.runtime.distribute import backend_environment, check_backend_installed, choose_backend

    keras_module = sys.modules.get("keras")
    loaded = keras_module.backend.backend() if keras_module is not None and hasattr(keras_module, "backend") else None
    backend, notice = choose_backend(strategy, os.environ, loaded)
    check_backend_installed(backend)
    if loaded is None:
        os.environ.update(backend_environment(backend, os.environ))
    return backend, notice


def prepare_distribution(loaded: Any, resume: bool) -> Any:
    """Resolve ``distribute`` (config, environment, Slurm), pick the backend and, for multi_worker, wait for every process.

    The wait is bounded (``distribute.timeout_seconds``) and happens before TensorFlow or JAX start,
    so an unreachable coordinator is a clear exit 2, never a hang.
    """
    from trainer.console import notice
    from trainer.runtime.distribute import rendezvous, resolve_distribute
    from trainer.errors import BadInputError

    backend, picked = choose_keras_backend(loaded.distribute.strategy)
    setup = resolve_distribute(loaded.distribute, os.environ, backend)
    if picked:
        setup.notices.insert(0, picked)
    if setup.multi_process and resume:
        raise BadInputError("--resume is not supported with distribute.strategy multi_worker yet; resume with strategy none, or start a new run.")
    if setup.multi_process:
        if setup.is_chief:
            notice(f"process 0 of {setup.num_processes}: waiting up to {setup.timeout_seconds:g} s for the others on {setup.coordinator_address}")
        rendezvous(setup)
    return setup


def interrupted_hint(config: Path, run_dir: Path, overrides: List[str]) -> str:
    """What to type next after Ctrl-C: the exact resume command, or why there is nothing to resume."""
    from trainer.run.checkpoint import read_checkpoint_quiet, resume_command

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
    try:
        app()
        code: Any = 0
    except SystemExit as done:
        code = done.code
    if "tensorflow" in sys.modules and isinstance(code, (int, type(None))):
        # Every file is written, fsynced and closed by now. The exit handlers still run (they
        # remove TensorFlow's temporary autograph files, flush logs); the interpreter's module
        # teardown after them takes about a second and does nothing the user needs, so skip it.
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)
    raise SystemExit(code)
