"""``trainer report``: write a run's ``report.html`` (one self-contained page)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trainer.cli.common import FLAG, handles_errors, interrupts_as_keyboard_interrupt

REPORT_EPILOG = (
    "The page holds the run's status, setting, metrics, curves (learning rate and best epoch marked), config and, for a completed run "
    "whose data can be loaded, the test split's confusion matrix, per-class scores and worst-misclassified images (computed from model.h5). "
    "It needs no network and runs no script. trainer run writes it at the end of every run. Exit codes: 0 written, 2 bad input. See docs/report.md."
)


@handles_errors
@interrupts_as_keyboard_interrupt()
def report(
    run: Path = typer.Argument(..., help="A run directory (as trainer run writes it).", show_default=False),
    output: Optional[Path] = typer.Option(None, "--output", help="Write the page here (default: RUN/report.html).", show_default=False),
    overwrite: bool = typer.Option(False, "--overwrite", metavar=FLAG, help="Replace an existing --output file that trainer did not write. trainer's own page is replaced either way; a link, folder or FIFO never."),
    predict: bool = typer.Option(True, "--predict/--no-predict", help="Run model.h5 on the test split for the confusion matrix, per-class scores and misclassified images (a completed run only)."),
) -> None:
    """Write a run's report.html: status, setting, metrics, curves, confusion matrix, per-class scores, worst-misclassified images."""
    from trainer.api import report as write_report
    from trainer.console import info, notice

    from trainer.cli.common import quiet_tensorflow

    # TensorFlow is started (quietly) only when model.h5 will run on the test split
    written = write_report(run, output, overwrite=overwrite, predict=predict, set_environment=True, before_keras=quiet_tensorflow)
    if written.absent and predict:
        notice(f"the page has no test-split sections: {written.absent}")
    for problem in written.views[0].problems:
        notice(problem)
    info(f"report: {written.path}", soft_wrap=True)
