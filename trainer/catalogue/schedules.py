"""Learning-rate schedules defined by the run's own length: ``one_cycle``, ``warmup_cosine``, ``warmup_linear``.

``optimizer.learning_rate: {name: warmup_cosine, peak: 0.1, warmup: 0.2, final: 0.0, start: 0.0}``:
``warmup`` is a fraction of the run's optimizer steps, which trainer counts itself
(``run_steps``: steps per epoch x epochs), so ``--set train.epochs=20`` stretches the same shape.
With ``T`` steps and ``W = floor(warmup * T)`` warm-up steps, the rate at step ``s`` (the number
of updates already made, Keras's ``optimizer.iterations``) is

- ``s < W``, rising from ``start`` to ``peak``: linear ``start + (peak - start) * s / W``
  (warmup_linear, warmup_cosine) or half a cosine ``start + (peak - start) * (1 - cos(pi s / W)) / 2`` (one_cycle);
- ``s >= W``, falling from ``peak`` to ``final`` with ``f = min((s - W) / (T - W), 1)``: linear
  ``peak + (final - peak) * f`` (warmup_linear) or ``final + (peak - final) * (1 + cos(pi f)) / 2``
  (warmup_cosine, one_cycle); after ``T`` steps it stays at ``final``.

The schedule is a function of the iteration count only, which checkpoints keep, so a resumed run
continues the same curve. Registered with Keras: a model.h5 saved with its optimizer loads back.
"""
from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from trainer.catalogue.params import RUN_LENGTH_DEFAULTS

SHAPES: dict[str, tuple[str, str]] = {  # name (params.RUN_LENGTH_SCHEDULES) -> (rise, fall)
    "warmup_linear": ("linear", "linear"),
    "warmup_cosine": ("linear", "cosine"),
    "one_cycle": ("cosine", "cosine"),
}


def warmup_steps(warmup: float, total_steps: int) -> int:
    """``floor(warmup * total_steps)``, never the whole run (at least one step falls)."""
    return min(math.floor(warmup * total_steps + 1e-9), total_steps - 1)


@keras.saving.register_keras_serializable(package="trainer", name="RunLengthSchedule")
class RunLengthSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A warm-up then a decay over ``total_steps`` optimizer steps; ``shape`` is one of ``SHAPES``."""

    def __init__(
        self, shape: str, peak: float, total_steps: int, warmup: float = RUN_LENGTH_DEFAULTS["warmup"],
        final: float = RUN_LENGTH_DEFAULTS["final"], start: float = RUN_LENGTH_DEFAULTS["start"], name: str | None = None,
    ):
        super().__init__()
        if shape not in SHAPES:
            raise ValueError(f"shape must be one of {', '.join(SHAPES)}; got {shape!r}")
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be a whole number >= 1; got {total_steps!r}")
        if not 0 <= warmup < 1:
            raise ValueError(f"warmup must be >= 0 and < 1; got {warmup!r}")
        if not (peak > 0 and math.isfinite(peak)) or not (final >= 0 and math.isfinite(final)) or not (start >= 0 and math.isfinite(start)):
            raise ValueError(f"peak must be > 0, final and start >= 0; got peak={peak!r}, final={final!r}, start={start!r}")
        self.shape, self.total_steps, self.name = shape, total_steps, name
        self.peak, self.warmup, self.final, self.start = float(peak), float(warmup), float(final), float(start)

    def __call__(self, step):
        rise, fall = SHAPES[self.shape]
        step = ops.cast(step, "float32")
        warm = warmup_steps(self.warmup, self.total_steps)
        up = step / float(max(warm, 1))
        up = up if rise == "linear" else (1.0 - ops.cos(math.pi * up)) / 2.0
        rising = self.start + (self.peak - self.start) * up
        down = ops.clip((step - warm) / float(self.total_steps - warm), 0.0, 1.0)
        down = 1.0 - down if fall == "linear" else (1.0 + ops.cos(math.pi * down)) / 2.0
        falling = self.final + (self.peak - self.final) * down
        return ops.where(step < warm, rising, falling)

    def get_config(self) -> dict[str, Any]:
        return {
            "shape": self.shape, "peak": self.peak, "total_steps": self.total_steps, "warmup": self.warmup,
            "final": self.final, "start": self.start, "name": self.name,
        }


TRAINER_SCHEDULE_CLASSES: dict[str, type] = {"RunLengthSchedule": RunLengthSchedule, "trainer>RunLengthSchedule": RunLengthSchedule}
