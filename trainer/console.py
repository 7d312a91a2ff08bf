"""One Rich console for the whole program: errors, notices, tables (the run display is ``trainer.cli.progress``)."""
from __future__ import annotations

import math
from typing import Any, Iterable

from rich.console import Console
from rich.table import Table
from rich.theme import Theme

from trainer.errors import TrainerError
from trainer.secrets import mask_url

THEME = Theme({"error": "bold red", "notice": "yellow", "ok": "green", "key": "cyan", "dim": "dim"})

console = Console(theme=THEME, highlight=False, emoji=False)  # ":-1:" in a path or value stays text
err_console = Console(theme=THEME, stderr=True, highlight=False, emoji=False)


def print_error(error: TrainerError) -> None:
    """One clear message on stderr; no traceback for mistakes the user can fix."""
    label = "error" if error.exit_code != 130 else "interrupted"
    err_console.print(f"[error]{label}:[/error] {_escape(mask_url(str(error)))}", soft_wrap=True)  # commands and paths stay copyable


def notice(text: str) -> None:
    err_console.print(f"[notice]notice:[/notice] {_escape(mask_url(text))}")


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
