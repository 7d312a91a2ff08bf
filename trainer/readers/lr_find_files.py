"""``lr_find.json``, the record ``trainer lr-find`` writes, typed once: written from it and read back through it.

A folder of ``lr_find.json`` may come from anyone; ``read_lr_find`` reads it as every untrusted
record is read (``trainer.readers``): a regular file inside its folder, at most ``LR_FIND_LIMIT``
bytes, strict UTF-8 JSON, each field typed and bounded, or a ``RunDirError`` (exit 2) naming the
file and the field. Stdlib and pydantic only.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, model_validator

from trainer.errors import RunDirError
from trainer.readers import MiB, read_record

LR_FIND_FILE = "lr_find.json"
LR_FIND_PLOT = "lr_find.png"
MAX_RAMP_STEPS = 1000  # trainer lr-find --steps: "a few hundred" at most
MIN_RATE, MAX_RATE = 1e-12, 1e6  # --start and --end: anything outside is a typo, not a learning rate
LR_FIND_LIMIT = 1 * MiB  # 1,000 steps of three numbers are ~70 KB
STOP_REASONS = ("completed", "diverged", "not_finite")

Rate = Annotated[StrictFloat, Field(ge=MIN_RATE, le=MAX_RATE, allow_inf_nan=False)]
Number = Optional[Annotated[StrictFloat, Field(allow_inf_nan=False)]]  # null where the loss was NaN or infinite
Steps = Annotated[StrictInt, Field(ge=1, le=MAX_RAMP_STEPS)]


class LrFindRecord(BaseModel):
    """``lr_find.json``: the ramp, the loss at each step, the smoothed loss and the suggestion (docs/lr-find.md)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    version: Literal[1] = 1
    config: Optional[Annotated[StrictStr, Field(max_length=4096)]]  # the YAML file the ramp trained, as given
    start: Rate
    end: Rate
    steps: Steps  # planned
    steps_run: Annotated[StrictInt, Field(ge=0, le=MAX_RAMP_STEPS)]
    batch_size: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]
    smoothing: Annotated[StrictFloat, Field(ge=0.0, lt=1.0)]  # beta of the bias-corrected exponential average
    stopped: Literal["completed", "diverged", "not_finite"]
    rates: list[Rate] = Field(max_length=MAX_RAMP_STEPS)
    losses: list[Number] = Field(max_length=MAX_RAMP_STEPS)
    smoothed_losses: list[Number] = Field(max_length=MAX_RAMP_STEPS)
    suggested_learning_rate: Optional[Rate]
    set: Optional[Annotated[StrictStr, Field(max_length=200)]]  # the --set that applies the suggestion

    @model_validator(mode="after")
    def _consistent(self) -> "LrFindRecord":
        if not self.start < self.end:
            raise ValueError(f"start ({self.start}) must be below end ({self.end})")
        if not len(self.rates) == len(self.losses) == len(self.smoothed_losses) == self.steps_run:
            raise ValueError(
                f"rates, losses and smoothed_losses must each hold steps_run ({self.steps_run}) values; "
                f"they hold {len(self.rates)}, {len(self.losses)} and {len(self.smoothed_losses)}"
            )
        if self.steps_run > self.steps:
            raise ValueError(f"steps_run ({self.steps_run}) exceeds steps ({self.steps})")
        slack = 1e-9
        if any(not (self.start * (1 - slack) <= rate <= self.end * (1 + slack)) for rate in self.rates):
            raise ValueError(f"every rate must lie in the ramp from start ({self.start}) to end ({self.end})")
        if any(later <= earlier for earlier, later in zip(self.rates, self.rates[1:])):
            raise ValueError("rates must rise from step to step")
        if self.suggested_learning_rate is not None and self.suggested_learning_rate not in self.rates:
            raise ValueError("suggested_learning_rate must be one of the rates tried")
        return self


def read_lr_find(path: Path | str) -> LrFindRecord:
    """``lr_find.json`` as its typed record; anything malformed or out of bounds is a ``RunDirError`` naming the field."""
    return read_record(LrFindRecord, path, limit=LR_FIND_LIMIT, error=RunDirError)


def finite_or_none(value: float) -> float | None:
    """A loss as the record stores it: NaN and infinities become null (strict JSON has no NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None
