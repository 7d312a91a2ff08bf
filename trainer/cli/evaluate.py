"""``trainer eval``: measure a finished run on a split and write the report and confusion matrix."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from trainer.cli.common import CODE_HELP, CONFIG_HELP, FLAG, Notices, handles_errors, interrupts_as_keyboard_interrupt, quiet_tensorflow

OVERWRITE_HELP = (
    "Replace an existing report or confusion matrix PNG that trainer did not write (its permissions are kept). Without it such a "
    "file is refused (exit 2) and nothing is computed; trainer's own earlier report and picture are replaced either way. "
    "A symbolic link, folder or FIFO there is always refused."
)
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
    output: Optional[Path] = typer.Option(None, "--output", help="Write the JSON report here (default: <run dir>/eval-<split>.json); the confusion matrix PNG (confusion_matrix-<split>.png) goes beside it.", show_default=False),
    overwrite: bool = typer.Option(False, "--overwrite", metavar=FLAG, help=OVERWRITE_HELP),
    mlflow: Optional[str] = typer.Option(
        None, "--mlflow", metavar="URI", show_default=False,
        help="Add the report to the run's MLflow run in the tracking store at URI, which must be the store the run was logged to "
        "(RUN/tracking.json shows it, credentials masked). Credentials go in the URI or in MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN. "
        "--set tracking.mlflow.uri=URI, or a --config with tracking.mlflow, does the same. Without them eval contacts no tracking store.",
    ),
    tta: Optional[str] = typer.Option(None, "--tta", help=TTA_EVAL_HELP, show_default=False),
) -> None:
    """Measure a finished run on a split: loss, metrics, per-class precision/recall/F1, confusion matrix."""
    from trainer.api import evaluation
    from trainer.console import info, key_value_table, notice, print_table, records_table

    done = evaluation(
        target, split, config=config, overrides=set_ or [], code_dirs=code or [], tta=tta, write=True, output=output, overwrite=overwrite,
        mlflow=mlflow, events=[Notices()], set_environment=True, before_keras=quiet_tensorflow, cli_names=True,
    )
    result = done.result
    metrics = [(name, value) for name, value in result.metrics.items() if name not in ("loss", "accuracy")]
    averaged = [(f"tta ({result.tta['mode']}, {result.tta['views']} views) {name}", result.tta[name]) for name in ("loss", "accuracy")] if result.tta else []
    summary = [(name.replace("_", " "), value) for name, value in result.summary.items()]
    print_table(key_value_table(f"eval on {split}", [("examples", result.examples), ("loss", result.loss), ("accuracy", result.accuracy), *summary, *metrics, *averaged]))
    print_table(records_table("per class", result.per_class, ["class", "name", "precision", "recall", "f1", "support"]))
    if len(result.confusion_matrix) <= 20:
        names = column_names(result.class_names, len(result.confusion_matrix))
        rows = [{"true / predicted": names[i], **{names[j]: count for j, count in enumerate(row)}} for i, row in enumerate(result.confusion_matrix)]
        print_table(records_table("confusion matrix (rows true class, columns predicted)", rows, ["true / predicted", *names]))
    info(f"report: {done.report}\nconfusion matrix: {done.picture}", soft_wrap=True)
    if done.mlflow_run_id is not None:
        info(f"logged to MLflow run {done.mlflow_run_id} at {done.mlflow_uri}", soft_wrap=True)
    elif done.hint:
        notice(done.hint)


def column_names(class_names: List[str], size: int) -> List[str]:
    """One distinct column name per class: a manifest's names may repeat (or be the first column's), so those get their index."""
    names = [str(class_names[i]) if i < len(class_names) else str(i) for i in range(size)]
    taken = {"true / predicted"}
    unique = []
    for index, name in enumerate(names):
        if name in taken or names.count(name) > 1:
            name = f"{index}: {name}"
        while name in taken:
            name = f"{index}: {name}"
        taken.add(name)
        unique.append(name)
    return unique
