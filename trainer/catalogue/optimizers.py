"""The optimizer catalogue: names -> Keras optimizer classes, parameters checked before training."""
from __future__ import annotations

from typing import Any

from trainer.errors import ConfigError
from trainer.catalogue.registry import Registry, check_parameters, construct, unknown_choice_message

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


def build_optimizer(name: str, params: dict[str, Any], *, model: Any = None, total_steps: int | None = None):
    """A fresh Keras optimizer for ``name`` with ``params``.

    ``total_steps``: the run's optimizer steps, for the schedules defined by the run's length
    (None when unknown, for a check or a model compiled only to evaluate: they then span one
    step). ``model``: whose biases and normalization layers ``exclude_from_weight_decay: true``
    spares (without it, only the parameters are checked).
    """
    import keras

    cls = getattr(keras.optimizers, OPTIMIZERS.get(name, key="optimizer"))
    params = dict(params)
    exclude = params.pop("exclude_from_weight_decay", False)
    bias_scale = params.pop("norm_bias_lr_scale", 1.0)
    check_keras_params(cls, params, "optimizer", name)
    if isinstance(params.get("learning_rate"), (dict, str)):
        params["learning_rate"] = build_schedule(params["learning_rate"], total_steps=total_steps)
    elif "learning_rate" in params and (isinstance(params["learning_rate"], bool) or not isinstance(params["learning_rate"], (int, float))):
        raise ConfigError(
            f"optimizer.learning_rate: must be a number or a schedule such as {{name: exponential_decay, ...}}; got {params['learning_rate']!r}"
        )
    optimizer = construct(cls, params, "optimizer", name)
    exclude_from_weight_decay(optimizer, OPTIMIZERS.canonical(name), exclude, model)
    scale_norm_bias_lr(optimizer, OPTIMIZERS.canonical(name), bias_scale, model)
    return optimizer


def exclude_from_weight_decay(optimizer: Any, name: str, exclude: Any, model: Any) -> None:
    """``optimizer.exclude_from_weight_decay``: true spares every bias and every variable of a normalization
    layer (whatever their names); a list of patterns spares the variables whose names match one."""
    from trainer.catalogue.params import TRAINER_OPTIMIZER, check_exclusions, check_values, raise_problems

    given = {"exclude_from_weight_decay": exclude, "weight_decay": optimizer.weight_decay}
    problems = check_values({"exclude_from_weight_decay": exclude}, TRAINER_OPTIMIZER, "optimizer", name)
    raise_problems(problems or check_exclusions(name, given), "optimizer", name)
    if exclude is True and model is not None:
        optimizer.exclude_from_weight_decay(var_list=spared_variables(model))
    elif isinstance(exclude, list):
        optimizer.exclude_from_weight_decay(var_names=exclude)


def scale_norm_bias_lr(optimizer: Any, name: str, scale: Any, model: Any) -> None:
    """``optimizer.norm_bias_lr_scale``: the biases (beta) of normalization layers learn at ``scale`` x the learning rate.

    airbench's ``bias_scaler`` (64): with BatchNormalization's scale frozen, its biases set where each
    activation bends, and at the network's rate under weight decay they barely move. The rate
    itself is scaled (``update_step``'s ``learning_rate``, for every optimizer, inside the compiled
    step), not the gradient, so Adam-like optimizers scale as SGD does; weight decay
    (``w <- w - learning_rate x weight_decay x w``) keeps the unscaled rate, as in airbench.
    Variables are matched by the optimizer's own key, which TensorFlow (its ``tf.Variable``) and
    JAX (the Keras variable) both pass to ``update_step``. Keras's PyTorch optimizers never call
    ``update_step``: they update every variable at once (``_parallel_update_step``, ``torch._foreach_*``),
    so there the update is split in two calls, the biases' one at the scaled rate; the optimizer's step
    count advances once per step all the same (``apply`` increments it after both).
    """
    from trainer.catalogue.params import TRAINER_OPTIMIZER, check_values, raise_problems

    raise_problems(check_values({"norm_bias_lr_scale": scale}, TRAINER_OPTIMIZER, "optimizer", name), "optimizer", name)
    if scale == 1 or model is None:
        return
    keys = {optimizer._var_key(v) for v in normalization_biases(model)}
    if not keys:
        return
    if hasattr(optimizer, "_parallel_update_step"):  # PyTorch
        parallel_update = optimizer._backend_update_step  # the class's, bound

        def scaled_parallel_update(gradients, variables, learning_rate):
            pairs = list(zip(gradients, variables))
            for scaled in (False, True):
                group = [(g, v) for g, v in pairs if (optimizer._var_key(v) in keys) == scaled]
                if group:
                    parallel_update([g for g, _ in group], [v for _, v in group], learning_rate * scale if scaled else learning_rate)

        optimizer._backend_update_step = scaled_parallel_update
        return
    update_step = optimizer.update_step  # the class's, bound

    def scaled_update_step(gradient, variable, learning_rate):
        if optimizer._var_key(variable) in keys:
            learning_rate = learning_rate * scale
        return update_step(gradient, variable, learning_rate)

    optimizer.update_step = scaled_update_step


