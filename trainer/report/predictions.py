"""The test split's predictions as a report shows them: confusion matrix, per-class scores, the worst-misclassified images.

At the end of a run they come from the model and arrays in memory (``from_outputs``); for
``trainer report RUN`` from ``model.h5`` on the test split, through eval's code path
(``trainer.inference.evaluate.load_split``), only when the run completed and its data is there
(``predict_test_split``). Otherwise the page says why they are absent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

WORST = 12  # images in the grid of the worst-misclassified test examples


@dataclass
class TestPredictions:
    """What a report shows about the test split's predictions."""

    examples: int
    accuracy: float
    class_names: list[str]
    confusion_matrix: list[list[int]]
    per_class: list[dict[str, Any]]
    summary: dict[str, float]
    worst: list[dict[str, Any]] = field(default_factory=list)  # {index, true, predicted, confidence, image (data: URI)}


def probabilities(outputs: Any, model_output: str) -> np.ndarray:
    """The model's outputs as probabilities (a softmax over logits)."""
    values = np.asarray(outputs, dtype=np.float64)
    if model_output == "logits":
        values = np.exp(values - values.max(axis=1, keepdims=True))
        values /= values.sum(axis=1, keepdims=True)
    return values


def from_outputs(x: Any, y: Any, outputs: Any, model_output: str, class_names: list[str], worst: int = WORST) -> TestPredictions:
    """``TestPredictions`` of a split's images ``x``, integer labels ``y`` and the model's ``outputs`` on them."""
    from trainer.inference.evaluate import confusion_matrix, per_class_scores, summary_scores
    from trainer.report.images import data_uri

    probs = probabilities(outputs, model_output)
    labels = np.asarray(y).astype(np.int64).reshape(-1)
    predicted = probs.argmax(axis=1)
    confidence = probs[np.arange(len(predicted)), predicted]
    classes = probs.shape[1]
    names = list(class_names) if len(class_names) == classes else [str(i) for i in range(classes)]
    matrix = confusion_matrix(labels, predicted, classes)
    wrong = np.flatnonzero(predicted != labels)
    chosen = wrong[np.argsort(-confidence[wrong], kind="stable")][:worst]  # the most confident mistakes first
    shown = []
    for index in chosen:
        try:
            image = data_uri(np.asarray(x[int(index)]))
        except Exception:  # noqa: BLE001 - a streamed image that cannot be read again: the entry without its picture
            image = None
        shown.append({
            "index": int(index), "true": names[labels[index]], "predicted": names[predicted[index]],
            "confidence": float(confidence[index]), "image": image,
        })
    return TestPredictions(
        examples=int(len(labels)), accuracy=float(np.mean(predicted == labels)) if len(labels) else 0.0, class_names=names,
        confusion_matrix=matrix.tolist(), per_class=per_class_scores(matrix, names), summary=summary_scores(matrix), worst=shown,
    )


def predict_test_split(run_dir: Any) -> TestPredictions:
    """``model.h5`` of a run directory on its test split (eval's code path); a TrainerError says why it cannot be done."""
    from trainer.data.streaming import surfacing_data_errors
    from trainer.inference.evaluate import load_split, split_batches
    from trainer.inference.load import load_run
    from trainer.runtime import choose_keras_backend

    choose_keras_backend()
    run = load_run(run_dir)
    x, y = load_split(run, "test")
    with surfacing_data_errors():
        outputs = run.model.predict(split_batches(run, x, y), verbose=0)
    return from_outputs(x, y, outputs, run.model_output, run.class_names)
