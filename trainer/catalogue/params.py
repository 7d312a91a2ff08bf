"""Parameter checks for optimizers and callbacks that need no Keras: ``trainer validate`` runs them.

Each built-in optimizer and callback has a table of its parameters and what each accepts (a test
compares the tables with Keras's own signatures, so they cannot drift). Every problem names the
key path, the value received and what is allowed, as the loss parameters' checks do.
"""
from __future__ import annotations

import math
from pathlib import PurePath
from typing import Any, Callable

from trainer.catalogue.registry import closest, unknown_parameter
from trainer.errors import ConfigError

Check = Callable[[Any], "str | None"]  # None when the value is fine, else what is allowed

INT32_MAX = 2**31 - 1


def _number(low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False, optional: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if value is None and optional:
            return None
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '>='} {low}")
        if high is not None:
            bounds.append(f"{'<' if high_open else '<='} {high}")
        allowed = "a number" + (f" {' and '.join(bounds)}" if bounds else "") + (" or null" if optional else "")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return allowed
        if low is not None and (value < low or (low_open and value == low)):
            return allowed
        if high is not None and (value > high or (high_open and value == high)):
            return allowed
        return None

    return check


def _integer(low: int = 0, *, optional: bool = False, also: tuple[str, ...] = ()) -> Check:
    def check(value: Any) -> str | None:
        if value is None and optional or value in also:
            return None
        allowed = f"a whole number from {low} to {INT32_MAX}" + "".join(f" or {a!r}" for a in also) + (" or null" if optional else "")
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= INT32_MAX:
            return allowed
        return None

    return check


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "a non-empty string"


def _optional_text(value: Any) -> str | None:
    return None if value is None or isinstance(value, str) else "a string or null"


def _one_character(value: Any) -> str | None:
    return None if isinstance(value, str) and len(value) == 1 else "a single character such as ',' or ';'"


def _mode(value: Any) -> str | None:
    return None if value in ("auto", "min", "max") else "auto, min or max"


def _anything(value: Any) -> str | None:
    return None


def _profile_batch(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= INT32_MAX:
        return None
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value) and value[0] <= value[1]:
        return None
    return "0 (off), a batch number, or [start, stop] batch numbers"


MONITOR = "monitor"  # checked against what the run logs, in check_callback_params
PATH = "path"  # checked by callbacks.check_callback_path

VERBOSE = _integer(0)
COMMON_OPTIMIZER: dict[str, Check] = {
    "learning_rate": _number(0, low_open=True),  # a schedule (mapping or name) is accepted before this check
    "weight_decay": _number(0, optional=True),
    "clipnorm": _number(0, low_open=True, optional=True),
    "clipvalue": _number(0, low_open=True, optional=True),
    "global_clipnorm": _number(0, low_open=True, optional=True),
    "use_ema": _boolean,
    "ema_momentum": _number(0, 1),
    "ema_overwrite_frequency": _integer(1, optional=True),
    "loss_scale_factor": _number(0, low_open=True, optional=True),
    "gradient_accumulation_steps": _integer(1, optional=True),
    "name": _optional_text,
}
_BETAS = {"beta_1": _number(0, 1, high_open=True), "beta_2": _number(0, 1, high_open=True), "epsilon": _number(0)}
OPTIMIZER_PARAMS: dict[str, dict[str, Check]] = {
    "sgd": {"momentum": _number(0), "nesterov": _boolean},
    "adam": {**_BETAS, "amsgrad": _boolean},
    "adamw": {**_BETAS, "amsgrad": _boolean},
    "rmsprop": {"rho": _number(0, 1), "momentum": _number(0), "epsilon": _number(0), "centered": _boolean},
    "adagrad": {"initial_accumulator_value": _number(0), "epsilon": _number(0)},
    "adadelta": {"rho": _number(0, 1), "epsilon": _number(0)},
    "adamax": dict(_BETAS),
    "nadam": dict(_BETAS),
}

# loss parameters whose values trainer checks (names are checked against the loss catalogue)
LOSS_VALUES: dict[str, Check] = {"label_smoothing": _number(0, 1)}

