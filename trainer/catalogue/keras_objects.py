"""Every Keras object trainer defines (metrics, losses, schedules, layers), by the names a saved model uses.

Pass ``trainer_objects()`` as ``custom_objects`` to ``keras.models.load_model`` to load a
trainer ``model.h5`` without trainer's loaders; ``trainer.models.load_model`` and
``load_custom_objects`` include them already.

``keras_base(cls)`` says which of the Keras kinds a model file may hold a user class is (a loss,
metric, layer, regularizer, optimizer or learning-rate schedule): the only classes trainer hands
to Keras when it loads a run's custom code back.
"""
from __future__ import annotations

from typing import Any

# The kinds of Keras object a saved model may name by class: (attribute path under ``keras``, what it is called)
KERAS_OBJECT_BASES = (
    ("losses.Loss", "keras.losses.Loss"),
    ("metrics.Metric", "keras.metrics.Metric"),
    ("layers.Layer", "keras.layers.Layer"),
    ("regularizers.Regularizer", "keras.regularizers.Regularizer"),
    ("optimizers.Optimizer", "keras.optimizers.Optimizer"),
    ("optimizers.schedules.LearningRateSchedule", "keras.optimizers.schedules.LearningRateSchedule"),
)


def trainer_objects() -> dict[str, Any]:
    """Class name (plain and ``trainer>``-prefixed, as Keras registers it) -> class."""
    from trainer.catalogue.loss_classes import TRAINER_LOSS_CLASSES
    from trainer.catalogue.metric_classes import TRAINER_METRIC_CLASSES
    from trainer.catalogue.schedules import TRAINER_SCHEDULE_CLASSES
    from trainer.models.layers import TRAINER_LAYER_CLASSES

    return {**TRAINER_METRIC_CLASSES, **TRAINER_LOSS_CLASSES, **TRAINER_SCHEDULE_CLASSES, **TRAINER_LAYER_CLASSES}


def keras_bases() -> list[tuple[type, str]]:
    """The Keras base classes of ``KERAS_OBJECT_BASES`` with their names (Keras is imported)."""
    import keras

    bases = []
    for path, name in KERAS_OBJECT_BASES:
        value: Any = keras
        for part in path.split("."):
            value = getattr(value, part)
        bases.append((value, name))
    return bases


def keras_base(cls: Any) -> str | None:
    """The name of the Keras kind ``cls`` subclasses (``keras.losses.Loss``, ...), or None when it is none of them."""
    if not isinstance(cls, type):
        return None
    return next((name for base, name in keras_bases() if issubclass(cls, base)), None)


def keras_kinds() -> str:
    """The kinds as a message lists them."""
    return ", ".join(name for _, name in KERAS_OBJECT_BASES)


def is_keras_object(value: Any) -> bool:
    """Whether ``value`` is an instance of one of the Keras kinds (what a factory may return)."""
    return keras_base(type(value)) is not None
