"""The ``evaluate`` section: how the test split is measured at the end of a run (no TensorFlow here)."""
from __future__ import annotations

from typing import Literal

from trainer.config.base import _Strict
from trainer.errors import ConfigError

TTA_MODES = ("none", "flip", "flip_translate")  # trainer.inference.probabilities builds their views


def check_tta_mode(mode: object, key: str = "--tta") -> str:
    """``mode`` if it is one of ``TTA_MODES``; else a ConfigError naming ``key``, the value and the choices."""
    from trainer.catalogue.registry import unknown_choice_message

    if not isinstance(mode, str) or mode not in TTA_MODES:
        raise ConfigError(unknown_choice_message(key, mode, TTA_MODES))
    return mode


class EvaluateConfig(_Strict):
    """``evaluate.tta``: besides the plain test metrics, ``metrics.json`` gets ``test_tta``, probabilities averaged over views."""

    tta: Literal["none", "flip", "flip_translate"] = "none"
