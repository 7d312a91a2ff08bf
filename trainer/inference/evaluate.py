"""Measure a finished run on any split: load the run back, evaluate, compute per-class numbers.

``load_run`` reads a run directory (config.yaml, manifest.json, model.h5) or a model file plus
its config; ``evaluate_run`` loads a split exactly as ``trainer run`` did and returns an
``EvalResult``. Nothing here prints.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer.config import Config, load_config
from trainer.errors import ConfigError, DataError, RunDirError
from trainer.run.rundir import CONFIG_FILE, MANIFEST_FILE, MODEL_FILE, read_json

SPLITS = ("test", "train", "validation")


@dataclass
class LoadedRun:
    """A trained model with everything needed to feed it and name its classes."""

    config: Config
    model: Any  # keras.Model
    model_path: Path
    run_dir: Path  # where outputs go: the run directory, or the model file's folder
    num_classes: int
    class_names: list[str]
    label_encoding: str
    model_output: str  # "softmax" or "logits"

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(height, width, channels) the model takes."""
        return tuple(int(d) for d in self.model.input_shape[1:])

    def class_name(self, index: int) -> str:
        return self.class_names[index] if 0 <= index < len(self.class_names) else str(index)


def _resolve_target(target: Path, config_path: Path | None) -> tuple[Path, Path, Path]:
    """(config file, model file, run directory) for a run directory or a model file + --config."""
    target = Path(target)
    if not target.exists():
        raise RunDirError(
            f"{target} does not exist; expected a run directory (with {CONFIG_FILE} and {MODEL_FILE}, "
            "as trainer run writes it) or a model file together with --config CONFIG."
        )
    if target.is_dir():
        config_file = Path(config_path) if config_path else target / CONFIG_FILE
        model_file = target / MODEL_FILE
        if not config_file.is_file():
            raise RunDirError(
                f"{config_file} is missing; {target} is not a complete run directory "
                f"(expected {CONFIG_FILE} and {MODEL_FILE}, as trainer run writes them)."
            )
        if not model_file.is_file():
            raise RunDirError(
                f"{model_file} is missing; the run in {target} has no saved model "
                "(did it finish? see its metrics.json)."
            )
        return config_file, model_file, target
    if config_path is None:
        raise RunDirError(
            f"{target} is a file; a model file needs --config CONFIG (the YAML it was trained with), "
            "or pass the run directory instead."
        )
    return Path(config_path), target, target.parent


def load_model_file(path: Path, objects: dict[str, Any] | None = None):
    """``trainer.models.load_model(path)`` (compiled); an unreadable file is a RunDirError naming it."""
    from trainer.models import load_model

    try:
        return load_model(path, objects, compile=True)
    except Exception as exc:  # noqa: BLE001 - h5py/Keras raise many types for a damaged file
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise RunDirError(
            f"cannot load the model {path}: {reason}. Expected a Keras .h5 model as trainer run saves it "
            "(is the file truncated or still being written?)."
        ) from None


def _folder_classes(config: Config) -> list[str]:
    """Class names of a folder dataset read from its train folder (a model file evaluated with --config)."""
    from trainer.data.folder import list_classes

    return list_classes(Path(config.data.path) / "train") if config.data.path else []


def load_run(target: Path, *, config_path: Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> LoadedRun:
    """Load a run directory (or a model file + its config) with the run's classes and encoding."""
    from trainer.config.checks import plan_run
    from trainer.data.catalog import DATASETS

    config_file, model_file, run_dir = _resolve_target(target, config_path)
    config = load_config(config_file, list(overrides))
    manifest_file = run_dir / MANIFEST_FILE
    manifest: dict[str, Any] = read_json(manifest_file) if manifest_file.is_file() and config_path is None else {}
    info = DATASETS.get(config.data.dataset)  # None for a folder dataset: its classes are its folders
    encoding = manifest.get("label_encoding") or plan_run(config).encoding
    class_names = list(manifest.get("class_names") or (info.class_names if info else _folder_classes(config)))
    model_output = manifest.get("model_output") or config.model.output
    if config_path is not None and not manifest.get("custom_objects"):
        from trainer.catalogue.overview import check_catalogue  # a bare model file: import what its config names

        manifest = {**manifest, "custom_objects": check_catalogue(config)}
    from trainer.catalogue.user_code import load_custom_objects

    model = load_model_file(model_file, load_custom_objects(manifest, config.config_dir))
    if getattr(model, "loss", None) is None:  # saved without its compile state: compile as training did
        from trainer.run.training import compile_model

        compile_model(model, config, plan_run(config))
    num_classes = int(model.output_shape[-1])
    if len(class_names) != num_classes:
        class_names = [str(i) for i in range(num_classes)]
    return LoadedRun(config, model, model_file, run_dir, num_classes, class_names, encoding, model_output)


# --------------------------------------------------------------------------- evaluation


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "examples": self.examples,
            "loss": self.loss,
            "accuracy": self.accuracy,
            "metrics": self.metrics,
            "per_class": self.per_class,
            "confusion_matrix": self.confusion_matrix,
        }


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


def evaluate_run(run: LoadedRun, split: str = "test") -> EvalResult:
    """Evaluate ``run`` on ``split`` loaded exactly as training loaded it (same preprocessing, limits, encoding)."""
    from trainer.data.loaders import load_data
    from trainer.data.pipeline import make_dataset

    if split not in SPLITS:
        raise ConfigError(f"--split: unknown split {split!r}; valid: {', '.join(SPLITS)}")
    config = run.config
    data = load_data(config.data, seed=config.seed)
    x, y = data.split(split)
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
    dataset = make_dataset(
        x, y, batch_size=config.train.batch_size, encoding=run.label_encoding, num_classes=run.num_classes
    )
    scores = {k: float(v) for k, v in run.model.evaluate(dataset, verbose=0, return_dict=True).items()}
    outputs = run.model.predict(dataset, verbose=0)
    predicted = np.asarray(outputs).argmax(axis=1)
    matrix = confusion_matrix(y, predicted, run.num_classes)
    return EvalResult(
        split=split,
        examples=int(len(y)),
        loss=scores.get("loss", float("nan")),
        accuracy=float(np.mean(predicted == y)),
        metrics=scores,
        per_class=per_class_scores(matrix, run.class_names),
        confusion_matrix=matrix.tolist(),
        class_names=list(run.class_names),
    )
