"""The metric catalogue: names -> Keras metrics, with ``accuracy`` matched to the label encoding."""
from __future__ import annotations

from typing import Any

from .errors import ConfigError
from .optimizers import check_keras_params
from .registry import Registry

METRICS: Registry[str] = Registry("metrics")
for _name, _cls, _aliases in (
    ("categorical_accuracy", "CategoricalAccuracy", ()),
    ("sparse_categorical_accuracy", "SparseCategoricalAccuracy", ()),
    ("top_k_categorical_accuracy", "TopKCategoricalAccuracy", ()),
    ("sparse_top_k_categorical_accuracy", "SparseTopKCategoricalAccuracy", ()),
    ("mean_squared_error", "MeanSquaredError", ("mse",)),
    ("mean_absolute_error", "MeanAbsoluteError", ("mae",)),
):
    METRICS.register(_name, _cls, _aliases)
METRICS.register("accuracy", "accuracy", ("acc",))


def resolve_metric_name(name: str, encoding: str) -> str:
    """``accuracy`` becomes the accuracy that fits the labels, so its name in the logs stays ``accuracy``."""
    return METRICS.canonical(name) or name


def build_metrics(specs: list[Any], encoding: str) -> list[Any]:
    """Keras metric objects for the configured names; ``accuracy`` follows the label encoding."""
    import keras

    metrics = []
    for index, spec in enumerate(specs):
        key = f"metrics.{index}"
        canonical = METRICS.get(spec.name, key=key)
        params = spec.params
        if canonical == "accuracy":
            cls = keras.metrics.SparseCategoricalAccuracy if encoding == "sparse" else keras.metrics.CategoricalAccuracy
            check_keras_params(cls, params, key, "accuracy")
            metrics.append(cls(name=params.pop("name", "accuracy"), **params))
            continue
        cls = getattr(keras.metrics, canonical_class(spec.name, key))
        check_keras_params(cls, params, key, spec.name)
        try:
            metrics.append(cls(**params))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{key}: {spec.name} refused its parameters {params}: {exc}") from None
    return metrics


def canonical_class(name: str, key: str) -> str:
    return METRICS.get(name, key=key)
