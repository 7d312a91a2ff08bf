"""``trainer predict``: classify images with a finished run."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from trainer.cli.common import CODE_HELP, CONFIG_HELP, FLAG, handles_errors, interrupts_as_keyboard_interrupt, quiet_tensorflow, short_path


@handles_errors
@interrupts_as_keyboard_interrupt()  # SIGTERM is Ctrl-C (exit 130) from the command's first line
def predict(
    target: Path = typer.Argument(..., help="A run directory (config.yaml + model.h5), a model file with --config, or an export of trainer export (SavedModel folder, .onnx, .tflite) with its manifest.json beside it.", show_default=False),
    inputs: List[Path] = typer.Argument(..., help="Image files (PNG, JPEG, BMP, GIF), folders of images, or .npy arrays (one image or a batch, raw pixels 0..255).", show_default=False),
    top_k: int = typer.Option(3, "--top-k", min=1, help="How many of the most likely classes to list per image."),
    output: Optional[Path] = typer.Option(None, "--output", help="Also write the predictions to FILE.json (everything) or FILE.csv (input, index, predicted, name, probability).", show_default=False),
    overwrite: bool = typer.Option(
        False, "--overwrite", metavar=FLAG,
        help="Replace an existing --output file that trainer did not write (its permissions are kept). Without it such a file is refused "
        "(exit 2) and nothing is computed; trainer's own earlier predictions are replaced either way. A symbolic link, folder or FIFO is always refused.",
    ),
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP, show_default=False),
    code: Optional[List[Path]] = typer.Option(None, "--code", help=CODE_HELP, show_default=False),
    tta: str = typer.Option(
        "none", "--tta",
        help="Test-time augmentation: none, flip (image + mirror) or flip_translate (those and 2-pixel shifts, 6 views); the probabilities are averaged over the views.",
    ),
    trust_export: bool = typer.Option(
        False, "--trust-export", metavar=FLAG,
        help="Run an exported model that this user's trainer did not write (no valid signed export-<format>.json beside it) or whose graph holds ops beyond pure computation. "
        "An export is a program: its graph runs with your permissions and can read and write files; give this only for exports from someone you trust.",
    ),
) -> None:
    """Classify images with a finished run; inputs are converted the way the training data was."""
    from trainer.api import prediction
    from trainer.console import notice, print_table, records_table

    done = prediction(
        target, inputs, top_k, config=config, code_dirs=code or [], trust_export=trust_export, tta=tta, output=output, overwrite=overwrite,
        set_environment=True, before_keras=quiet_tensorflow, cli_names=True,
    )
    for text in done.notices:
        notice(text)
    records = done.records
    rows = [
        {
            "input": short_path(r["input"]) + ("" if r["index"] is None else f"[{r['index']}]"),
            "predicted": r["predicted"],
            "name": r["name"],
            "probability": r["probability"],
            f"top {top_k}": "  ".join(f"{t['name']}:{t['probability']:.2f}" for t in r["top_k"]),
        }
        for r in records
    ]
    print_table(records_table(f"predictions ({len(records)} images)", rows))
