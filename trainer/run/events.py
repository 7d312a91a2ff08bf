"""Run events: how a run tells the world what happens in it (no TensorFlow here).

A run calls, in order: ``on_run_start(info)`` once the data is loaded, the model built and the
run directory created; ``on_epoch_end(epoch, row)`` with each row as written to ``history.csv``;
``on_run_end(result)`` for every ending (completed, failed, interrupted, stopped by a handler),
after ``metrics.json`` is written and before any exception propagates. The Rich display of
``trainer run``, the MLflow logger and the sweep's pruning hook are implementations.

Finer-grained hooks (``on_notice``, ``on_epoch_start``, ``on_progress``, ``on_phase_start`` /
``on_phase_end``) exist for displays; most handlers ignore them.

A handler that raises is reported (a notice to the other handlers, ``RunResult.event_errors``
and a ``RuntimeWarning``) and the run goes on, except for ``StopRun``: a handler raises it to
end the run early on purpose (a pruned sweep trial); the run then ends with that status,
writes ``metrics.json`` and returns normally.
"""
from __future__ import annotations

import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable


class StopRun(Exception):
    """Raised by an event handler (or a Keras callback) to end a run early on purpose; not a failure.

    ``status`` becomes ``metrics.json``'s status (``pruned`` for a sweep trial, ``stopped`` by default).
    """

    def __init__(self, reason: str = "stopped by an event handler", status: str = "stopped"):
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass
class RunStartInfo:
    """What ``on_run_start`` receives."""

    config: Any  # trainer.config.Config
    run_dir: Path | None  # None for a dry run
    sizes: dict[str, int]  # examples per split: train, validation, test
    model_summary: str  # "mlp: 55,050 parameters (55,050 trainable)"
    header: list[tuple[str, str]] = field(default_factory=list)  # the rows trainer run shows
    initial_epoch: int = 0  # > 0 when resuming
    resumed: bool = False


@dataclass
class RunResult:
    """How a run ended; ``train`` returns it (completed, dry-run, or a handler's StopRun status)."""

    status: str  # completed | failed | interrupted | pruned | stopped | dry-run
    run_dir: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)  # the content of metrics.json
    history: list[dict[str, Any]] = field(default_factory=list)  # the rows of history.csv
    reason: str | None = None  # why a run did not complete
    model_summary: str = ""  # the full Keras summary (dry runs)
    plan: Any = None  # trainer.config.checks.Plan
    event_errors: list[str] = field(default_factory=list)


class RunEvents:
    """Base class for handlers: every method does nothing; override the ones you need."""

    def on_run_start(self, info: RunStartInfo) -> None:
        """The run is about to fit (data loaded, model built, run directory created)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        """Epoch ``epoch`` (1-based) ended; ``logs`` is the row written to history.csv."""

    def on_run_end(self, result: RunResult) -> None:
        """The run ended (any status); metrics.json is written when it could be."""

    # -- display hooks
    def on_notice(self, text: str) -> None:
        """Something the user should know (a fallback taken, a setting adjusted)."""

    def on_epoch_start(self, epoch: int, epochs: int, steps: int | None) -> None:
        """Epoch ``epoch`` of ``epochs`` starts, ``steps`` batches long (None when unknown)."""

    def on_progress(self, step: int, logs: dict[str, Any]) -> None:
        """Step ``step`` of the current epoch or phase is done."""

    def on_phase_start(self, description: str, total: int | None) -> None:
        """Work other than an epoch starts (computing backbone features, evaluating)."""

    def on_phase_end(self) -> None:
        """That work ended."""


HOOKS = tuple(name for name in vars(RunEvents) if name.startswith("on_"))


class EventBus(RunEvents):
    """Calls every handler in turn; an exception in one is reported and does not stop the run (StopRun excepted)."""

    def __init__(self, handlers: Iterable[Any] = ()):
        self.handlers = [h for h in handlers if h is not None]
        self.errors: list[str] = []

    def _call(self, hook: str, *args: Any) -> None:
        stop: StopRun | None = None
        for handler in self.handlers:
            method = getattr(handler, hook, None)
            if method is None:
                continue
            try:
                method(*args)
            except StopRun as request:
                stop = stop or request
            except Exception as exc:  # noqa: BLE001 - a handler's bug must not lose the run
                self._report(handler, hook, exc)
        if stop is not None:
            raise stop

    def _report(self, handler: Any, hook: str, exc: Exception) -> None:
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        place = f" ({Path(where.filename).name}:{where.lineno})" if where else ""
        text = f"event handler {type(handler).__name__}.{hook} raised {type(exc).__name__}: {exc}{place}; the run goes on."
        self.errors.append(text)
        warnings.warn(text, RuntimeWarning, stacklevel=3)
        if hook != "on_notice":
            self._call("on_notice", text)

    def on_run_start(self, info: RunStartInfo) -> None:
        self._call("on_run_start", info)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        self._call("on_epoch_end", epoch, logs)

    def on_run_end(self, result: RunResult) -> None:
        try:
            self._call("on_run_end", result)
        except StopRun:  # the run is over already
            pass
        result.event_errors = list(self.errors)

    def on_notice(self, text: str) -> None:
        self._call("on_notice", text)

    def on_epoch_start(self, epoch: int, epochs: int, steps: int | None) -> None:
        self._call("on_epoch_start", epoch, epochs, steps)

    def on_progress(self, step: int, logs: dict[str, Any]) -> None:
        self._call("on_progress", step, logs)

    def on_phase_start(self, description: str, total: int | None) -> None:
        self._call("on_phase_start", description, total)

    def on_phase_end(self) -> None:
        self._call("on_phase_end")
