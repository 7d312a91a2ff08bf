"""``trainer validate``: check a config without TensorFlow."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from trainer.cli.common import SET_HELP, handles_errors


@handles_errors
def validate(
    config: Path = typer.Argument(..., help="The YAML config file.", show_default=False),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP, show_default=False),
) -> None:
    """Check a config and the loss / label / model agreement, without TensorFlow (fast)."""
    from trainer.api import validate as check
    from trainer.console import info, notice

    checked = check(config, set_ or [])
    loaded, plan = checked.config, checked.labels
    for text in checked.notices:
        notice(text)
    info(
        f"{config}: valid. {loaded.model.type} on {loaded.data.dataset}, loss {plan.loss_name} "
        f"with {plan.encoding} labels, {loaded.train.epochs} epochs of batch {loaded.train.batch_size}, on the {checked.backend} backend."
    )
    if checked.layout is not None:
        (notice if checked.layout.startswith("cannot be read") else info)(f"data.path {loaded.data.path}: {checked.layout}")
    if loaded.sweep is not None:
        sweep = loaded.sweep
        metric = sweep.metric_for(loaded)
        info(
            f"sweep: {sweep.trials} trials over {', '.join(sweep.space)}; {sweep.direction_for(metric)} {metric}, "
            f"sampler {sweep.sampler}, pruner {sweep.pruner} (trainer sweep {config})."
        )
