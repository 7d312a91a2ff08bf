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
from trainer.inference.scores import confusion_matrix, normalized_rows, per_class_scores, summary_scores  # noqa: F401 (re-exported)

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
    tta: dict[str, Any] | None = None  # test-time augmentation: trainer.inference.probabilities.tta_scores
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
    from trainer.readers import starts_and_ends_with

    return starts_and_ends_with(path, b'{\n  "split": "', b"\n}\n")


def write_eval_report(result: EvalResult, path: Path, *, overwrite: bool = False, what: str = "--output") -> Path:
    """The report as JSON under the output rule (``trainer.outputs.write_file``): a new file or an eval report, else only with ``overwrite``."""
    import json

    from trainer.outputs import _json_default, write_file

    text = json.dumps(result.to_dict(), indent=2, default=_json_default) + "\n"
    return write_file(path, text, what, overwrite=overwrite, is_own=is_eval_report, expected="a .json file name")


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


def check_same_test_split(run: LoadedRun, data: Any, split: str) -> None:
    """``--split test`` of a run whose test split was ``data.test: FRACTION`` measures the same files, or a DataError."""
    recorded = run.manifest.test_split if run.manifest is not None else None
    now = data.test_split
    if split != "test":
        return
    if recorded is None:
        if now is not None and run.manifest is not None:  # the run trained on every image: a fraction now would be trained ones
            raise DataError(
                f"--split test: the run held no data.test fraction out (manifest.json), so data.test {now['fraction']} "
                "now takes images the model trained on; drop the --set/--config that sets data.test."
            )
        return
    if now is None or now.get("digest") != recorded.get("digest"):
        got = "no fraction split" if now is None else f"{now['test']} images of data.test {now['fraction']} with seed {now['seed']}"
        raise DataError(
            f"--split test: the run held out data.test {recorded['fraction']} with seed {recorded['seed']} "
            f"({recorded['test']} images, manifest.json), but the files of {data.source} now give {got}; these are other "
            "images (some the model may have trained on). Restore the data the run used, or train again."
        )


def load_split(run: LoadedRun, split: str = "test") -> tuple[Any, Any]:
    """(images, integer labels) of ``split`` loaded exactly as training loaded it, checked against the model; a DataError otherwise."""
    from trainer.data.loaders import load_data

    if split not in SPLITS:
        raise ConfigError(f"--split: unknown split {split!r}; valid: {', '.join(SPLITS)}")
    config = run.config
    data = load_data(config.data, seed=config.seed)
    x, y = data.split(split)
    check_same_validation_split(run, data, split)
    check_same_test_split(run, data, split)
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
    return x, y


def split_batches(run: LoadedRun, x: Any, y: Any) -> Any:
    """The batches ``evaluate_run`` feeds the model (the run's batch size, label encoding and classes)."""
    from trainer.data.batches import make_batches

    return make_batches(x, y, batch_size=run.config.train.batch_size, encoding=run.label_encoding, num_classes=run.num_classes)


def evaluate_run(run: LoadedRun, split: str = "test", tta: str | None = None) -> EvalResult:
    """Evaluate ``run`` on ``split`` loaded exactly as training loaded it (same preprocessing, limits, encoding).

    ``tta``: a test-time augmentation mode (``trainer.inference.probabilities``) measured besides the plain
    numbers, as ``EvalResult.tta``; None takes the run's ``evaluate.tta``.
    """
    from trainer.config.evaluate import check_tta_mode
    from trainer.data.streaming import surfacing_data_errors

    if split not in SPLITS:
        raise ConfigError(f"--split: unknown split {split!r}; valid: {', '.join(SPLITS)}")
    config = run.config
    tta = check_tta_mode(config.evaluate.tta if tta is None else tta)
    x, y = load_split(run, split)
    dataset = split_batches(run, x, y)
    with surfacing_data_errors():  # an image gone or undecodable while streaming: one DataError naming it
        scores = {k: float(v) for k, v in run.model.evaluate(dataset, verbose=0, return_dict=True).items()}
        outputs = run.model.predict(dataset, verbose=0)
    predicted = np.asarray(outputs).argmax(axis=1)
    matrix = confusion_matrix(y, predicted, run.num_classes)
    averaged = None
    if tta != "none":
        from trainer.inference.probabilities import tta_scores

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