CALLBACK_PARAMS: dict[str, dict[str, Any]] = {
    "early_stopping": {
        "monitor": MONITOR, "min_delta": _number(), "patience": _integer(0), "verbose": VERBOSE, "mode": _mode,
        "baseline": _number(optional=True), "restore_best_weights": _boolean, "start_from_epoch": _integer(0),
    },
    "reduce_lr_on_plateau": {
        "monitor": MONITOR, "factor": _number(0, 1, low_open=True, high_open=True), "patience": _integer(0), "verbose": VERBOSE,
        "mode": _mode, "min_delta": _number(), "cooldown": _integer(0), "min_lr": _number(0),
    },
    "terminate_on_nan": {"raise_error": _boolean},
    "model_checkpoint": {
        "filepath": PATH, "monitor": MONITOR, "verbose": VERBOSE, "save_best_only": _boolean, "save_weights_only": _boolean,
        "mode": _mode, "save_freq": _integer(1, also=("epoch",)), "initial_value_threshold": _number(optional=True),
    },
    "csv_logger": {"filename": PATH, "separator": _one_character, "append": _boolean},
    "tensorboard": {
        "log_dir": PATH, "histogram_freq": _integer(0), "write_graph": _boolean, "write_images": _boolean,
        "write_steps_per_second": _boolean, "update_freq": _integer(1, also=("epoch", "batch")), "profile_batch": _profile_batch,
        "embeddings_freq": _integer(0), "embeddings_metadata": _anything,
    },
    "learning_rate_scheduler": {"schedule": _anything, "verbose": VERBOSE},
    "json_log": {"filename": PATH, "append": _boolean},
}
# learning_rate_scheduler's own schedules: their parameters (every: a divisor, so at least 1)
SCHEDULE_PARAMS: dict[str, dict[str, Check]] = {
    "step": {"factor": _number(0, low_open=True), "every": _integer(1)},
    "exponential": {"rate": _number(0, low_open=True)},
    "time_based": {"decay": _number(0)},
}


REQUIRED = "required"  # marks a parameter without a default
_STEPS = _number(0, low_open=True)  # a divisor: a schedule of 0 steps divides by zero
_LR0 = _number(0)


def _numbers(value: Any) -> str | None:
    ok = isinstance(value, list) and value and all(not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) for v in value)
    return None if ok else "a non-empty list of numbers"


# optimizer.learning_rate: {name: ..., ...}: (check, required?) per parameter
SCHEDULE_TABLES: dict[str, dict[str, tuple[Check, bool]]] = {
    "cosine_decay": {
        "initial_learning_rate": (_LR0, True), "decay_steps": (_STEPS, True), "alpha": (_number(0, 1), False),
        "name": (_optional_text, False), "warmup_target": (_number(0, optional=True), False), "warmup_steps": (_number(0), False),
    },
    "cosine_decay_restarts": {
        "initial_learning_rate": (_LR0, True), "first_decay_steps": (_STEPS, True), "t_mul": (_number(0, low_open=True), False),
        "m_mul": (_number(0), False), "alpha": (_number(0, 1), False), "name": (_optional_text, False),
    },
    "exponential_decay": {
        "initial_learning_rate": (_LR0, True), "decay_steps": (_STEPS, True), "decay_rate": (_number(0), True),
        "staircase": (_boolean, False), "name": (_optional_text, False),
    },
    "inverse_time_decay": {
        "initial_learning_rate": (_LR0, True), "decay_steps": (_STEPS, True), "decay_rate": (_number(0), True),
        "staircase": (_boolean, False), "name": (_optional_text, False),
    },
    "piecewise_constant_decay": {"boundaries": (_numbers, True), "values": (_numbers, True), "name": (_optional_text, False)},
    "polynomial_decay": {
        "initial_learning_rate": (_LR0, True), "decay_steps": (_STEPS, True), "end_learning_rate": (_number(0), False),
        "power": (_number(), False), "cycle": (_boolean, False), "name": (_optional_text, False),
    },
}


# trainer's own schedules, defined by the run's length (trainer.catalogue.schedules): the same parameters each
RUN_LENGTH_SCHEDULES = ("one_cycle", "warmup_cosine", "warmup_linear")
RUN_LENGTH_DEFAULTS: dict[str, Any] = {"warmup": 0.2, "final": 0.0, "start": 0.0}  # peak is required
_RUN_LENGTH_TABLE: dict[str, tuple[Check, bool]] = {
    "peak": (_number(0, low_open=True), True), "warmup": (_number(0, 1, high_open=True), False),
    "final": (_number(0), False), "start": (_number(0), False),
}
SCHEDULE_TABLES.update({name: dict(_RUN_LENGTH_TABLE) for name in RUN_LENGTH_SCHEDULES})


