"""Measure a finished run on any split: evaluate, compute per-class numbers.

``evaluate_run`` loads a split exactly as ``trainer run`` did and returns an ``EvalResult``
(``trainer.inference.load.load_run`` opens the run). Nothing here prints.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer.errors import ConfigError, DataError
from trainer.inference.load import LoadedRun

SPLITS = ("test", "train", "validation")


@dataclass
class EvalResult:
    split: str
    examples: int
    loss: float
    accuracy: float
    metrics: dict[str, float]
    per_class: list[dict[str, Any]]
    confusion_matrix: list[list[int]]
    class_names: list[str] = field(default_factory=list)
    tta: dict[str, Any] | None = None  # test-time augmentation: trainer.inference.tta.tta_scores
    summary: dict[str, float] = field(default_factory=dict)  # summary_scores: macro / weighted P, R, F1, balanced accuracy

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "examples": self.examples,
            "loss": self.loss,
            "accuracy": self.accuracy,
            "metrics": self.metrics,
            "summary": self.summary,
            "per_class": self.per_class,
            "confusion_matrix": self.confusion_matrix,
            "confusion_matrix_normalized": normalized_rows(np.asarray(self.confusion_matrix)).round(6).tolist(),
            **({"tta": self.tta} if self.tta is not None else {}),
        }


def is_eval_report(path: Path) -> bool:
    """Whether ``path`` holds a report as ``trainer eval`` writes it (``{"split": ...`` to its closing brace): the output rule's recogniser."""
    from trainer.outputs import starts_and_ends_with

    return starts_and_ends_with(path, b'{\n  "split": "', b"\n}\n")


def write_eval_report(result: EvalResult, path: Path, *, overwrite: bool = False, what: str = "--output") -> Path:
    """The report as JSON under the output rule (``trainer.outputs.write_file``): a new file or an eval report, else only with ``overwrite``."""
    import json

    from trainer.outputs import _json_default, write_file

    text = json.dumps(result.to_dict(), indent=2, default=_json_default) + "\n"
    return write_file(path, text, what, overwrite=overwrite, is_own=is_eval_report, expected="a .json file name")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts with rows = true class, columns = predicted class."""
    flat = y_true.astype(np.int64) * num_classes + y_pred.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_scores(matrix: np.ndarray, class_names: list[str]) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    correct = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    support = matrix.sum(axis=1)
    rows = []
    for index in range(len(matrix)):
        precision = correct[index] / predicted[index] if predicted[index] else 0.0
        recall = correct[index] / support[index] if support[index] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({
            "class": index,
            "name": class_names[index] if index < len(class_names) else str(index),
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(support[index]),
        })
    return rows


def normalized_rows(matrix: np.ndarray) -> np.ndarray:
    """The confusion matrix with each row (a true class) divided by its count: recall on the diagonal; a class never seen stays 0."""
    matrix = np.asarray(matrix, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def summary_scores(matrix: np.ndarray) -> dict[str, float]:
    """The figures people report, from a confusion matrix: macro (each class alike) and weighted (by support) precision,
    recall and F1, and balanced accuracy, as scikit-learn defines them (``zero_division=0``).

    Macro averages run over the classes that occur in the split or among the predictions (scikit-learn's
    ``labels=None``); weighted ones and balanced accuracy (the mean recall) over the classes that occur in the split.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    correct, predicted, support = np.diag(matrix), matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(correct, predicted, out=np.zeros_like(correct), where=predicted > 0)
    recall = np.divide(correct, support, out=np.zeros_like(correct), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(correct), where=both > 0)
    seen, present = (support > 0) | (predicted > 0), support > 0
    scores: dict[str, float] = {}
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        scores[f"macro_{name}"] = float(values[seen].mean()) if seen.any() else 0.0
        scores[f"weighted_{name}"] = float((values * support).sum() / support.sum()) if support.sum() else 0.0
    scores["balanced_accuracy"] = float(recall[present].mean()) if present.any() else 0.0
    return scores


def check_same_validation_split(run: LoadedRun, data: Any, split: str) -> None:
    """``--split validation`` measures the examples the run held out: the split recorded in manifest.json, or a DataError."""
    recorded = run.manifest.validation_split if run.manifest is not None else None
    if split != "validation" or recorded is None:
        return
    now = data.validation_split
    if now is None or now.get("digest") != recorded.get("digest"):
        got = "no fraction split" if now is None else f"data.validation {now['fraction']} with seed {now['seed']} ({now['validation']} examples)"
        raise DataError(
            f"--split validation: the run held out data.validation {recorded['fraction']} with seed {recorded['seed']} "
            f"({recorded['validation']} examples, manifest.json), but this evaluation would take {got}; these are other "
            "examples (some the model trained on). Drop the --set/--config that changes data.validation, seed or data.path."
        )


def evaluate_run(run: LoadedRun, split: str = "test", tta: str | None = None) -> EvalResult:
    """Evaluate ``run`` on ``split`` loaded exactly as training loaded it (same preprocessing, limits, encoding).

    ``tta``: a test-time augmentation mode (``trainer.inference.tta``) measured besides the plain
    numbers, as ``EvalResult.tta``; None takes the run's ``evaluate.tta``.
    """
    from trainer.config.evaluate import check_tta_mode
    from trainer.data.loaders import load_data
    from trainer.data.batches import make_batches
    from trainer.data.streaming import surfacing_data_errors

    if split not in SPLITS:
        raise ConfigError(f"--split: unknown split {split!r}; valid: {', '.join(SPLITS)}")
    config = run.config
    tta = check_tta_mode(config.evaluate.tta if tta is None else tta)
    data = load_data(config.data, seed=config.seed)
    x, y = data.split(split)
    check_same_validation_split(run, data, split)
    if tuple(x.shape[1:]) != run.input_shape:
        raise DataError(
            f"{data.source}: images are {tuple(x.shape[1:])} but the model {run.model_path} takes {run.input_shape}; "
            "point data.path (--set data.path=...) at the dataset the model was trained on."
        )
    if data.num_classes != run.num_classes:
        raise DataError(
            f"{data.source}: {data.dataset} has {data.num_classes} classes but the model {run.model_path} "
            f"predicts {run.num_classes}."
        )
    if len(x) == 0:
        raise DataError(f"{data.source}: the {split} split is empty.")
    dataset = make_batches(
        x, y, batch_size=config.train.batch_size, encoding=run.label_encoding, num_classes=run.num_classes
    )
    with surfacing_data_errors():  # an image gone or undecodable while streaming: one DataError naming it
        scores = {k: float(v) for k, v in run.model.evaluate(dataset, verbose=0, return_dict=True).items()}
        outputs = run.model.predict(dataset, verbose=0)
    predicted = np.asarray(outputs).argmax(axis=1)
    matrix = confusion_matrix(y, predicted, run.num_classes)
    averaged = None
    if tta != "none":
        from trainer.inference.tta import tta_scores

        averaged = tta_scores(run.model, x, y, run.model_output, tta, config.train.batch_size)
    per_class = per_class_scores(matrix, run.class_names)
    return EvalResult(
        split=split,
        examples=int(len(y)),
        loss=scores.get("loss", float("nan")),
        accuracy=float(np.mean(predicted == y)),
        metrics=scores,
        per_class=per_class,
        summary=summary_scores(matrix),
        confusion_matrix=matrix.tolist(),
        class_names=list(run.class_names),
        tta=averaged,
    )


# --------------------------------------------------------------------------- the report on disk and in MLflow
# What ``trainer eval`` and ``trainer.evaluate(..., write=True)`` write and log (trainer.api.evaluation runs the steps).


def _report_what(output: Path | None) -> str:
    return "--output" if output is not None else "the report"


def _picture_what(output: Path | None) -> str:
    return "the confusion matrix beside --output" if output is not None else "the confusion matrix"


def check_eval_outputs(report: Path, split: str, overwrite: bool, output: Path | None) -> None:
    """The report and the confusion matrix beside it, under the output rule (trainer.outputs): checked before any work."""
    from trainer.inference.plots import confusion_matrix_file, is_trainer_png
    from trainer.outputs import check_output_file

    expected = f"a file name for the JSON report, such as {report / f'eval-{split}.json'}"
    picture = report.parent / confusion_matrix_file(split)
    if report.name == picture.name:
        raise ConfigError(f"--output {report}: is the name of the confusion matrix eval writes beside the report; choose another name, such as {report.with_name(f'eval-{split}.json')}.")
    check_output_file(report, _report_what(output), overwrite=overwrite, is_own=is_eval_report, expected=expected)
    check_output_file(picture, _picture_what(output), overwrite=overwrite, is_own=is_trainer_png, expected="a .png file name")


def write_eval_files(result: EvalResult, report: Path, *, overwrite: bool, output: Path | None) -> Path:
    """The confusion matrix PNG beside ``report``, then the report; a report that cannot be written takes the new picture with it.

    Returns the picture's path.
    """
    from trainer.inference.plots import confusion_matrix_file, write_confusion_matrix
    from trainer.outputs import Made

    split = result.split
    picture = report.parent / confusion_matrix_file(split)
    made = Made()
    with made.undone_on_error():
        new_picture = not (picture.exists() or picture.is_symlink())
        write_confusion_matrix(result.confusion_matrix, result.class_names, picture, f"{split}: rows true class, columns predicted",
                               overwrite=overwrite, what=_picture_what(output))
        if new_picture:
            made.track_file(picture)
        write_eval_report(result, report, overwrite=overwrite, what=_report_what(output))
    return picture


TRACKING_KEYS = ("tracking", "tracking.mlflow", "tracking.mlflow.uri")


def open_named_tracking(run_dir: Path, flag: str | None, config: Path | None, overrides: list[str], on_notice: Any):
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
        on_notice(f"not logged to MLflow: {run_dir / TRACKING_FILE} is missing (the run was trained without tracking).")
        return None
    try:
        tracked = open_tracked_run(run_dir, uri, f"tracking.mlflow.uri (of {config})")
    except BadInputError as error:
        on_notice(f"not logged to MLflow: {error.message}")
        return None
    tracked.required = False
    return tracked


def log_report(tracked: Any, files: list[Path], metrics: dict[str, Any], split: str, on_notice: Any) -> str | None:
    """Add the report to the MLflow run; returns its id. A failure raises when tracking was asked for, else it is a notice (None)."""
    from trainer.errors import BadInputError
    from trainer.integrations.mlflow import log_evaluation

    try:
        return log_evaluation(tracked, files, metrics, split)
    except BadInputError as error:
        if tracked.required:
            raise
        on_notice(error.message)
        return None
