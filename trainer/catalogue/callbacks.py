"""The callback catalogue: ``{name, ...params}`` entries -> Keras callbacks.

File paths (checkpoints, CSV and JSON-lines logs, TensorBoard events) are names inside the run
directory: an absolute path, ``..`` or a name of trainer's own files is refused (``check_callbacks``,
which ``trainer validate`` runs too).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from trainer.errors import ConfigError
from trainer.catalogue.optimizers import check_keras_params, keras_defaults
from trainer.catalogue.registry import Registry, construct, unknown_choice_message


@dataclass(frozen=True)
class CallbackInfo:
    name: str
    keras_class: str  # a class of keras.callbacks, or "" for trainer's own
    path_param: str | None = None  # the parameter naming a file or folder, resolved inside the run dir
    defaults: dict[str, Any] = field(default_factory=dict)  # trainer's defaults that differ from Keras's


CALLBACKS: Registry[CallbackInfo] = Registry("callbacks")
for _info in (
    CallbackInfo("early_stopping", "EarlyStopping"),
    CallbackInfo("reduce_lr_on_plateau", "ReduceLROnPlateau"),
    CallbackInfo("terminate_on_nan", "TerminateOnNaN"),
    CallbackInfo("model_checkpoint", "ModelCheckpoint", "filepath", {"filepath": "best_model.h5", "save_best_only": True}),
    CallbackInfo("csv_logger", "CSVLogger", "filename", {"filename": "epochs.csv"}),
    CallbackInfo("tensorboard", "TensorBoard", "log_dir", {"log_dir": "tensorboard"}),
    CallbackInfo("learning_rate_scheduler", "LearningRateScheduler", None, {"schedule": "step"}),
    CallbackInfo("json_log", "", "filename", {"filename": "epochs.jsonl"}),
):
    CALLBACKS.register(_info.name, _info)


# --------------------------------------------------------------------------- epoch learning-rate schedules

# name -> (parameters with defaults, lr0, epoch, params -> learning rate)
EPOCH_SCHEDULES: dict[str, tuple[dict[str, Any], Callable[..., float]]] = {
    "step": ({"factor": 0.5, "every": 10}, lambda lr0, epoch, p: lr0 * p["factor"] ** math.floor(epoch / p["every"])),
    "exponential": ({"rate": 0.9}, lambda lr0, epoch, p: lr0 * p["rate"] ** epoch),
    "time_based": ({"decay": 0.01}, lambda lr0, epoch, p: lr0 / (1.0 + p["decay"] * epoch)),
}


class EpochSchedule:
    """``schedule(epoch, lr)`` for Keras's LearningRateScheduler: the optimizer's starting rate times a named decay."""

    def __init__(self, name: str, params: dict[str, Any]):
        self.name = name
        self.params = params
        self.initial: float | None = None

    def __call__(self, epoch: int, lr: float) -> float:
        if self.initial is None:
            self.initial = float(lr)
        return float(EPOCH_SCHEDULES[self.name][1](self.initial, epoch, self.params))


def _schedule(params: dict[str, Any], key: str, config_dir: Any) -> tuple[Any, dict[str, Any]]:
    """Split learning_rate_scheduler's parameters into the schedule function and the Keras ones."""
    from trainer.catalogue.user_code import import_ref, is_ref

    params = dict(params)
    schedule = params.pop("schedule")
    if isinstance(schedule, str) and is_ref(schedule):
        func, _ = import_ref(schedule, config_dir, key=f"{key}.schedule")
        if not callable(func):
            raise ConfigError(f"{key}.schedule: {schedule} is a {type(func).__name__}, not a function (epoch, lr) -> lr")
        return func, params
    if schedule not in EPOCH_SCHEDULES:
        raise ConfigError(unknown_choice_message(f"{key}.schedule", schedule, [*EPOCH_SCHEDULES, "module:function"]))
    defaults = EPOCH_SCHEDULES[schedule][0]
    own = {p: params.pop(p) for p in list(params) if p in defaults}
    unknown = [p for p in params if p != "verbose"]
    if unknown:
        raise ConfigError(
            f"{key}: learning_rate_scheduler with schedule {schedule} takes no parameter {unknown[0]!r}; "
            f"it takes: schedule, {', '.join(defaults)}, verbose"
        )
    return EpochSchedule(schedule, {**defaults, **own}), params


# --------------------------------------------------------------------------- checks without Keras


