"""Losses trainer adds to Keras's: cross-entropy with label smoothing on integer (sparse) labels.

Keras's ``SparseCategoricalCrossentropy`` has no ``label_smoothing``; one-hot-encoding the dataset
to get it would multiply the labels' memory by the class count. Smoothing ``e`` over ``K``
classes makes the target ``(1 - e) * onehot + e / K``, so the cross-entropy is
``(1 - e) * -log p[label] + e * mean_k(-log p[k])``: one gathered value and one mean per row,
from the same log-probabilities Keras's one-hot loss uses (softmax of logits, or probabilities
normalised to sum to 1 and clipped to ``[epsilon, 1 - epsilon]``). Registered with Keras, so a
model.h5 holding it loads back (``trainer.models.keras_objects.trainer_objects``).
"""
from __future__ import annotations

import keras
from keras import ops


def log_probabilities(y_pred, from_logits: bool):
    """Log-probabilities over the last axis, as Keras's categorical cross-entropy computes them."""
    if from_logits:
        return ops.log_softmax(y_pred, axis=-1)
    y_pred = y_pred / ops.sum(y_pred, axis=-1, keepdims=True)
    epsilon = keras.config.epsilon()
    return ops.log(ops.clip(y_pred, epsilon, 1.0 - epsilon))


def smoothed_sparse_categorical_crossentropy(y_true, y_pred, label_smoothing: float = 0.0, from_logits: bool = False):
    """Per-example cross-entropy of integer labels against the smoothed one-hot target (no one-hot tensor made)."""
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, axis=-1)  # labels as a column: (batch, 1)
    log_p = log_probabilities(y_pred, from_logits)
    labels = ops.expand_dims(ops.cast(y_true, "int32"), axis=-1)
    true_term = -ops.squeeze(ops.take_along_axis(log_p, labels, axis=-1), axis=-1)
    if not label_smoothing:
        return true_term
    uniform_term = -ops.mean(log_p, axis=-1)
    return (1.0 - label_smoothing) * true_term + label_smoothing * uniform_term


@keras.saving.register_keras_serializable(package="trainer", name="SmoothedSparseCategoricalCrossentropy")
class SmoothedSparseCategoricalCrossentropy(keras.losses.Loss):
    """``sparse_categorical_crossentropy`` with ``label_smoothing`` (what trainer builds when it is above 0)."""

    def __init__(
        self, from_logits: bool = False, label_smoothing: float = 0.0, reduction: str = "sum_over_batch_size",
        name: str = "sparse_categorical_crossentropy", dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        return smoothed_sparse_categorical_crossentropy(y_true, y_pred, self.label_smoothing, self.from_logits)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "label_smoothing": self.label_smoothing}


TRAINER_LOSS_CLASSES: dict[str, type] = {
    "SmoothedSparseCategoricalCrossentropy": SmoothedSparseCategoricalCrossentropy,
    "trainer>SmoothedSparseCategoricalCrossentropy": SmoothedSparseCategoricalCrossentropy,
}