def check_schedule(spec: dict[str, Any]) -> list[str]:
    """Problems with ``optimizer.learning_rate: {name: ..., ...}`` (names, types, divisors, required parameters)."""
    from trainer.catalogue.registry import unknown_choice_message

    key = "optimizer.learning_rate"
    name = spec.get("name")
    if not isinstance(name, str) or name not in SCHEDULE_TABLES:
        return [unknown_choice_message(f"{key}.name", name, list(SCHEDULE_TABLES))]
    table = SCHEDULE_TABLES[name]
    params = {k: v for k, v in spec.items() if k != "name"}
    problems = check_values(params, {p: check for p, (check, _) in table.items()}, key, name)
    missing = [p for p, (_, required) in table.items() if required and p not in params]
    if missing:
        problems.append(f"{key}: {name} needs {', '.join(missing)}; it takes: {', '.join(table)}")
    boundaries, values = params.get("boundaries"), params.get("values")
    if name == "piecewise_constant_decay" and isinstance(boundaries, list) and isinstance(values, list):
        if len(values) != len(boundaries) + 1:
            problems.append(f"{key}.values: needs one more value than boundaries ({len(boundaries) + 1}); got {len(values)}")
        if boundaries != sorted(boundaries):
            problems.append(f"{key}.boundaries: must be increasing; got {boundaries!r}")
    return problems


def _thresholds(value: Any) -> str | None:
    inside = lambda v: not isinstance(v, bool) and isinstance(v, (int, float)) and 0 <= v <= 1  # noqa: E731
    if value is None or inside(value) or (isinstance(value, list) and value and all(inside(v) for v in value)):
        return None
    return "a number from 0 to 1, a list of them, or null"


def _choice(*values: Any) -> Check:
    return lambda value: None if value in values else " or ".join(repr(v) if v is not None else "null" for v in values)


_DTYPE = _optional_text
_AUC_CURVES = ("ROC", "PR")
# metrics: their parameters besides ``name`` (which names the metric itself in the config)
METRIC_PARAMS: dict[str, dict[str, Check]] = {
    **{name: {"dtype": _DTYPE} for name in (
        "accuracy", "categorical_accuracy", "sparse_categorical_accuracy", "mean_squared_error", "mean_absolute_error",
    )},
    "top_k_accuracy": {"k": _integer(1), "dtype": _DTYPE},
    "top_k_categorical_accuracy": {"k": _integer(1), "dtype": _DTYPE},
    "sparse_top_k_categorical_accuracy": {"k": _integer(1), "dtype": _DTYPE, "from_sorted_ids": _boolean},
    "auc": {
        "num_thresholds": _integer(2), "curve": _choice(*_AUC_CURVES), "summation_method": _choice("interpolation", "minoring", "majoring"),
        "thresholds": _thresholds, "multi_label": _boolean, "num_labels": _integer(1, optional=True),
        "label_weights": _anything, "from_logits": _boolean, "dtype": _DTYPE,
    },
    "precision": {"thresholds": _thresholds, "top_k": _integer(1, optional=True), "class_id": _integer(0, optional=True), "dtype": _DTYPE},
    "recall": {"thresholds": _thresholds, "top_k": _integer(1, optional=True), "class_id": _integer(0, optional=True), "dtype": _DTYPE},
    "f1_score": {"average": _choice(None, "micro", "macro", "weighted"), "threshold": _number(0, 1, low_open=True, optional=True), "dtype": _DTYPE},
}
SPARSE_ONLY = {"top_k_accuracy": {"from_sorted_ids": _boolean}}  # the sparse Keras class takes one more


def check_values(params: dict[str, Any], table: dict[str, Any], key: str, what: str) -> list[str]:
    """One problem per parameter ``table`` does not know or whose value it refuses."""
    problems = []
    for name, value in params.items():
        check = table.get(name)
        if check is None:
            problems.append(unknown_parameter(key, name, list(table), what))
            continue
        if callable(check):
            allowed = check(value)
            if allowed is not None:
                problems.append(f"{key}.{name}: must be {allowed}; got {value!r}")
    return problems


def raise_problems(problems: list[str], key: str, what: str) -> None:
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{key}: {len(problems)} problems with the parameters of {what}", problems=problems)


def _exclusions(value: Any) -> str | None:
    if isinstance(value, bool) or (isinstance(value, list) and value and all(isinstance(v, str) and v for v in value)):
        return None
    return "true, false or a list of variable-name patterns such as [bias, gamma]"


