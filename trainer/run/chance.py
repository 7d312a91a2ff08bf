"""A run-events handler that speaks up when validation accuracy stays at chance while training accuracy climbs.

A model whose training accuracy rises while validation sits at 1/num_classes has learnt
something validation cannot see. The usual causes, in the order they are met: BatchNormalization's
moving statistics, which Keras's momentum of 0.99 leaves near their start for the first few hundred
steps (so a short run validates with statistics that do not match its activations); validation
images prepared differently from training ones; labels that do not belong to their images. The
run goes on; one notice (through run events, which ``trainer run`` prints) names them.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from trainer.run.events import RunEvents, RunStartInfo

ACCURACY_KEYS = ("accuracy", "sparse_categorical_accuracy", "categorical_accuracy")
MIN_CLIMB = 0.1  # training accuracy at least this far above chance counts as learning


class ChanceWatch(RunEvents):
    """Watches each epoch's row; calls ``notify(text)`` once when validation is at chance and training is not."""

    def __init__(self, num_classes: int, notify: Callable[[str], None]):
        self.chance = 1.0 / max(int(num_classes), 1)
        self.num_classes = num_classes
        self.notify = notify
        self.validation_examples = 0
        self.told = False

    def on_run_start(self, info: RunStartInfo) -> None:
        self.validation_examples = int(info.sizes.get("validation", 0) or 0)

    def tolerance(self) -> float:
        """How far from chance a validation accuracy still counts as chance: three standard errors of guessing, at least 0.01."""
        if self.validation_examples <= 0:
            return 0.01
        return max(0.01, 3 * math.sqrt(self.chance * (1 - self.chance) / self.validation_examples))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if self.told or self.num_classes < 2:
            return
        key = next((k for k in ACCURACY_KEYS if isinstance(logs.get(k), (int, float)) and isinstance(logs.get(f"val_{k}"), (int, float))), None)
        if key is None:
            return
        train, validation = float(logs[key]), float(logs[f"val_{key}"])
        if not (math.isfinite(train) and math.isfinite(validation)):
            return
        margin = self.tolerance()
        if abs(validation - self.chance) <= margin and train >= self.chance + max(MIN_CLIMB, 2 * margin):
            self.told = True
            self.notify(chance_message(epoch, train, validation, self.num_classes, key))


def chance_message(epoch: int, train: float, validation: float, num_classes: int, key: str = "accuracy") -> str:
    """The notice: what was seen and the likely causes, most likely first."""
    return (
        f"epoch {epoch}: validation {key} {validation:.4f} is at chance (1/{num_classes} = {1 / num_classes:.4f}) while training "
        f"{key} is {train:.4f}. Likely causes: BatchNormalization moving statistics that a short run has not settled "
        "(lower model.batch_norm_momentum, e.g. 0.9, or train longer); validation images preprocessed differently from "
        "training ones (size, colour mode, scaling); labels that do not belong to their images (shuffled or misaligned labels)."
    )
