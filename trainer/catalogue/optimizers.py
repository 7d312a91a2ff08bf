"""The optimizer catalogue: names -> Keras optimizer classes, parameters checked before training."""
from __future__ import annotations

from typing import Any

from trainer.errors import ConfigError
from trainer.catalogue.registry import Registry, check_parameters, construct

OPTIMIZERS: Registry[str] = Registry("optimizer")
for _name, _cls in {
    "sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "adagrad": "Adagrad",
    "adadelta": "Adadelta", "adamax": "Adamax", "nadam": "Nadam",
}.items():
    OPTIMIZERS.register(_name, _cls)

# ``optimizer.learning_rate`` may be a number or one of these, as ``{name: cosine_decay, ...params}``.
SCHEDULES: Registry[str] = Registry("optimizer.learning_rate.name")
for _name, _cls in {
    "exponential_decay": "ExponentialDecay", "cosine_decay": "CosineDecay", "cosine_decay_restarts": "CosineDecayRestarts",
    "inverse_time_decay": "InverseTimeDecay", "piecewise_constant_decay": "PiecewiseConstantDecay",
    "polynomial_decay": "PolynomialDecay",
}.items():
    SCHEDULES.register(_name, _cls)


def keras_params(cls: type) -> list[str]:
    """The keyword parameters a Keras class's constructor takes."""
    return list(keras_defaults(cls))


def keras_defaults(cls: type) -> dict[str, Any]:
    """Parameter -> default of a Keras class's constructor (``REQUIRED`` where there is none)."""
    import inspect

    return {
        p.name: REQUIRED if p.default is inspect.Parameter.empty else p.default
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name not in ("self", "kwargs", "args") and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    }


class _Required:
    def __repr__(self) -> str:
        return "(required)"


REQUIRED = _Required()


def check_keras_params(cls: type, params: dict[str, Any], key: str, what: str) -> None:
    """Refuse parameters the Keras class ``cls`` does not take, naming the ones it does."""
    check_parameters(params, keras_params(cls), key, what)


def build_optimizer(name: str, params: dict[str, Any]):
    """A fresh Keras optimizer for ``name`` with ``params``."""
    import keras

    cls = getattr(keras.optimizers, OPTIMIZERS.get(name, key="optimizer"))
    check_keras_params(cls, params, "optimizer", name)
    params = dict(params)
    if isinstance(params.get("learning_rate"), (dict, str)):
        params["learning_rate"] = build_schedule(params["learning_rate"])
    elif "learning_rate" in params and (isinstance(params["learning_rate"], bool) or not isinstance(params["learning_rate"], (int, float))):
        raise ConfigError(
            f"optimizer.learning_rate: must be a number or a schedule such as {{name: exponential_decay, ...}}; got {params['learning_rate']!r}"
        )
    return construct(cls, params, "optimizer", name)


def build_schedule(spec: dict[str, Any] | str):
    """A Keras learning-rate schedule from ``{name: exponential_decay, initial_learning_rate: ..., ...}``."""
    import keras

    key = "optimizer.learning_rate"
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("name", None)
    if name is None:
        raise ConfigError(f"{key}: a schedule needs a name; valid: {', '.join(SCHEDULES.names())}")
    cls = getattr(keras.optimizers.schedules, SCHEDULES.get(name, key=f"{key}.name"))
    check_keras_params(cls, spec, key, name)
    missing = [p for p, default in keras_defaults(cls).items() if default is REQUIRED and p not in spec]
    if missing:
        raise ConfigError(f"{key}: {name} needs {', '.join(missing)}; it takes: {', '.join(keras_params(cls))}")
    return construct(cls, spec, key, name)
