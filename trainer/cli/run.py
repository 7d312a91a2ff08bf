"""``trainer run``: train the model a config describes and write a run directory."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from trainer.cli.common import FLAG, SET_HELP, handles_errors, interrupts_as_keyboard_interrupt, quiet_mlflow, quiet_tensorflow

RUN_EPILOG = (
    "Exit codes: 0 done, 1 the run failed (NaN loss, out of memory), 2 bad input (config, data, arguments), "
    "130 interrupted. Every epoch is checkpointed: after Ctrl-C or a crash, add --resume to continue. "
    "backend: jax (or torch) in the config, or KERAS_BACKEND, picks the Keras backend; distribute.strategy spreads a run over devices or machines."
)


@handles_errors
@interrupts_as_keyboard_interrupt()  # SIGTERM is Ctrl-C from the command's first line: TensorFlow's import, fit, the final save
def run(
    config: Path = typer.Argument(..., help="The YAML config file.", show_default=False),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP, show_default=False),
    run_dir: Optional[Path] = typer.Option(
        None, "--run-dir", help="Put the run exactly here (default: <output.dir>/<name>-<YYYYmmdd-HHMMSS>). Must be new or empty.", show_default=False
    ),
    dry_run: bool = typer.Option(False, "--dry-run", metavar=FLAG, help="Validate, load the data, build and compile the model, print its summary; train and write nothing."),
    resume: bool = typer.Option(False, "--resume", metavar=FLAG, help="Continue the run in --run-dir from its last completed epoch (same config; train.epochs may grow)."),
) -> None:
    """Train the model a config describes and write a run directory (config, model.h5, history, metrics)."""
    from trainer.api import prepare_training, resume_hint
    from trainer.cli.progress import RunProgress
    from trainer.console import console, untrusted
    from trainer.errors import RunInterrupted

    overrides = set_ or []
    quiet_mlflow()
    # planned once (config, labels, runtime, run directory); KERAS_BACKEND is set before Keras is imported
    training = prepare_training(config, overrides=overrides, run_dir=run_dir, resume=resume, dry_run=dry_run, events=[RunProgress()], set_environment=True)
    setup, planned_dir = training.setup, training.run_dir
    quiet_tensorflow()
    try:
        result = training.run()
    except RunInterrupted as error:
        error.hint = resume_hint(config, training.run_dir, overrides)
        raise
    if dry_run:
        console.print(result.model_summary)
        console.print("[ok]dry run:[/ok] config, data and model are fine; nothing was trained or written.")
        return
    if not setup.is_chief:
        console.print(f"process {setup.process_id} of {setup.num_processes} finished; process 0 writes the run directory {untrusted(planned_dir)}", soft_wrap=True)
        return
    print_summary(result)


# metrics.json holds every figure of inference.scores; the table keeps the two people quote most (macro F1, balanced accuracy)
SUMMARY_ONLY_IN_FILE = ("macro_precision", "weighted_precision", "macro_recall", "weighted_recall", "weighted_f1")


def print_summary(result) -> None:
    """The final table: status, epochs, validation and test numbers, throughput, wall time; then the run directory."""
    from trainer.console import console, key_value_table, print_table, untrusted

    test = result.metrics.get("test") or {}
    validation = result.metrics.get("validation") or {}
    print_table(
        key_value_table(
            "run finished",
            [
                ("status", result.status),
                *((("reason", result.reason),) if result.reason else ()),
                ("epochs", result.metrics.get("epochs_completed")),
                *((f"validation {k}", v) for k, v in validation.items() if k in ("loss", "accuracy")),
                *((f"test {k}", v) for k, v in test.items() if k not in SUMMARY_ONLY_IN_FILE),
                *((("test", "none (the data has no test split)"),) if result.status == "completed" and not test else ()),
                *((f"test tta ({(result.metrics.get('test_tta') or {}).get('mode')}) {k}", v) for k, v in (result.metrics.get("test_tta") or {}).items() if k in ("loss", "accuracy", "macro_f1")),
                ("examples per second", (result.history[-1] if result.history else {}).get("examples_per_second")),
                ("wall seconds", result.metrics.get("wall_seconds")),
            ],
        )
    )
    console.print(f"run directory: {untrusted(result.run_dir)}", soft_wrap=True)