def normalization_kinds() -> tuple[type, ...]:
    import keras

    return tuple(
        getattr(keras.layers, kind)
        for kind in ("BatchNormalization", "LayerNormalization", "GroupNormalization", "RMSNormalization")
        if hasattr(keras.layers, kind)
    )


def normalization_biases(model: Any) -> list[Any]:
    """The trainable biases (``beta``) of the model's normalization layers, nested models included."""
    kinds = normalization_kinds()
    found = [getattr(layer, "beta", None) for layer in model._flatten_layers(include_self=True, recursive=True) if isinstance(layer, kinds)]
    return [v for v in found if v is not None and v.trainable]


def spared_variables(model: Any) -> list[Any]:
    """The model's biases and the variables of its normalization layers (nested models and layers included)."""
    kinds = normalization_kinds()
    spared = {id(v): v for layer in model._flatten_layers(include_self=True, recursive=True) if isinstance(layer, kinds) for v in layer.weights}
    spared.update({id(v): v for v in model.weights if "bias" in v.name})
    return list(spared.values())


def build_schedule(spec: dict[str, Any] | str, *, total_steps: int | None = None):
    """A learning-rate schedule from ``{name: exponential_decay, initial_learning_rate: ..., ...}`` (a Keras one),
    or ``{name: warmup_cosine, peak: ..., ...}`` (one of trainer's, over ``total_steps`` steps)."""
    import keras

    from trainer.catalogue.params import RUN_LENGTH_SCHEDULES, check_schedule, raise_problems

    key = "optimizer.learning_rate"
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = spec.get("name")
    if name is None:
        raise ConfigError(f"{key}: a schedule needs a name; valid: {', '.join(schedule_names())}")
    if name in RUN_LENGTH_SCHEDULES:
        raise_problems(check_schedule(spec), key, name)
        from trainer.catalogue.schedules import RunLengthSchedule

        params = {k: v for k, v in spec.items() if k != "name"}
        return construct(RunLengthSchedule, {"shape": name, "total_steps": total_steps or 1, **params}, key, name, shown=params)
    spec.pop("name")
    if name not in SCHEDULES:
        raise ConfigError(unknown_choice_message(f"{key}.name", name, schedule_names()))
    cls = getattr(keras.optimizers.schedules, SCHEDULES.get(name, key=f"{key}.name"))
    check_keras_params(cls, spec, key, name)
    missing = [p for p, default in keras_defaults(cls).items() if default is REQUIRED and p not in spec]
    if missing:
        raise ConfigError(f"{key}: {name} needs {', '.join(missing)}; it takes: {', '.join(keras_params(cls))}")
    return construct(cls, spec, key, name)


def schedule_names() -> list[str]:
    """Every ``optimizer.learning_rate.name``: Keras's schedules and trainer's run-length ones."""
    from trainer.catalogue.params import RUN_LENGTH_SCHEDULES

    return sorted([*SCHEDULES.names(with_aliases=False), *RUN_LENGTH_SCHEDULES])
