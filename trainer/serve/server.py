"""The listening socket and uvicorn: bound first (a port in use is one line, exit 2), then served until Ctrl-C."""
from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from trainer.errors import BadInputError
from trainer.serve.settings import ServeSettings


@dataclass
class Listening:
    """A bound socket and the URL it answers at (the real port when ``--port 0`` asked for any free one)."""

    sock: socket.socket
    url: str
    loopback: bool


def bind(settings: ServeSettings) -> Listening:
    """A listening TCP socket on ``settings.host``/``port``; a name that does not resolve or a port in use is a BadInputError."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise BadInputError(f"--host {settings.host!r}: cannot be resolved ({exc}); expected an IP address or a host name of this machine.") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise BadInputError(
            f"--host {settings.host} --port {settings.port}: cannot listen there ({exc.strerror or exc}); "
            "choose another --port (0 takes any free one) or stop what uses it."
        ) from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    return Listening(sock, f"http://{shown}:{port}/", settings.loopback)


def run(app: Any, listening: Listening, settings: ServeSettings) -> None:
    """Serve ``app`` on the bound socket until Ctrl-C or SIGTERM (uvicorn's own handlers, restored after).

    uvicorn's access log is off and its own log shows warnings and errors only, as plain lines;
    ``limit_concurrency`` also bounds open connections (beyond it uvicorn answers 503 itself).
    """
    import uvicorn

    config = uvicorn.Config(
        app, log_config=None, log_level="warning", access_log=False, server_header=False, date_header=False,
        limit_concurrency=max(32, 4 * settings.max_concurrent), timeout_keep_alive=5, timeout_graceful_shutdown=5,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[listening.sock])
    finally:
        listening.sock.close()
        workers = getattr(app, "state", None) and getattr(app.state, "workers", None)
        if workers is not None:
            workers.shutdown(wait=False, cancel_futures=True)
