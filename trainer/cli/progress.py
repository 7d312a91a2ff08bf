"""The ``trainer run`` display: run events rendered with Rich (a header, a live bar per epoch, a line per epoch)."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from trainer.console import _escape, console, format_value, key_value_table, print_table
from trainer.run.events import RunEvents, RunStartInfo


class RunProgress(RunEvents):
    """Run events shown on a terminal; on anything else (a pipe, a CI log) the bars are off and the lines stay."""

    def __init__(self, out: Console | None = None):
        self.console = out or console
        self.progress: Progress | None = None
        self.task = None
        self.epochs = 0

    def on_run_start(self, info: RunStartInfo) -> None:
        print_table(key_value_table("trainer run", info.header), self.console)

    def on_notice(self, text: str) -> None:
        self.console.print(f"[notice]notice:[/notice] {_escape(text)}")

    def on_phase_start(self, description: str, total: int | None) -> None:
        self._start(description, total)

    def on_epoch_start(self, epoch: int, epochs: int, steps: int | None) -> None:
        self.epochs = epochs
        self._start(f"epoch {epoch}/{epochs}", steps)

    def on_progress(self, step: int, logs: dict[str, Any]) -> None:
        if self.progress is not None:
            metrics = "  ".join(f"{k} {format_value(v)}" for k, v in logs.items() if not k.startswith("val_"))
            total = self.progress.tasks[0].total if self.progress.tasks else None
            # With several steps per execution Keras reports the last execution's nominal end step,
            # which can run past the epoch's end.
            self.progress.update(self.task, completed=min(step, total) if total else step, metrics=metrics)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        self._stop()
        parts = [f"{k} {format_value(v)}" for k, v in logs.items() if k != "epoch"]
        # one line per epoch on a pipe or in a log (no wrapping at 80 columns), as on a terminal
        self.console.print(f"[ok]epoch {epoch}/{self.epochs}[/ok]  " + _escape("  ".join(parts)), soft_wrap=not self.console.is_terminal)

    def on_phase_end(self) -> None:
        self._stop()

    def on_run_end(self, result: Any) -> None:
        self._stop()

    def _start(self, description: str, total: int | None) -> None:
        self._stop()
        self.progress = Progress(
            TextColumn("[key]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=self.console,
            transient=True,
            disable=not self.console.is_terminal,
        )
        self.progress.start()
        self.task = self.progress.add_task(description, total=total, metrics="")

    def _stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