# parameters trainer adds to every optimizer (trainer.catalogue.optimizers.build_optimizer applies them)
TRAINER_OPTIMIZER: dict[str, Check] = {"exclude_from_weight_decay": _exclusions, "norm_bias_lr_scale": _number(0, 10000, low_open=True)}
TRAINER_OPTIMIZER_DEFAULTS: dict[str, Any] = {"exclude_from_weight_decay": False, "norm_bias_lr_scale": 1.0}
KERAS_WEIGHT_DECAY = {"adamw": 0.004}  # Keras's default weight_decay where it is not None


def check_exclusions(name: str, params: dict[str, Any]) -> list[str]:
    """``exclude_from_weight_decay``: patterns that compile, and a weight decay for them to act on."""
    import re

    key = "optimizer.exclude_from_weight_decay"
    value = params.get("exclude_from_weight_decay", False)
    if _exclusions(value) is not None or value is False:
        return []
    problems = []
    for index, pattern in enumerate(value if isinstance(value, list) else []):
        try:
            re.compile(pattern)
        except re.error as exc:
            problems.append(f"{key}.{index}: {pattern!r} is not a valid pattern (a Python regular expression searched in variable names): {exc}")
    if params.get("weight_decay", KERAS_WEIGHT_DECAY.get(name)) is None:
        problems.append(f"{key}: has no effect without optimizer.weight_decay (the {name} default is none); set weight_decay, e.g. 0.0005")
    return problems


def check_optimizer_params(name: str, params: dict[str, Any]) -> None:
    """Names and values of a built-in optimizer's parameters (a schedule for learning_rate passes here)."""
    table = {**OPTIMIZER_PARAMS[name], **COMMON_OPTIMIZER, **TRAINER_OPTIMIZER}
    values = {k: v for k, v in params.items() if not (k == "learning_rate" and isinstance(v, (dict, str)))}
    problems = check_values(values, table, "optimizer", name)
    problems += check_exclusions(name, params)
    if params.get("clipnorm") is not None and params.get("clipvalue") is not None:
        problems.append("optimizer: clipnorm and clipvalue cannot be used together (Keras refuses both); keep one")
    if isinstance(params.get("learning_rate"), dict):
        problems += check_schedule(params["learning_rate"])
    if isinstance(params.get("learning_rate"), str):
        problems.append(
            f"optimizer.learning_rate: must be a number > 0 or a schedule such as {{name: exponential_decay, ...}}; "
            f"got {params['learning_rate']!r}"
        )
    raise_problems(problems, "optimizer", name)


def logged_names(metric_names: list[str], validation: bool) -> list[str]:
    """What the history logs each epoch (what a callback may ``monitor``)."""
    names = ["loss", *metric_names]
    return names + [f"val_{n}" for n in names] + ["learning_rate"] if validation else names + ["learning_rate"]


def check_callback_params(name: str, params: dict[str, Any], key: str, logged: list[str] | None) -> list[str]:
    """Problems with a built-in callback's parameters; ``logged`` None when the run's metric names are unknown."""
    table = CALLBACK_PARAMS[name]
    problems = []
    own: dict[str, Check] = {}
    if name == "learning_rate_scheduler":
        schedule = params.get("schedule", "step")
        if isinstance(schedule, str) and schedule in SCHEDULE_PARAMS:
            own = SCHEDULE_PARAMS[schedule]
    problems += check_values(params, {**table, **own}, key, f"{name}" + (f" with schedule {params.get('schedule', 'step')}" if own else ""))
    monitor = params.get("monitor", "val_loss") if "monitor" in table else None
    if monitor is not None:
        if not isinstance(monitor, str) or not monitor:
            problems.append(f"{key}.monitor: must be the name of a logged value such as val_loss; got {monitor!r}")
        elif logged is not None and monitor not in logged:
            hint = closest(monitor, logged)
            why = " (there is no validation split: data.validation is none)" if monitor.startswith("val_") and "val_loss" not in logged else ""
            problems.append(
                f"{key}.monitor: no metric named {monitor!r} is logged{why}"
                + (f" (did you mean {hint!r}?)" if hint else "")
                + f"; logged each epoch: {', '.join(logged)}"
            )
    if name == "model_checkpoint":
        path = params.get("filepath")
        weights_only = params.get("save_weights_only", False)
        if isinstance(path, str) and path and isinstance(weights_only, bool):
            suffix = ".weights.h5" if weights_only else (".keras", ".h5")
            if not PurePath(path).name.endswith(suffix):
                expected = "end in .weights.h5 (save_weights_only is true)" if weights_only else "end in .keras or .h5"
                problems.append(f"{key}.filepath: must {expected}; got {path!r}")
    return problems
