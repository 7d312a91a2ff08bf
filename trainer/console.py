"""One Rich console for the whole program: errors, notices, tables (the run display is ``trainer.cli.progress``).

Text that came from files (class names, statuses, reasons, run and input names, paths, values read
back, error messages quoting a file) is shown, never obeyed: ``visible`` writes control characters
as escapes (``\\x1b``), and every printer here hands such text to Rich as plain ``Text`` (or through
``untrusted`` where a caller builds markup), so neither an ESC sequence nor ``[link=...]`` reaches
the terminal as a command. The table builders do it for every cell, header and title by default.
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.theme import Theme

from trainer.errors import TrainerError
from trainer.secrets import mask_url

THEME = Theme({"error": "bold red", "notice": "yellow", "ok": "green", "key": "cyan", "dim": "dim"})

console = Console(theme=THEME, highlight=False, emoji=False)  # ":-1:" in a path or value stays text
err_console = Console(theme=THEME, stderr=True, highlight=False, emoji=False)

# C0 controls (tab and newline too: a cell or a name is one line), DEL; the rest is checked per character
_ASCII_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
_LAYOUT = "\n\t"
# Unicode categories a terminal may obey or that hide what the text says: C1 and other controls,
# format characters (bidirectional overrides, zero-width characters), lone surrogates (undecodable
# file-name bytes), line and paragraph separators.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _escaped(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a file-name byte that is not UTF-8 (os.fsdecode's surrogateescape): the byte, as predict's records show it
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(text: object, *, layout: bool = False) -> str:
    """``text`` with every control or invisible formatting character written as an escape (``\\x1b``, ``\\u202e``).

    C0 controls, DEL, C1 controls, lone ESC, bidirectional overrides, zero-width and other format
    characters, lone surrogates and line/paragraph separators; ``layout=True`` keeps newline and tab
    (a message of several lines). Everything else, markup brackets included, is left as it is.
    """
    text = text if isinstance(text, str) else str(text)
    keep = _LAYOUT if layout else ""
    if text.isascii():
        return _ASCII_CONTROLS.sub(lambda m: m.group() if m.group() in keep else _escaped(m.group()), text)
    import unicodedata

    return "".join(
        char if (char in keep or not (char < " " or char == "\x7f" or (char > "\x7f" and unicodedata.category(char) in _HIDDEN_CATEGORIES)))
        else _escaped(char)
        for char in text
    )


def untrusted(text: object, *, layout: bool = False) -> str:
    """Text from a file, ready to go inside Rich markup: controls escaped (``visible``) and markup escaped.

    For callers that build a markup string (``f"[notice]...[/notice] {untrusted(reason)}"``);
    ``plain`` is the same as a ``Text`` that is never parsed as markup.
    """
    from rich.markup import escape

    return escape(visible(text, layout=layout))


def plain(text: object, style: str = "", *, layout: bool = False) -> Text:
    """Text from a file as a Rich ``Text``: controls escaped, and never read as markup."""
    return Text(visible(text, layout=layout), style=style)


def _escape(text: str) -> str:  # the older name, kept for trainer.cli.progress and trainer.cli.sweep
    return untrusted(text, layout=True)


def _message(label: str, style: str, text: str) -> Text:
    return Text.assemble((f"{label}:", style), " ", plain(mask_url(text), layout=True))


def print_error(error: TrainerError) -> None:
    """One clear message on stderr; no traceback for mistakes the user can fix."""
    label = "error" if error.exit_code != 130 else "interrupted"
    err_console.print(_message(label, "error", str(error)), soft_wrap=True)  # commands and paths stay copyable


def notice(text: str) -> None:
    err_console.print(_message("notice", "notice", text))


def info(text: str, *, soft_wrap: bool = False) -> None:
    """A line (or lines) of plain text on stdout; paths and names in it are shown, never obeyed."""
    console.print(plain(mask_url(text), layout=True), soft_wrap=soft_wrap)


def format_value(value: Any) -> str:
    """Numbers as people read them in a table: 4 significant decimals, integers as they are; text with controls escaped."""
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
    return visible(value)


MAX_CELL = 1_000  # characters of one cell shown; a manifest may hold a class name of megabytes


def _cell(value: Any, style: str = "") -> Text:
    """A table cell, header or title: ``format_value``'s text as plain ``Text`` (never markup), at most MAX_CELL characters."""
    if isinstance(value, Text):  # built by the caller, who chose its styles
        return value
    text = format_value(value)
    if len(text) > MAX_CELL:
        text = f"{text[:MAX_CELL]}... ({len(text) - MAX_CELL:,} more characters)"
    return Text(text, style=style)


def key_value_table(title: str, rows: Iterable[tuple[str, Any]]) -> Table:
    table = Table(title=_cell(title), show_header=False, title_justify="left")
    table.add_column(style="key", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(_cell(key), _cell(value))
    return table


def records_table(title: str, records: list[dict[str, Any]], columns: list[str] | None = None) -> Table:
    """A table with one row per record and one column per key; every title, header and cell is plain text."""
    columns = columns or (list(records[0]) if records else [])
    table = Table(title=_cell(title), title_justify="left")
    for column in columns:
        table.add_column(_cell(column), justify="right" if records and isinstance(records[0].get(column), (int, float)) else "left")
    for record in records:
        table.add_row(*(_cell(record.get(c)) for c in columns))
    return table


def print_table(table: Table, out: Console | None = None) -> None:
    """A table on stdout (or ``out``). On a terminal Rich fits it to the window; anywhere else (a pipe, a log file, CI)
    it is drawn at its natural width, so no cell is cut to an ellipsis: what a script or a log keeps is whole."""
    out = out or console
    if out.is_terminal:
        out.print(table)
        return
    from rich.measure import Measurement

    natural = Measurement.get(out, out.options.update_width(1_000_000), table).maximum
    width = out.width  # print(width=) is capped at the console's own width: widen the console for this table
    out.width = max(natural, width)
    try:
        out.print(table, crop=False)
    finally:
        out.width = width
