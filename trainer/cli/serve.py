"""``trainer serve``: a finished run's model behind a small HTTP server (the ``[serve]`` extra)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from trainer.cli.common import CODE_HELP, CONFIG_HELP, FLAG, handles_errors, quiet_tensorflow

SERVE_EPILOG = (
    "POST /predict takes an image as the multipart form field 'file' or as the raw body (Content-Type image/...) and answers "
    "JSON: the class, its name and probability, the top K (?top_k=K) and a notice when the image was converted. GET / is an "
    "upload page, GET /health the model and the limits. Uploads are untrusted: bounded in bytes, pixels, time and number at once; "
    "nothing is written to disk. See docs/serve.md."
)


@handles_errors
def serve(
    target: Path = typer.Argument(..., help="A run directory, a model file with --config, or an export of trainer export (SavedModel folder, .onnx, .tflite) with its manifest.json beside it.", show_default=False),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. The default is loopback (this machine only); 0.0.0.0 or a network address makes the server reachable from the network, without authentication."),
    port: int = typer.Option(8000, "--port", help="TCP port (0: any free one, shown in the header)."),
    max_bytes: int = typer.Option(10 * 2**20, "--max-bytes", help="Largest request body in bytes (413 beyond it)."),
    max_concurrent: int = typer.Option(4, "--max-concurrent", help="Requests classified at once; one more is answered 503 at once, not queued."),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds one request may take to arrive and be classified (504 beyond it)."),
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP, show_default=False),
    code: Optional[List[Path]] = typer.Option(None, "--code", help=CODE_HELP, show_default=False),
    trust_export: bool = typer.Option(
        False, "--trust-export", metavar=FLAG,
        help="Run an exported model that this user's trainer did not sign, or whose graph holds ops beyond pure computation "
        "(it runs with your permissions); as for trainer predict.",
    ),
) -> None:
    """Serve a run's model over HTTP: POST /predict with an image, an upload page at /, /health."""
    import trainer.api
    from trainer.console import info, notice

    # bounds, the [serve] extra, the run's paths, manifest and an export's signature: refused before TensorFlow starts
    settings = trainer.api.check_serve(target, host=host, port=port, config=config, trust_export=trust_export,
                                       max_bytes=max_bytes, max_concurrent=max_concurrent, timeout=timeout)

    def ready(url: str, loopback: bool, classifier) -> None:
        height, width, channels = classifier.input_shape
        info(f"trainer serve: {classifier.source} ({classifier.kind}, {len(classifier.class_names)} classes, "
             f"{height}x{width}x{channels} inputs, loaded once)", soft_wrap=True)
        if loopback:
            info(f"listening on {url} (loopback: only this machine can connect)", soft_wrap=True)
        else:
            notice(f"listening on {url}: REACHABLE FROM THE NETWORK. Anyone who can reach this machine on port "
                   f"{url.rstrip('/').rsplit(':', 1)[1]} can send images and read the answers; there is no authentication.")
        info(f"limits: bodies <= {settings.max_bytes:,} bytes (413), {settings.max_concurrent} request(s) at once (503 beyond), "
             f"{settings.timeout:g} s a request (504), images <= {settings.max_pixels:,} pixels; nothing is written to disk", soft_wrap=True)
        info(f"upload page {url}; POST {url}predict (form field 'file' or raw image bytes); GET {url}health. Ctrl-C stops.", soft_wrap=True)

    def bug(exc: BaseException) -> None:
        import traceback

        from trainer.console import err_console

        err_console.print("".join(traceback.format_exception(exc)), markup=False, highlight=False, soft_wrap=True)

    trainer.api.serve(
        target, host=host, port=port, config=config, code_dirs=code or [], trust_export=trust_export, max_bytes=max_bytes,
        max_concurrent=max_concurrent, timeout=timeout, before_load=quiet_tensorflow, set_environment=True, on_ready=ready, on_notice=notice, on_error=bug,
    )
