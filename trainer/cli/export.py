"""``trainer export``: a finished run as SavedModel, ONNX or LiteRT, checked against the Keras model."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from trainer.cli.common import CODE_HELP, CONFIG_HELP, handles_errors, quiet_tensorflow


@handles_errors
def export(
    target: Path = typer.Argument(..., help="A run directory (config.yaml + model.h5), or a model file with --config.", show_default=False),
    format_: str = typer.Option(..., "--format", help="savedmodel (a folder), onnx (.onnx) or litert (.tflite).", show_default=False),
    output: Optional[Path] = typer.Option(
        None, "--output", help="Where to write it (default: <run dir>/savedmodel, model.onnx or model.tflite): a new path, an empty folder, or a previous export of trainer's own (recognised by its signed report); anything else is refused. manifest.json and export-<format>.json go beside it.",
        show_default=False,
    ),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override the run's config for the parity check only, e.g. --set data.path=/data/mnist.npz. Repeatable.", show_default=False),
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP, show_default=False),
    code: Optional[List[Path]] = typer.Option(None, "--code", help=CODE_HELP, show_default=False),
) -> None:
    """Export a finished run (raw 0..255 pixels in, class probabilities out) and check it on up to 1,000 test examples.

    Exit 1 when the export's top-1 agreement with the Keras model is below 99.9% or a probability
    differs by more than 1e-4 (the file is kept, with the report's warning beside it).
    """
    from trainer.api import exporting
    from trainer.console import info, key_value_table, notice, print_table

    report = exporting(target, format_, output, config=config, overrides=set_ or [], code_dirs=code or [], set_environment=True, before_keras=quiet_tensorflow)
    parity = report.parity
    print_table(key_value_table(f"export ({report.format})", [
        ("file", report.path),
        ("size", f"{report.file_size_bytes / 1e6:.2f} MB"),
        ("input", f"{report.input['exported_name']}: float32 {tuple(report.input['shape'])}, raw pixels 0..255"),
        ("output", f"float32 {tuple(report.output['shape'])}, class probabilities"),
        ("parity examples", f"{parity['examples']} ({parity['split']} split)"),
        ("top-1 agreement", f"{parity['top1_agreement']:.2%}"),
        ("max probability difference", f"{parity['max_abs_probability_difference']:.2e}"),
    ]))
    info(f"report: {report.report_path}\nmanifest: {report.manifest_path}", soft_wrap=True)
    if report.signature is None:
        notice(f"the export is not signed ({report.signature_note})")
