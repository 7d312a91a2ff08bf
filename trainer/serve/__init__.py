"""``trainer serve``: a finished run (or its export) behind a small HTTP server (FastAPI + uvicorn, the ``[serve]`` extra).

One concept per module: ``settings`` (the bounds, checked once), ``uploads`` (a request body into
the model's input, through the same decoders as ``trainer predict``), ``classifier`` (the model
loaded once, called one request at a time), ``page`` (the upload page), ``app`` (the ASGI app:
routes, limits, one-line JSON errors) and ``server`` (the socket and uvicorn). FastAPI, uvicorn
and python-multipart are imported only here, and only when a server is built. Nothing here prints:
what the server has to say goes to the ``on_notice`` / ``on_error`` callbacks its caller passes.
"""
from __future__ import annotations

SERVE_MODULES = ("fastapi", "uvicorn", "python_multipart")


def require_serve_extra() -> None:
    """One line naming the install command when FastAPI, uvicorn or python-multipart is missing (exit 2)."""
    from trainer.extras import require_modules

    require_modules(SERVE_MODULES, "serve", "trainer serve")
