"""The optimizer catalogue: names -> Keras optimizer classes, parameters checked before training."""
from __future__ import annotations

from typing import Any

from .errors import ConfigError
from .registry import Registry, closest

OPTIMIZERS: Registry[str] = Registry("optimizer")
for _name, _cls in {
    "sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "adagrad": "Adagrad",
    "adadelta": "Adadelta", "adamax": "Adamax", "nadam": "Nadam",
}.items():
    OPTIMIZERS.register(_name, _cls)


def keras_params(cls: type) -> list[str]:
    """The keyword parameters a Keras class's constructor takes."""
    import inspect

    return [
        p.name for p in inspect.signature(cls.__init__).parameters.values()
        if p.name not in ("self", "kwargs", "args") and p.kind is not inspect.Parameter.VAR_KEYWORD
    ]


def check_keras_params(cls: type, params: dict[str, Any], key: str, what: str) -> None:
    """Refuse parameters ``cls`` does not take, naming the ones it does."""
    valid = keras_params(cls)
    problems = []
    for name in params:
        if name not in valid:
            hint = closest(name, valid)
            problems.append(
                f"{key}.{name}: {what} takes no parameter {name!r}"
                + (f" (did you mean {hint!r}?)" if hint else "")
                + f"; it takes: {', '.join(valid)}"
            )
    if problems:
        raise ConfigError(f"{key}: unknown parameter{'s' if len(problems) > 1 else ''} for {what}", problems=problems)


def build_optimizer(name: str, params: dict[str, Any]):
    """A fresh Keras optimizer for ``name`` with ``params``."""
    import keras

    cls = getattr(keras.optimizers, OPTIMIZERS.get(name, key="optimizer"))
    check_keras_params(cls, params, "optimizer", name)
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"optimizer: {name} refused its parameters {params}: {exc}") from None
