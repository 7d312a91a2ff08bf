"""Keras models by ``model.type``.

Each model type is registered once, in ``trainer.config.models``: its config class (the
``model:`` section's schema, with what the type supports) and its builder here
(``module:function`` taking the section, the input shape and the class count, and keyword
arguments it may ignore: ``train_images``, the training images, for a data-dependent first
layer such as resnet's whitening). Adding a type is one config class there and one builder module here.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from trainer.config.models import MODEL_TYPES


def build_model(config: Any, input_shape: tuple[int, ...], num_classes: int, **kwargs: Any):
    """Build the Keras model that ``config`` (a model section) describes."""
    module_name, _, attr = MODEL_TYPES.get(config.type, key="model.type").builder.partition(":")
    builder: Callable[..., Any] = getattr(importlib.import_module(module_name), attr)
    return builder(config, input_shape, num_classes, **kwargs)


def load_model(path: Any, custom_objects: dict[str, Any] | None = None, compile: bool = True):
    """``keras.models.load_model`` with trainer's custom layers registered (what eval and predict use)."""
    import keras

    from trainer.models.keras_objects import trainer_objects
    from trainer.models import layers  # noqa: F401 - registers trainer's own layers
    from trainer.catalogue.backbones import backbone_load_objects

    from trainer.runtime.hidden_tensorflow import keras_without_tensorflow

    objects = {**trainer_objects(), **backbone_load_objects(), **(custom_objects or {})}  # trainer's losses, metrics, schedules
    with keras_without_tensorflow():  # decoding the .h5's config would import TensorFlow on JAX/PyTorch (4-5 s)
        # safe_mode: a model file never runs Python it carries (a Lambda layer's bytecode is refused)
        return keras.models.load_model(path, custom_objects=objects, compile=compile, safe_mode=True)
