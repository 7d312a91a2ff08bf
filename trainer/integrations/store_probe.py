"""Bounded checks of a store trainer did not start (an MLflow tracking store, an Optuna database): seconds, not minutes.

MLflow's database store retries a failing engine for about 100 s (ten attempts, doubling sleeps,
a multi-line warning each), its HTTP client for minutes, and a database driver waits for the
operating system's TCP timeout. So before a store is handed to its library, trainer checks it
directly, within ``PROBE_SECONDS``, and a failure is one line naming the option and the masked
URL (exit 2):

- a database URL (``postgresql://``, ``mysql://``, ``mssql://``, ... any URL with a host): a TCP
  connection to the host and port the driver would use (read with SQLAlchemy's ``make_url``,
  as the stores do; the name lookup is bounded too), then one connection through SQLAlchemy and
  the driver the store will use (``connect_timeout`` where the driver takes it, the whole attempt
  bounded): a server that accepts TCP but never answers, a wrong password or a missing driver is
  one line at once, not ten retries;
- ``sqlite:///PATH``: the database file, or the folder it would be created in, is usable;
- anything else (``databricks://``, plug-in schemes): the caller bounds the library's first call
  (``within``).

The TCP probe sends nothing; the driver connection sends the URL's credentials to the store the
URL names, as the store's library would a moment later.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

from trainer.errors import BadInputError
from trainer.secrets import mask_url, scrub, without_credentials
from trainer.threads import BackgroundTask, within

PROBE_SECONDS = 5.0
DEFAULT_PORTS = {
    "postgresql": 5432, "postgres": 5432, "cockroachdb": 26257, "redshift": 5439, "mysql": 3306, "mariadb": 3306,
    "mssql": 1433, "oracle": 1521,
}


def scheme_of(url: str) -> str:
    """``postgresql+psycopg://...`` -> ``postgresql`` (lower case; '' for a path)."""
    head, sep, _ = url.partition("://")
    return head.split("+", 1)[0].lower().strip() if sep else ""


def host_and_port(url: str) -> tuple[str | None, int | None]:
    """The host and port a database driver connects to (SQLAlchemy's reading where installed, else urllib's)."""
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        host, port = parsed.host, parsed.port
    except ImportError:
        host = port = None
        from urllib.parse import urlsplit

        parts = urlsplit(without_credentials(url))
        host, port = parts.hostname, parts.port
    return (host or None), (port or DEFAULT_PORTS.get(scheme_of(url)))


def probe_database(
    url: str, key: str, error: type[BadInputError] = BadInputError, seconds: float = PROBE_SECONDS, *, shown: str | None = None
) -> None:
    """Refuse (``error`` naming ``key``) a database store that does not answer within ``seconds``; SQLite: a usable path.

    Any other scheme returns at once: the caller bounds the library's own first call. ``shown``:
    the URL as the user gave it, for messages (default ``url``); always masked.
    """
    scheme = scheme_of(url)
    label = mask_url(shown if shown is not None else url)
    if scheme == "sqlite":
        _check_sqlite(url, key, error)
        return
    if scheme in ("", "file", "http", "https"):
        return
    try:
        host, port = host_and_port(url)
    except Exception as exc:  # noqa: BLE001 - ArgumentError, ValueError: a URL no store could read
        raise error(f"{key}: {label} is not a database URL SQLAlchemy can read ({scrub(exc, [url])}).") from None
    if host is None or port is None:  # a Unix socket (?host=/run/postgresql) or a dialect without a known port
        return
    problem = tcp_problem(host, port, seconds)
    if problem is not None and "@" in host:  # SQLAlchemy ends the password at the first @: the rest became the host
        problem += "; an @ in a password must be written %40"
    if problem is not None:
        raise error(
            f"{key}: cannot reach the database of {label} ({problem}); start it, fix the host or port, "
            "or check the network."
        )
    problem = driver_problem(url, seconds)
    if problem is not None:
        raise error(f"{key}: cannot connect to the database of {label}: {problem}")


# Dialects whose drivers take connect_timeout (seconds): libpq (psycopg, psycopg2), PyMySQL, mysqlclient
CONNECT_TIMEOUT_DIALECTS = ("postgresql", "postgres", "cockroachdb", "redshift", "mysql", "mariadb")


def driver_problem(url: str, seconds: float) -> str | None:
    """Why one connection through SQLAlchemy and the URL's driver fails within about ``seconds``, or None when it opens.

    None as well when SQLAlchemy is not installed (then neither store library can run).
    """
    try:
        import sqlalchemy
        from sqlalchemy.pool import NullPool
    except ImportError:
        return None
    connect_args = {"connect_timeout": max(2, int(seconds))} if scheme_of(url) in CONNECT_TIMEOUT_DIALECTS else {}

    def attempt() -> None:
        engine = sqlalchemy.create_engine(url, connect_args=connect_args, poolclass=NullPool)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()

    limit = 2 * seconds + 1
    try:
        within(limit, attempt, "")
    except BadInputError:
        return f"no answer within {limit:g} s"
    except ImportError as exc:
        return f"its driver is not installed ({scrub(exc, [url])}); pip install it (psycopg for PostgreSQL, PyMySQL for MySQL)"
    except Exception as exc:  # noqa: BLE001 - each driver raises its own types
        text = str(getattr(exc, "orig", None) or exc).strip()
        return scrub(text.splitlines()[0][:300] if text else type(exc).__name__, [url])
    return None


def tcp_problem(host: str, port: int, seconds: float) -> str | None:
    """Why a TCP connection to ``host:port`` fails within ``seconds`` (the name lookup included), or None when it opens."""
    def connect() -> OSError | None:
        try:
            with socket.create_connection((host, port), timeout=seconds):
                return None
        except OSError as exc:
            return exc

    worker = BackgroundTask(connect, name="trainer-store-probe")
    if not worker.join(seconds):  # a name lookup is not bounded by the socket timeout; the join is
        return f"no answer from port {port} within {seconds:g} s"
    exc = worker.value
    if exc is None:
        return None
    if isinstance(exc, socket.gaierror):
        return "the host name does not resolve"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection to port {port} refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"no answer from port {port} within {seconds:g} s"
    return getattr(exc, "strerror", None) or type(exc).__name__


def _check_sqlite(url: str, key: str, error: type[BadInputError]) -> None:
    """A SQLite database is a file: it must be a regular file, or be creatable in an existing or creatable, writable folder."""
    path_text = url.partition("://")[2].partition("?")[0]
    if not path_text.startswith("/"):  # sqlite:// (in memory) or sqlite:/x: the library says what it makes of it
        return
    path_text = path_text[1:]
    if not path_text or path_text == ":memory:":
        return
    path = Path(os.path.abspath(os.path.expanduser(path_text)))
    if path.exists():
        if not path.is_file():
            raise error(f"{key}: {mask_url(url)}: {path} is not a regular file, so it cannot hold an SQLite database.")
        if not os.access(path, os.R_OK | os.W_OK):
            raise error(f"{key}: {mask_url(url)}: {path} cannot be read and written by this user.")
        return
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise error(
            f"{key}: {mask_url(url)}: the database {path} does not exist and cannot be created ({folder} is not a writable folder)."
        )
