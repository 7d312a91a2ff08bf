"""Model builders by ``model.type``: each takes its config section, the input shape and the class count."""
from __future__ import annotations

from typing import Any, Callable

from trainer.catalogue.registry import Registry

MODELS: Registry[str] = Registry("model.type")
MODELS.register("mlp", "trainer.models.mlp:build_mlp")
MODELS.register("vgg16_head", "trainer.models.vgg16_head:build_vgg16_head")


def build_model(config: Any, input_shape: tuple[int, ...], num_classes: int, **kwargs: Any):
    """Build the Keras model that ``config`` (a model section) describes."""
    import importlib

    module_name, _, attr = MODELS.get(config.type, key="model.type").partition(":")
    builder: Callable[..., Any] = getattr(importlib.import_module(module_name), attr)
    return builder(config, input_shape, num_classes, **kwargs)


def load_model(path: Any, custom_objects: dict[str, Any] | None = None, compile: bool = True):
    """``keras.models.load_model`` with trainer's custom layers registered (what eval and predict use)."""
    import keras

    from trainer.models import layers  # noqa: F401 - registers VGG16Preprocess

    return keras.models.load_model(path, custom_objects=custom_objects or None, compile=compile)
