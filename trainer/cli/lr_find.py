"""``trainer lr-find``: the learning-rate range test; prints the ``--set`` that applies the rate it suggests."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from trainer.cli.common import SET_HELP, handles_errors, interrupts_as_keyboard_interrupt, quiet_tensorflow
from trainer.api import DEFAULT_END, DEFAULT_START, DEFAULT_STEPS, MAX_RAMP_STEPS

LR_FIND_EPILOG = (
    "The rate rises exponentially from --start to --end, one training batch per step; the test stops early once the "
    "smoothed loss passes 4x its best or a loss is NaN. The suggestion is the rate where the smoothed loss falls fastest. "
    "No run directory is created and no weights file is written. Exit codes: 0 done, 2 bad input, 130 interrupted. See docs/lr-find.md."
)


@handles_errors
@interrupts_as_keyboard_interrupt()  # SIGTERM is Ctrl-C (exit 130; the results folder is removed)
def lr_find(
    config: Path = typer.Argument(..., help="The YAML config file.", show_default=False),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP, show_default=False),
    start: float = typer.Option(DEFAULT_START, "--start", help="The learning rate of the first step."),
    end: float = typer.Option(DEFAULT_END, "--end", help="The learning rate of the last step (above --start)."),
    steps: int = typer.Option(DEFAULT_STEPS, "--steps", help=f"Training batches in the ramp, 1 to {MAX_RAMP_STEPS} (the data repeats if it has fewer)."),
    output: Optional[Path] = typer.Option(
        None, "--output", help="Write lr_find.json and lr_find.png into this folder (new or empty). Default: <output.dir>/<name>-lr-find-<YYYYmmdd-HHMMSS>.",
        show_default=False,
    ),
) -> None:
    """Find a learning rate: train briefly while the rate rises, write lr_find.json and lr_find.png, print the --set to use."""
    from trainer.api import prepare_lr_find
    from trainer.cli.progress import RunProgress
    from trainer.console import info, key_value_table, notice, print_table

    # the config loaded and planned once; KERAS_BACKEND is set before Keras is imported
    planned = prepare_lr_find(config, overrides=set_ or [], start=start, end=end, steps=steps, output=output, events=[RunProgress()], set_environment=True)
    quiet_tensorflow()
    result = planned.run()
    record = result.record
    print_table(key_value_table("lr-find", [
        ("steps", f"{record.steps_run} of {record.steps}" + ("" if record.stopped == "completed" else f" (stopped: {record.stopped.replace('_', ' ')})")),
        ("rates tried", f"{record.rates[0]:.3g} to {record.rates[-1]:.3g}" if record.rates else "none"),
        ("suggested learning rate", f"{record.suggested_learning_rate:.3g}" if record.suggested_learning_rate is not None else "none"),
    ]))
    info(f"results: {result.output_dir}", soft_wrap=True)
    if result.set is None:
        notice("the smoothed loss never fell, so there is no suggestion; try a lower --start, more --steps, or check the data and loss.")
    else:
        if record.stopped == "completed" and record.suggested_learning_rate == record.rates[-1]:
            notice("the loss was still falling fastest at the last rate tried; a higher --end may find a better rate.")
        info(f"apply it with: --set {result.set}", soft_wrap=True)
