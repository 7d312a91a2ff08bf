"""``trainer eval``: measure a finished run on a split and write the report and confusion matrix."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from trainer.cli.common import CODE_HELP, CONFIG_HELP, handles_errors, interrupts_as_keyboard_interrupt, prepare_keras

TTA_EVAL_HELP = (
    "Also measure with test-time augmentation: none, flip (image + mirror) or flip_translate (those and 2-pixel shifts, 6 views); "
    "probabilities averaged over the views, reported as 'tta' beside the plain numbers (default: the run's evaluate.tta)."
)


@handles_errors
@interrupts_as_keyboard_interrupt()  # SIGTERM is Ctrl-C (exit 130) from the command's first line
def eval_(
    target: Path = typer.Argument(..., help="A run directory (config.yaml + model.h5), or a model file with --config.", show_default=False),
    split: str = typer.Option("test", "--split", help="Which split to measure: test, train or validation."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override the run's config for this evaluation only, e.g. --set data.path=/data/mnist.npz. Repeatable.", show_default=False),
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP, show_default=False),
    code: Optional[List[Path]] = typer.Option(None, "--code", help=CODE_HELP, show_default=False),
    output: Optional[Path] = typer.Option(None, "--output", help="Write the JSON report here (default: <run dir>/eval-<split>.json); the confusion matrix PNG goes beside it.", show_default=False),
    tta: Optional[str] = typer.Option(None, "--tta", help=TTA_EVAL_HELP, show_default=False),
) -> None:
    """Measure a finished run on a split: loss, metrics, per-class precision/recall/F1, confusion matrix."""
    from trainer.console import console, key_value_table, print_table, records_table
    from trainer.errors import ConfigError
    from trainer.inference.evaluate import SPLITS
    from trainer.run.rundir import check_output_file

    if split not in SPLITS:
        raise ConfigError(f"--split: unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if tta is not None:
        from trainer.config.evaluate import check_tta_mode

        check_tta_mode(tta)
    from trainer.inference.load import open_run
    from trainer.run.rundir import check_writable_dir

    if output is not None:
        check_output_file(output, f"a file name for the JSON report, such as {output / f'eval-{split}.json'}")
    run_dir = open_run(target, config)[2]  # paths, manifest: refused before TensorFlow starts
    if output is None:
        check_writable_dir(run_dir, f"eval writes eval-{split}.json into {run_dir}; pass --output FILE elsewhere, because it")
    prepare_keras()
    from trainer.inference.evaluate import evaluate_run
    from trainer.inference.load import load_run
    from trainer.inference.plots import confusion_matrix_file, write_confusion_matrix
    from trainer.run.rundir import atomic_write_json

    loaded = load_run(target, config_path=config, overrides=set_ or [], code_dirs=code or [])
    result = evaluate_run(loaded, split, tta)
    report = output or loaded.run_dir / f"eval-{split}.json"
    picture = report.parent / confusion_matrix_file(split)
    write_confusion_matrix(result.confusion_matrix, result.class_names, picture, f"{split}: rows true class, columns predicted")
    atomic_write_json(report, result.to_dict())

    metrics = [(name, value) for name, value in result.metrics.items() if name not in ("loss", "accuracy")]
    averaged = [(f"tta ({result.tta['mode']}, {result.tta['views']} views) {name}", result.tta[name]) for name in ("loss", "accuracy")] if result.tta else []
    print_table(key_value_table(f"eval on {split}", [("examples", result.examples), ("loss", result.loss), ("accuracy", result.accuracy), *metrics, *averaged]))
    print_table(records_table("per class", result.per_class, ["class", "name", "precision", "recall", "f1", "support"]))
    if len(result.confusion_matrix) <= 20:
        names = result.class_names
        rows = [{"true / predicted": names[i], **{names[j]: count for j, count in enumerate(row)}} for i, row in enumerate(result.confusion_matrix)]
        print_table(records_table("confusion matrix (rows true class, columns predicted)", rows))
    console.print(f"report: {report}\nconfusion matrix: {picture}", soft_wrap=True)
    if loaded.config.tracking.mlflow is not None:
        log_to_mlflow(loaded.run_dir, [report, picture], {"loss": result.loss, "accuracy": result.accuracy}, split)


def log_to_mlflow(run_dir: Path, files: List[Path], metrics: dict, split: str) -> None:
    """Add the report and the confusion matrix to the run's MLflow run; a tracker failure is a notice, not an error."""
    from trainer.console import console, notice
    from trainer.errors import TrainerError
    from trainer.integrations.mlflow import TRACKING_FILE, log_evaluation

    try:
        run_id = log_evaluation(run_dir, files, metrics, split)
    except TrainerError as error:
        notice(f"not logged to MLflow: {error.message}")
        return
    except Exception as exc:  # noqa: BLE001 - the report is written; the tracker must not turn that into a failure
        notice(f"not logged to MLflow ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); the report files are complete.")
        return
    if run_id is None:
        notice(f"not logged to MLflow: {run_dir / TRACKING_FILE} is missing (the run was trained without tracking).")
    else:
        console.print(f"logged to MLflow run {run_id}", soft_wrap=True)
