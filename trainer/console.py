"""One Rich console for the whole program: errors, notices, tables and the training progress display."""
from __future__ import annotations

import math
from typing import Any, Iterable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.theme import Theme

from trainer.errors import TrainerError

THEME = Theme({"error": "bold red", "notice": "yellow", "ok": "green", "key": "cyan", "dim": "dim"})

console = Console(theme=THEME, highlight=False, emoji=False)  # ":-1:" in a path or value stays text
err_console = Console(theme=THEME, stderr=True, highlight=False, emoji=False)


def print_error(error: TrainerError) -> None:
    """One clear message on stderr; no traceback for mistakes the user can fix."""
    label = "error" if error.exit_code != 130 else "interrupted"
    err_console.print(f"[error]{label}:[/error] {_escape(str(error))}", soft_wrap=True)  # commands and paths stay copyable


def notice(text: str) -> None:
    err_console.print(f"[notice]notice:[/notice] {_escape(text)}")


def info(text: str) -> None:
    console.print(_escape(text))


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def format_value(value: Any) -> str:
    """Numbers as people read them in a table: 4 significant decimals, integers as they are."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3e}"
        if abs(value) >= 100:  # throughputs, seconds: a decimal is enough
            return f"{value:,.1f}"
        return f"{value:.4f}"
    return str(value)


def key_value_table(title: str, rows: Iterable[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="key", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, format_value(value))
    return table


def records_table(title: str, records: list[dict[str, Any]], columns: list[str] | None = None) -> Table:
    """A table with one row per record and one column per key."""
    columns = columns or (list(records[0]) if records else [])
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right" if records and isinstance(records[0].get(column), (int, float)) else "left")
    for record in records:
        table.add_row(*(format_value(record.get(c)) for c in columns))
    return table


def print_table(table: Table) -> None:
    console.print(table)


class TrainingProgress:
    """Reporter for training: a header, a live bar per epoch with metrics, one summary line per epoch."""

    def __init__(self, out: Console | None = None):
        self.console = out or console
        self.progress: Progress | None = None
        self.task = None
        self.epochs = 0

    # -- the reporter protocol used by trainer.training
    def header(self, rows: list[tuple[str, Any]]) -> None:
        self.console.print(key_value_table("trainer run", rows))

    def notice(self, text: str) -> None:
        self.console.print(f"[notice]notice:[/notice] {_escape(text)}")

    def phase(self, description: str, total: int | None) -> None:
        """A progress bar for work other than an epoch (computing features, evaluating)."""
        self._start(description, total)

    def epoch_start(self, epoch: int, epochs: int, steps: int | None) -> None:
        self.epochs = epochs
        self._start(f"epoch {epoch}/{epochs}", steps)

    def batch_end(self, step: int, logs: dict[str, Any]) -> None:
        if self.progress is not None:
            metrics = "  ".join(f"{k} {format_value(v)}" for k, v in logs.items() if not k.startswith("val_"))
            total = self.progress.tasks[0].total if self.progress.tasks else None
            # With several steps per execution Keras reports the last execution's nominal end step,
            # which can run past the epoch's end.
            self.progress.update(self.task, completed=min(step, total) if total else step, metrics=metrics)

    def epoch_end(self, epoch: int, row: dict[str, Any]) -> None:
        self._stop()
        parts = [f"{k} {format_value(v)}" for k, v in row.items() if k != "epoch"]
        self.console.print(f"[ok]epoch {epoch}/{self.epochs}[/ok]  " + "  ".join(parts))

    def phase_end(self) -> None:
        self._stop()

    def close(self) -> None:
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
