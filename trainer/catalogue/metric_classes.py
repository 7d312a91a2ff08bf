"""Keras metrics that need one-hot labels, made to accept integer (sparse) labels too.

``precision``, ``recall``, ``auc``, ``f1_score``, ``mae`` and ``mse`` compare label and
prediction element by element; with sparse labels the label is one-hot encoded first. They are
registered with Keras so a saved model.h5 loads back (``trainer.imports.load_custom_objects``).
"""
from __future__ import annotations

import keras


def _with_sparse_labels(base: type) -> type:
    class SparseLabels(base):
        def update_state(self, y_true, y_pred, sample_weight=None):
            classes = y_pred.shape[-1]
            y_true = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), classes)
            return super().update_state(keras.ops.cast(y_true, y_pred.dtype), y_pred, sample_weight)

    name = f"Sparse{base.__name__}"
    SparseLabels.__name__ = SparseLabels.__qualname__ = name
    return keras.saving.register_keras_serializable(package="trainer", name=name)(SparseLabels)


SparsePrecision = _with_sparse_labels(keras.metrics.Precision)
SparseRecall = _with_sparse_labels(keras.metrics.Recall)
SparseAUC = _with_sparse_labels(keras.metrics.AUC)
SparseF1Score = _with_sparse_labels(keras.metrics.F1Score)
SparseMeanAbsoluteError = _with_sparse_labels(keras.metrics.MeanAbsoluteError)
SparseMeanSquaredError = _with_sparse_labels(keras.metrics.MeanSquaredError)

SPARSE_VARIANTS: dict[str, type] = {
    cls.__name__[len("Sparse"):]: cls
    for cls in (SparsePrecision, SparseRecall, SparseAUC, SparseF1Score, SparseMeanAbsoluteError, SparseMeanSquaredError)
}
TRAINER_METRIC_CLASSES: dict[str, type] = {
    **{cls.__name__: cls for cls in SPARSE_VARIANTS.values()},
    **{f"trainer>{cls.__name__}": cls for cls in SPARSE_VARIANTS.values()},
}
