"""``trainer runs``: list the runs in a folder, or compare runs (``--compare``)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from trainer.cli.common import FLAG, handles_errors


@handles_errors
def runs(
    paths: Optional[List[Path]] = typer.Argument(
        None, metavar="[FOLDER | RUN...]",
        help="The folder holding run directories (default: output.dir's default, outputs); with --compare also two or more run directories.",
        show_default=False,
    ),
    compare: bool = typer.Option(False, "--compare", metavar=FLAG, help="Compare the runs (those of FOLDER, or the RUNs named): metrics with the best per column marked, and the config keys that differ."),
) -> None:
    """List the runs in a folder: name, status, epochs, validation and test accuracy, wall time, oldest first; or compare them (--compare)."""
    from trainer.api import list_run_dirs, list_runs
    from trainer.console import info, print_table, records_table
    from trainer.errors import BadInputError

    paths = list(paths or [])
    if len(paths) > 1 and not compare:
        raise BadInputError(f"trainer runs takes one folder, got {len(paths)} paths; to compare runs add --compare (or use trainer compare RUN...).")
    folder = paths[0] if len(paths) == 1 else None
    if compare:
        from trainer.api import compare as compare_runs
        from trainer.cli.compare import print_comparison

        if len(paths) > 1 or (paths and (paths[0] / "config.yaml").is_file()):
            root, chosen = paths[0].parent, paths
        else:
            root, chosen = list_run_dirs(folder)
        if not chosen:
            info(f"no runs under {root}.")
            return
        print_comparison(compare_runs(chosen).views)
        return
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
