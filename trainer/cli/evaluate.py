"""``trainer eval``: measure a finished run on a split and write the report and confusion matrix."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from trainer.cli.common import CODE_HELP, CONFIG_HELP, FLAG, handles_errors, interrupts_as_keyboard_interrupt, prepare_keras

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
    from trainer.console import info, key_value_table, print_table, records_table
    from trainer.errors import ConfigError
    from trainer.inference.evaluate import SPLITS

    if split not in SPLITS:
        raise ConfigError(f"--split: unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if tta is not None:
        from trainer.config.evaluate import check_tta_mode

        check_tta_mode(tta)
    from trainer.inference.load import open_run
    from trainer.outputs import check_writable_dir

    if output is not None:
        check_eval_outputs(output, split, overwrite, output)
    run_dir = open_run(target, config)[2]  # paths, manifest: refused before TensorFlow starts
    if output is None:
        check_writable_dir(run_dir, f"eval writes eval-{split}.json into {run_dir}; pass --output FILE elsewhere, because it")
        check_eval_outputs(run_dir / f"eval-{split}.json", split, overwrite, None)
    tracked = open_named_tracking(run_dir, mlflow, config, set_ or [])  # a store the user named, checked before evaluating
    prepare_keras()
    from trainer.inference.evaluate import evaluate_run, write_eval_report
    from trainer.inference.load import load_run
    from trainer.inference.plots import confusion_matrix_file, write_confusion_matrix
    from trainer.outputs import Made

    loaded = load_run(target, config_path=config, overrides=set_ or [], code_dirs=code or [])
    result = evaluate_run(loaded, split, tta)
    report = output or loaded.run_dir / f"eval-{split}.json"
    picture = report.parent / confusion_matrix_file(split)
    made = Made()
    with made.undone_on_error():  # a report that cannot be written takes the new picture with it
        new_picture = not (picture.exists() or picture.is_symlink())
        write_confusion_matrix(result.confusion_matrix, result.class_names, picture, f"{split}: rows true class, columns predicted",
                               overwrite=overwrite, what=_picture_what(output))
        if new_picture:
            made.track_file(picture)
        write_eval_report(result, report, overwrite=overwrite, what=_report_what(output))

    metrics = [(name, value) for name, value in result.metrics.items() if name not in ("loss", "accuracy")]
    averaged = [(f"tta ({result.tta['mode']}, {result.tta['views']} views) {name}", result.tta[name]) for name in ("loss", "accuracy")] if result.tta else []
    summary = [(name.replace("_", " "), value) for name, value in result.summary.items()]
    print_table(key_value_table(f"eval on {split}", [("examples", result.examples), ("loss", result.loss), ("accuracy", result.accuracy), *summary, *metrics, *averaged]))
    print_table(records_table("per class", result.per_class, ["class", "name", "precision", "recall", "f1", "support"]))
    if len(result.confusion_matrix) <= 20:
        names = column_names(result.class_names, len(result.confusion_matrix))
        rows = [{"true / predicted": names[i], **{names[j]: count for j, count in enumerate(row)}} for i, row in enumerate(result.confusion_matrix)]
        print_table(records_table("confusion matrix (rows true class, columns predicted)", rows, ["true / predicted", *names]))
    info(f"report: {report}\nconfusion matrix: {picture}", soft_wrap=True)
    if tracked is not None:
        log_report(tracked, [report, picture], {"loss": result.loss, "accuracy": result.accuracy, **result.summary}, split)
    else:
        from trainer.console import notice
        from trainer.integrations.mlflow import evaluation_hint

        hint = evaluation_hint(loaded.run_dir)  # reads tracking.json, contacts nothing
        if hint:
            notice(hint)


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


def _report_what(output: Optional[Path]) -> str:
    return "--output" if output is not None else "the report"


def _picture_what(output: Optional[Path]) -> str:
    return "the confusion matrix beside --output" if output is not None else "the confusion matrix"


def check_eval_outputs(report: Path, split: str, overwrite: bool, output: Optional[Path]) -> None:
    """The report and the confusion matrix beside it, under the output rule (trainer.outputs): checked before any work."""
    from trainer.inference.evaluate import is_eval_report
    from trainer.inference.plots import confusion_matrix_file, is_trainer_png
    from trainer.outputs import check_output_file

    from trainer.errors import ConfigError

    expected = f"a file name for the JSON report, such as {report / f'eval-{split}.json'}"
    picture = report.parent / confusion_matrix_file(split)
    if report.name == picture.name:
        raise ConfigError(f"--output {report}: is the name of the confusion matrix eval writes beside the report; choose another name, such as {report.with_name(f'eval-{split}.json')}.")
    check_output_file(report, _report_what(output), overwrite=overwrite, is_own=is_eval_report, expected=expected)
    check_output_file(picture, _picture_what(output), overwrite=overwrite, is_own=is_trainer_png, expected="a .png file name")


TRACKING_KEYS = ("tracking", "tracking.mlflow", "tracking.mlflow.uri")


def open_named_tracking(run_dir: Path, flag: Optional[str], config: Optional[Path], overrides: List[str]):
    """The run's MLflow run in the store the user named; None when none is named (or, named by --config only, it cannot be used).

    ``--mlflow URI`` and ``--set tracking.mlflow...`` ask for tracking: any refusal exits 2. A
    ``--config`` whose ``tracking.mlflow`` names a store is the tracking of the user's own config:
    a refusal is one notice, and eval goes on (the tracker is optional). The run directory's own
    config.yaml and tracking.json never choose where eval connects.
    """
    from trainer.integrations.mlflow import open_tracked_run

    if flag is not None:
        return open_tracked_run(run_dir, flag, "--mlflow")
    named = [o for o in overrides if o.split("=", 1)[0].strip() in TRACKING_KEYS]
    if config is None and not named:
        return None
    from trainer.config import load_config
    from trainer.console import notice
    from trainer.errors import BadInputError
    from trainer.integrations.mlflow import resolve_uri
    from trainer.readers.tracking_files import TRACKING_FILE

    # the user's own inputs only: their --config (or the defaults) and their tracking/output overrides
    own = load_config(config, named + [o for o in overrides if o.split("=", 1)[0].strip().startswith("output.")])
    if own.tracking.mlflow is None:
        return None
    uri = resolve_uri(own, create=False)
    if named:
        return open_tracked_run(run_dir, uri, "tracking.mlflow.uri")
    if not (run_dir / TRACKING_FILE).exists():
        notice(f"not logged to MLflow: {run_dir / TRACKING_FILE} is missing (the run was trained without tracking).")
        return None
    try:
        tracked = open_tracked_run(run_dir, uri, f"tracking.mlflow.uri (of {config})")
    except BadInputError as error:
        notice(f"not logged to MLflow: {error.message}")
        return None
    tracked.required = False
    return tracked


def log_report(tracked, files: List[Path], metrics: dict, split: str) -> None:
    """Add the report to the MLflow run; a failure exits 2 when tracking was asked for, else it is a notice."""
    from trainer.console import info, notice
    from trainer.errors import BadInputError
    from trainer.integrations.mlflow import log_evaluation

    try:
        run_id = log_evaluation(tracked, files, metrics, split)
    except BadInputError as error:
        if tracked.required:
            raise
        notice(error.message)
        return
    info(f"logged to MLflow run {run_id} at {tracked.uri}", soft_wrap=True)
