"""The callback catalogue: ``{name, ...params}`` entries -> Keras callbacks."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ConfigError
from .optimizers import check_keras_params
from .registry import Registry

CALLBACKS: Registry[str] = Registry("callbacks")
for _name, _cls in {
    "early_stopping": "EarlyStopping",
    "reduce_lr_on_plateau": "ReduceLROnPlateau",
    "terminate_on_nan": "TerminateOnNaN",
}.items():
    CALLBACKS.register(_name, _cls)


def build_callbacks(specs: list[Any], run_dir: Path | None) -> list[Any]:
    """Keras callbacks for the configured entries, in order."""
    import keras

    built = []
    for index, spec in enumerate(specs):
        key = f"callbacks.{index}"
        cls = getattr(keras.callbacks, CALLBACKS.get(spec.name, key=f"{key}.name"))
        check_keras_params(cls, spec.params, key, spec.name)
        try:
            built.append(cls(**spec.params))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{key}: {spec.name} refused its parameters {spec.params}: {exc}") from None
    return built
