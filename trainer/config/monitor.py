"""``train.monitor``: the logged value that picks the epoch ``model.h5`` holds, and its direction (no TensorFlow).

``model.h5`` is the best epoch by ``train.monitor`` (default ``val_loss``; ``loss`` when
``data.validation`` is ``none``), ``last.h5`` the last one (``trainer.run.best``). The direction
comes from the name, as Keras's callbacks guess it (a loss or an error is better lower, an
accuracy-like score higher), or from ``train.monitor_mode``; a name whose direction cannot be
guessed needs ``monitor_mode`` (exit 2 naming it).
"""
from __future__ import annotations

from typing import Any

from trainer.errors import ConfigError

# Substrings of logged names, checked in this order: lower is better, then higher is better.
LOWER_IS_BETTER = ("loss", "error", "crossentropy", "hinge", "divergence", "poisson", "logcosh", "huber", "mae", "mse", "mape", "msle")
HIGHER_IS_BETTER = ("acc", "auc", "precision", "recall", "f1", "iou", "dice", "r2", "true_positives", "true_negatives")


def default_monitor(config: Any) -> str:
    """``val_loss``, or ``loss`` when the run has no validation split."""
    return "loss" if config.data.validation == "none" else "val_loss"


def guess_mode(name: str) -> str | None:
    """``min`` or ``max`` from a logged value's name; None when the name does not say."""
    lowered = name.lower()
    if lowered == "learning_rate":
        return None
    if any(word in lowered for word in LOWER_IS_BETTER):
        return "min"
    if any(word in lowered for word in HIGHER_IS_BETTER):
        return "max"
    return None


def resolve_monitor(config: Any, logged: list[str] | None = None) -> tuple[str, str]:
    """(name, ``min``/``max``) of ``train.monitor``; a ConfigError (exit 2) naming the key when it cannot be followed.

    ``logged``: what the run logs each epoch (None when user code makes it unknown until imported).
    """
    train = config.train
    name = train.monitor if train.monitor is not None else default_monitor(config)
    if logged is not None and name not in logged:
        from trainer.catalogue.registry import closest

        hint = closest(name, logged)
        why = " (there is no validation split: data.validation is none)" if name.startswith("val_") and config.data.validation == "none" else ""
        raise ConfigError(
            f"train.monitor: no value named {name!r} is logged{why}"
            + (f" (did you mean {hint!r}?)" if hint else "")
            + f"; logged each epoch: {', '.join(n for n in logged if n != 'learning_rate')}"
        )
    if name == "learning_rate":
        raise ConfigError("train.monitor: learning_rate is a setting, not a measure of the model; monitor a loss or a metric such as val_loss")
    mode = train.monitor_mode if train.monitor_mode != "auto" else guess_mode(name)
    if mode is None:
        raise ConfigError(
            f"train.monitor: {name!r} does not say whether lower or higher is better; "
            "set train.monitor_mode: min (lower is better) or max (higher is better)."
        )
    return name, mode
