"""How a sweep tells the world what happens: one record per trial, and the events a display implements."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrialRecord:
    """One trial as ``trials.csv`` lists it."""

    number: int
    status: str  # completed | pruned | failed | interrupted | lost | surplus | running
    value: float | None
    params: dict[str, Any]
    wall_seconds: float | None = None
    epochs: int | None = None
    run_dir: str | None = None
    host: str | None = None
    reason: str | None = None
    overrides: list[str] = field(default_factory=list)  # the trial's --set values

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SweepStartInfo:
    """What ``on_sweep_start`` receives."""

    study: str
    storage: str  # passwords hidden
    sweep_dir: Path
    metric: str
    direction: str
    budget: int  # trials to reach (sweep.trials, or the grid's size when smaller)
    used: int  # trials that count toward it already (a continued search)
    space: list[str] = field(default_factory=list)
    workers: int = 1


class SweepEvents:
    """Base class for sweep displays: every method does nothing; override the ones you need."""

    def on_sweep_start(self, info: SweepStartInfo) -> None:
        """The study is open; trials are about to run."""

    def on_trial_start(self, record: TrialRecord) -> None:
        """A trial got its values and starts training."""

    def on_trial_end(self, record: TrialRecord) -> None:
        """A trial ended (any status), as recorded in the study."""

    def on_sweep_end(self) -> None:
        """Trials stopped running here (the budget is used, Ctrl-C, an error); the outputs are written next."""

    def on_notice(self, text: str) -> None:
        """Something the user should know (lost trials marked, a budget already used)."""
