"""Every Keras object trainer defines (metrics, losses, schedules, layers), by the names a saved model uses.

Pass ``trainer_objects()`` as ``custom_objects`` to ``keras.models.load_model`` to load a
trainer ``model.h5`` without trainer's loaders; ``trainer.models.load_model`` and
``load_custom_objects`` include them already.
"""
from __future__ import annotations

from typing import Any


def trainer_objects() -> dict[str, Any]:
    """Class name (plain and ``trainer>``-prefixed, as Keras registers it) -> class."""
    from trainer.catalogue.loss_classes import TRAINER_LOSS_CLASSES
    from trainer.catalogue.metric_classes import TRAINER_METRIC_CLASSES
    from trainer.catalogue.schedules import TRAINER_SCHEDULE_CLASSES
    from trainer.models.layers import TRAINER_LAYER_CLASSES

    return {**TRAINER_METRIC_CLASSES, **TRAINER_LOSS_CLASSES, **TRAINER_SCHEDULE_CLASSES, **TRAINER_LAYER_CLASSES}
