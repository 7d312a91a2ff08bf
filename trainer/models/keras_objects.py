"""Every Keras object trainer defines (metrics, losses, schedules, layers), by the names a saved model uses.

Pass ``trainer_objects()`` as ``custom_objects`` to ``keras.models.load_model`` to load a
trainer ``model.h5`` without trainer's loaders; ``trainer.models.load_model`` and
``load_custom_objects`` include them already.

``keras_base(cls)`` says which of the Keras kinds a model file may hold a user class is (a loss,
metric, layer, regularizer, optimizer or learning-rate schedule): the only classes trainer hands
to Keras when it loads a run's custom code back.
"""
from __future__ import annotations

import importlib.machinery
import inspect
from pathlib import Path
from typing import Any, Iterable

from trainer.catalogue.user_code import _call, import_ref, object_names, split_ref
from trainer.errors import ConfigError, RunDirError

# The kinds of Keras object a saved model may name by class: (attribute path under ``keras``, what it is called)
KERAS_OBJECT_BASES = (
    ("losses.Loss", "keras.losses.Loss"),
    ("metrics.Metric", "keras.metrics.Metric"),
    ("layers.Layer", "keras.layers.Layer"),
    ("regularizers.Regularizer", "keras.regularizers.Regularizer"),
    ("optimizers.Optimizer", "keras.optimizers.Optimizer"),
    ("optimizers.schedules.LearningRateSchedule", "keras.optimizers.schedules.LearningRateSchedule"),
)


def trainer_objects() -> dict[str, Any]:
    """Class name (plain and ``trainer>``-prefixed, as Keras registers it) -> class."""
    from trainer.catalogue.loss_classes import TRAINER_LOSS_CLASSES
    from trainer.catalogue.metric_classes import TRAINER_METRIC_CLASSES
    from trainer.catalogue.schedules import TRAINER_SCHEDULE_CLASSES
    from trainer.models.layers import TRAINER_LAYER_CLASSES

    return {**TRAINER_METRIC_CLASSES, **TRAINER_LOSS_CLASSES, **TRAINER_SCHEDULE_CLASSES, **TRAINER_LAYER_CLASSES}


def keras_bases() -> list[tuple[type, str]]:
    """The Keras base classes of ``KERAS_OBJECT_BASES`` with their names (Keras is imported)."""
    import keras

    bases = []
    for path, name in KERAS_OBJECT_BASES:
        value: Any = keras
        for part in path.split("."):
            value = getattr(value, part)
        bases.append((value, name))
    return bases


def keras_base(cls: Any) -> str | None:
    """The name of the Keras kind ``cls`` subclasses (``keras.losses.Loss``, ...), or None when it is none of them."""
    if not isinstance(cls, type):
        return None
    return next((name for base, name in keras_bases() if issubclass(cls, base)), None)


def keras_kinds() -> str:
    """The kinds as a message lists them."""
    return ", ".join(name for _, name in KERAS_OBJECT_BASES)


def is_keras_object(value: Any) -> bool:
    """Whether ``value`` is an instance of one of the Keras kinds (what a factory may return)."""
    return keras_base(type(value)) is not None


def load_custom_objects(manifest: dict[str, Any], code_dirs: Iterable[str | Path] = ()) -> dict[str, Any]:
    """The ``custom_objects`` dict for ``keras.models.load_model`` of a run directory's model.

    ``manifest`` is the run's parsed ``manifest.json``. A run directory is data, never code: each
    recorded ``module:attr`` is imported only from ``code_dirs``, the folders the user named
    (``--code DIR``, or the config's folder and the working directory with ``--config``); never
    from the run directory, from the folder the manifest records, or from installed packages.
    ``attr`` must be a class or function defined in that module (``defined_in``); a class must be a
    Keras object (``KERAS_OBJECT_BASES``), and only a function is called, with
    ``factory_params``, and must return a Keras object or a function.
    Besides the user's objects the dict holds trainer's own metrics, losses and schedules, so it is always safe to pass.
    Raises ``RunDirError`` (exit 2) naming the entry, what it named and what is allowed.
    """
    dirs = [Path(d).resolve() for d in code_dirs]
    objects: dict[str, Any] = trainer_objects()
    for index, entry in enumerate(manifest.get("custom_objects") or []):
        ref = entry.get("ref", "") if isinstance(entry, dict) else ""
        key = f"manifest.json custom_objects.{index} ({ref})"
        try:
            module_name, attr = split_ref(ref, key)
        except ConfigError as exc:
            raise RunDirError(f"the run's manifest is malformed: {exc.message}") from None
        factory_params = entry.get("factory_params")
        if factory_params is not None and not isinstance(factory_params, dict):
            raise RunDirError(f"the run's manifest is malformed: {key}: factory_params is {factory_params!r}, expected a mapping.")
        top = module_name.split(".")[0]
        spec = importlib.machinery.PathFinder.find_spec(top, [str(d) for d in dirs]) if dirs else None
        if spec is None:
            recorded = f" (it was trained with {top} from {entry['path']})" if isinstance(entry.get("path"), str) else ""
            looked = f"; looked in {', '.join(str(d) for d in dirs)}" if dirs else ""
            raise RunDirError(
                f"the run's model needs custom code: module {module_name!r} ({ref}){recorded}{looked}. trainer never imports "
                "code because a run directory names it; to allow it, pass --code DIR, the folder holding "
                f"{top}.py (or {top}/), or code_dirs=[DIR] in the Python API."
            )
        kinds = f"a class subclassing one of {keras_kinds()}, or a plain function"
        try:
            value, root = import_ref(ref, key=key, dirs=dirs, what="Keras object or function")
        except ConfigError as exc:
            raise RunDirError(f"cannot load the model's custom code: {exc.message} A run's custom objects are {kinds}.") from None
        if root.resolve() not in dirs:
            raise RunDirError(
                f"cannot load the model's custom code: {key}: module {module_name!r} was imported from {root}, "
                f"not from a folder you named ({', '.join(str(d) for d in dirs)})."
            )
        if inspect.isclass(value):
            if keras_base(value) is None:
                raise RunDirError(f"cannot load the model's custom code: {key}: {ref} is the class {value.__name__}, not a Keras object; expected {kinds}.")
            if factory_params is not None:  # trainer records factory_params for factory functions only; a class is rebuilt by Keras
                raise RunDirError(
                    f"the run's manifest is malformed: {key}: factory_params given for the class {value.__name__}; "
                    "only a factory function is called with parameters (Keras rebuilds a class from model.h5)."
                )
        elif factory_params is not None:
            value = _call(value, factory_params, key, ref, error=RunDirError)
            if not (is_keras_object(value) or inspect.isfunction(value)):
                raise RunDirError(
                    f"cannot load the model's custom code: {key}: the factory {ref} returned {type(value).__name__}; "
                    "expected a Keras object or a function."
                )
        objects.update(object_names(attr, value))
    return objects