def check_callbacks(specs: list[Any], logged: list[str] | None) -> None:
    """Every built-in callback's parameters (names, types, ranges, ``monitor``, file names), all problems at once.

    ``logged``: what the run logs each epoch (None when custom metrics make it unknown).
    """
    from trainer.catalogue.params import CALLBACK_PARAMS, SCHEDULE_PARAMS, check_callback_params
    from trainer.catalogue.user_code import is_ref
    from trainer.paths import run_file_problem

    problems: list[str] = []
    for index, spec in enumerate(specs):
        key = f"callbacks.{index}"
        if is_ref(spec.name) or CALLBACKS.canonical(spec.name) is None:
            continue  # user code is checked when imported; an unknown name is refused by name elsewhere
        info = CALLBACKS.get(spec.name)
        params = {**info.defaults, **spec.params}
        problems += check_callback_params(info.name, params, key, logged)
        if info.name == "learning_rate_scheduler":
            schedule = params.get("schedule")
            if not (isinstance(schedule, str) and (schedule in SCHEDULE_PARAMS or is_ref(schedule))):
                problems.append(unknown_choice_message(f"{key}.schedule", schedule, [*SCHEDULE_PARAMS, "module:function"]))
        if info.path_param is not None and info.path_param in CALLBACK_PARAMS[info.name]:
            value = params.get(info.path_param)
            why = run_file_problem(value) if isinstance(value, str) else "must be a file name"
            if why:
                problems.append(f"{key}.{info.path_param}: {value!r} {why}")
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"callbacks: {len(problems)} problems", problems=problems)


# --------------------------------------------------------------------------- building


def _json_log_class():
    import keras

    class JsonLinesLog(keras.callbacks.Callback):
        """One JSON object per finished epoch (``{"epoch": 1, "loss": ..., ...}``), flushed as it is written."""

        def __init__(self, filename: str, append: bool = False):
            super().__init__()
            self.filename = filename
            self.append = append

        def on_train_begin(self, logs=None):
            Path(self.filename).parent.mkdir(parents=True, exist_ok=True)
            if not self.append:
                Path(self.filename).write_text("")

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
            with open(self.filename, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")

    return JsonLinesLog


def tensorboard_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def callback_class(info: CallbackInfo):
    import keras

    return getattr(keras.callbacks, info.keras_class) if info.keras_class else _json_log_class()


def callback_defaults(info: CallbackInfo) -> dict[str, Any]:
    """Every parameter with the default trainer uses (for ``trainer list callbacks``)."""
    defaults = {**keras_defaults(callback_class(info)), **info.defaults}
    if info.name == "learning_rate_scheduler":
        for name, (params, _) in EPOCH_SCHEDULES.items():
            defaults.update({f"{p} ({name})": v for p, v in params.items()})
    return defaults


def build_callbacks(specs: list[Any], run_dir: Path | None, config_dir: Any = None) -> list[Any]:
    """Keras callbacks for the configured entries, in order (``run_dir`` None: only check them)."""
    import keras

    from trainer.catalogue.user_code import instantiate, is_ref

    base = Path(run_dir) if run_dir is not None else Path("run-dir-not-created-yet")
    built = []
    for index, spec in enumerate(specs):
        key = f"callbacks.{index}"
        if is_ref(spec.name):
            callback, _ = instantiate(
                spec.name, spec.params, config_dir, key=key, base=keras.callbacks.Callback, what="callback", allow_function=False
            )
            built.append(callback)
            continue
        info = CALLBACKS.get(spec.name, key=f"{key}.name")
        if info.name == "tensorboard" and not tensorboard_installed():
            raise ConfigError(
                f"{key}: the tensorboard callback needs the 'tensorboard' package, which is not installed; "
                "run `pip install tensorboard`, or remove this callback (json_log and csv_logger need nothing extra)."
            )
        cls = callback_class(info)
        params = {**info.defaults, **spec.params}
        keras_params = params
        if info.name == "learning_rate_scheduler":
            schedule, keras_params = _schedule(params, key, config_dir)
            keras_params = {"schedule": schedule, **keras_params}
        check_keras_params(cls, {k: v for k, v in keras_params.items() if k != "schedule"}, key, spec.name)
        if info.path_param is not None:
            value = keras_params[info.path_param]
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{key}.{info.path_param}: must be a file or folder path; got {value!r}")
            if run_dir is not None:
                from trainer.paths import inside

                keras_params[info.path_param] = str(inside(base, value, f"{key}.{info.path_param}"))  # a link cannot lead out
            else:
                keras_params[info.path_param] = str(base / value)
        if info.name == "tensorboard" and keras.backend.backend() != "tensorflow":  # Keras's writes through tf.summary
            from trainer.catalogue.event_scalars import epoch_scalars_callback

            built.append(epoch_scalars_callback(keras_params, key))
            continue
        built.append(construct(cls, keras_params, key, spec.name, shown=spec.params))
    return built
