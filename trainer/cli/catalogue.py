"""``trainer list``: the catalogues of losses, metrics, optimizers, callbacks and model types."""
from __future__ import annotations

import typer

from trainer.cli.common import handles_errors, quiet_tensorflow


@handles_errors
def list_catalogue(
    catalogue: str = typer.Argument(..., help="Which catalogue: losses, metrics, optimizers, callbacks or models.", show_default=False),
) -> None:
    """Show a catalogue (losses, metrics, optimizers, callbacks, models) with each entry's parameters and defaults."""
    from trainer.api import catalogue as entries
    from trainer.console import print_table, records_table

    rows = entries(catalogue, before_keras=quiet_tensorflow)  # parameters read from the Keras classes start TensorFlow quietly
    print_table(records_table(catalogue, rows))
    if catalogue not in ("losses", "models"):
        typer.echo("Custom entries: name: 'my_module:Name' (a module beside the config or in the working directory).")
