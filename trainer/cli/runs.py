"""``trainer runs``: list the runs in a folder."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trainer.cli.common import handles_errors


@handles_errors
def runs(
    folder: Optional[Path] = typer.Argument(None, help="The folder holding run directories (default: output.dir's default, outputs).", show_default=False),
) -> None:
    """List the runs in a folder: name, status, epochs, validation and test accuracy, wall time, oldest first."""
    from trainer.api import list_runs
    from trainer.console import info, print_table, records_table

    root, found = list_runs(folder)
    if not found:
        info(f"no runs under {root}.")
        return
    headers = {"validation_accuracy": "val acc", "test_accuracy": "test acc", "wall_seconds": "seconds"}
    # names and statuses come from folders and files anyone may have written: records_table shows every
    # cell as plain text (controls escaped, never Rich markup)
    rows = [{headers.get(key, key): _shown(key, value) for key, value in row.items()} for row in found]
    print_table(records_table(f"runs under {root}", rows))


def _shown(key: str, value):
    """Wall seconds with one decimal in every row (148.8 and 12.4, not 12.4250); everything else as the table formats it."""
    from rich.text import Text

    if key == "wall_seconds" and isinstance(value, (int, float)) and value == value:
        return Text(f"{value:,.1f}", justify="right")  # the table would write 4 decimals below 100 and 1 above
    return value
