"""The ``train.ema`` section: an exponential moving average of the weights (no TensorFlow here; ``trainer.run.ema`` keeps it)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from trainer.config.base import INT32_MAX, _Strict

WARMUP_START = 10  # decay_t = min(decay, (1 + t) / (WARMUP_START + t)), t the averaging updates done (TensorFlow's ExponentialMovingAverage)


class EmaConfig(_Strict):
    """``train.ema: {decay: 0.999, warmup: false, every: 1, lookahead: false}``: validation, test, ``model.h5`` and exports use the average.

    ``decay``: how much of the average is kept at each update, strictly between 0 and 1.
    ``warmup``: true lowers the decay of the first updates to ``(1 + t) / (10 + t)`` (t: updates so far),
    so that a short run is not dominated by the initial weights; ``cubic`` ramps it as airbench94 does,
    ``decay x (s / S)^3`` (s: training steps so far, S: the run's training steps), from 0 (the average
    follows the weights) to ``decay`` at the end. ``every``: update the average every N training steps
    (the decay applies per update). ``lookahead``: after each update the weights are set to the average
    (airbench94's lookahead: training goes on from the average instead of beside it).
    """

    decay: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.999
    warmup: bool | Literal["cubic"] = False
    every: Annotated[int, Field(gt=0, le=INT32_MAX)] = 1
    lookahead: bool = False

    def describe(self) -> str:
        """One line for the run header: ``decay 0.999, warmup, every step``."""
        every = "every step" if self.every == 1 else f"every {self.every} steps"
        decay = f"decay {self.decay:g} x (step / steps)^3" if self.warmup == "cubic" else f"decay {self.decay:g}{', warmup' if self.warmup else ''}"
        pulled = ", lookahead (the weights are set to the average at each update)" if self.lookahead else ""
        return f"{decay}, {every}{pulled} (validation, test and model.h5 use the average)"
