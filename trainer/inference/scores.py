"""The scores people report, from labels and predictions: confusion matrix, per-class and summary figures (NumPy only).

A leaf: ``trainer eval`` (``inference.evaluate``), the run's ``metrics.json`` (``run.training``) and
test-time augmentation (``inference.probabilities``) compute them the same way.
"""
from __future__ import annotations

from typing import Any

import numpy as np


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


def test_figures(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``summary_scores`` of the top-1 predictions of ``probabilities`` (N, K) against integer ``labels`` (N,)."""
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels).astype(np.int64)
    classes = max(int(probabilities.shape[1]), int(labels.max(initial=-1)) + 1)
    return summary_scores(confusion_matrix(labels, probabilities.argmax(axis=1), classes))
