"""Weight regularizers and constraints for dense layers: config values -> Keras objects.

The checks are plain Python (``trainer validate`` stays TensorFlow-free); Keras is imported only
when a layer is built. ``dense_kwargs(config)`` is what every model builder passes to its
``Dense`` layers.
"""
from __future__ import annotations

from typing import Any

from trainer.catalogue.registry import unknown_choice_message

REGULARIZER_KEYS = ("kernel_regularizer", "bias_regularizer", "activity_regularizer")
REGULARIZERS = {"l1": "L1", "l2": "L2", "l1_l2": "L1L2"}
# name -> (Keras class, parameter defaults)
CONSTRAINTS: dict[str, tuple[str, dict[str, Any]]] = {
    "max_norm": ("MaxNorm", {"max_value": 2.0, "axis": 0}),
    "non_neg": ("NonNeg", {}),
    "unit_norm": ("UnitNorm", {"axis": 0}),
    "min_max_norm": ("MinMaxNorm", {"min_value": 0.0, "max_value": 1.0, "rate": 1.0, "axis": 0}),
}
REGULARIZER_HELP = "{l1: 0.01}, {l2: 0.01} or {l1_l2: [0.01, 0.01]}"


def _factor(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def check_regularizer(value: Any) -> dict[str, Any]:
    """``{l2: 0.01}`` and friends; a ValueError says what is allowed (pydantic adds the key path)."""
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(f"must be one of {REGULARIZER_HELP}")
    ((name, factor),) = value.items()
    if name not in REGULARIZERS:
        raise ValueError(unknown_choice_message("regularizer", name, REGULARIZERS).split(": ", 1)[1])
    if name == "l1_l2":
        if not (isinstance(factor, list) and len(factor) == 2 and all(_factor(f) for f in factor)):
            raise ValueError(f"l1_l2 takes a list of two factors [l1, l2] (each >= 0); got {factor!r}")
    elif not _factor(factor):
        raise ValueError(f"{name} takes one factor >= 0; got {factor!r}")
    return value


def check_constraint(value: Any) -> Any:
    """``max_norm`` or ``{name: max_norm, max_value: 3}``; a ValueError names the valid names or parameters."""
    spec = {"name": value} if isinstance(value, str) else value
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"must be a constraint name ({', '.join(CONSTRAINTS)}) or {{name: max_norm, max_value: 3}}")
    name = spec["name"]
    if name not in CONSTRAINTS:
        raise ValueError(unknown_choice_message("constraint", name, CONSTRAINTS).split(": ", 1)[1])
    params = CONSTRAINTS[name][1]
    for key in spec:
        if key != "name" and key not in params:
            raise ValueError(f"{name} takes no parameter {key!r}; it takes: {', '.join(params) or 'none'}")
    return value


def build_regularizer(value: dict[str, Any] | None):
    import keras

    if value is None:
        return None
    ((name, factor),) = value.items()
    if name == "l1_l2":
        return keras.regularizers.L1L2(l1=float(factor[0]), l2=float(factor[1]))
    return getattr(keras.regularizers, REGULARIZERS[name])(float(factor))


def build_constraint(value: Any):
    import keras

    if value is None:
        return None
    spec = {"name": value} if isinstance(value, str) else dict(value)
    keras_class, _ = CONSTRAINTS[spec.pop("name")]
    return getattr(keras.constraints, keras_class)(**spec)


def dense_kwargs(config: Any) -> dict[str, Any]:
    """Keyword arguments for ``keras.layers.Dense`` from a model config's regularizer/constraint keys.

    Works for any config section with (some of) the attributes ``kernel_regularizer``,
    ``bias_regularizer``, ``activity_regularizer`` and ``kernel_constraint``; missing ones are None.
    """
    kwargs = {key: build_regularizer(getattr(config, key, None)) for key in REGULARIZER_KEYS}
    kwargs["kernel_constraint"] = build_constraint(getattr(config, "kernel_constraint", None))
    return kwargs
