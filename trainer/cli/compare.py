"""``trainer compare``: runs side by side, in the terminal and (``--output``) as one self-contained page."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from trainer.cli.common import FLAG, handles_errors


@handles_errors
def compare(
    runs: List[Path] = typer.Argument(..., help="Two or more run directories.", show_default=False),
    output: Optional[Path] = typer.Option(None, "--output", help="Also write the comparison page (curves overlaid, metrics, config differences) to this .html file.", show_default=False),
    overwrite: bool = typer.Option(False, "--overwrite", metavar=FLAG, help="Replace an existing --output file that trainer did not write. trainer's own page is replaced either way; a link, folder or FIFO never."),
) -> None:
    """Compare runs: a metrics table with the best value per column marked, the config keys that differ, curves overlaid (--output)."""
    from trainer.api import compare as compare_runs
    from trainer.console import info

    found = compare_runs(runs, output, overwrite=overwrite)
    print_comparison(found.views)
    if found.path is not None:
        info(f"page: {found.path}", soft_wrap=True)
    else:
        info("add --output FILE.html for the page with the curves overlaid.")


def print_comparison(views) -> None:
    """The metrics table (the best value per column marked with *), the notes and the config differences, on stdout."""
    from rich.text import Text

    from trainer.api import comparison
    from trainer.console import format_value, info, notice, print_table, records_table

    found = comparison(views)
    for note in found.notes:
        notice(note)
    rows = []
    for index, row in enumerate(found.rows):
        shown = {"run": row["run"], "status": row["status"]}
        for column in found.columns:
            value = row.get(column)
            if index in found.best.get(column, ()):
                shown[column] = Text(f"{format_value(value)} *", style="bold", justify="right")
            elif column == "wall seconds" and isinstance(value, (int, float)):
                shown[column] = Text(f"{value:,.1f}", justify="right")
            else:
                shown[column] = value
        rows.append(shown)
    print_table(records_table(f"{len(views)} runs (* best of the column)", rows, ["run", "status", *found.columns]))
    if found.differences:
        names = [view.name for view in views]
        columns = ["key", *_unique(names)]
        print_table(records_table("config differences", [dict(zip(columns, [key, *values])) for key, values in found.differences], columns))
    else:
        info("the configs are the same.")


def _unique(names: List[str]) -> List[str]:
    """Column titles: a run name that repeats (runs of the same name in different folders) gets its position."""
    return [name if names.count(name) == 1 else f"{index + 1}: {name}" for index, name in enumerate(names)]
