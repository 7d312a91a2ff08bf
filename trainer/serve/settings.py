"""The server's bounds, checked once: address, body size, concurrency, time per request (stdlib only)."""
from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

from trainer.errors import BadInputError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_BYTES = 10 * 2**20  # one request body; a phone photo is 2-5 MiB
MAX_MAX_BYTES = 256 * 2**20
DEFAULT_MAX_CONCURRENT = 4  # requests decoded and classified at once; one more is answered 503 at once
MAX_MAX_CONCURRENT = 256
DEFAULT_TIMEOUT = 10.0  # seconds for one request: receiving the body, decoding, classifying
MAX_TIMEOUT = 3600.0
DEFAULT_TOP_K = 3
MAX_TOP_K = 1000


@dataclass(frozen=True)
class ServeSettings:
    """Where the server listens and what one request may cost; ``check()`` refuses what is out of bounds."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_bytes: int = DEFAULT_MAX_BYTES
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    timeout: float = DEFAULT_TIMEOUT

    def check(self) -> "ServeSettings":
        """These settings, or a ``BadInputError`` naming the option, the value received and what is allowed."""
        _whole(self.port, "--port", 0, 65535, "a port number from 0 (any free port) to 65535")
        _whole(self.max_bytes, "--max-bytes", 1, MAX_MAX_BYTES, f"a number of bytes from 1 to {MAX_MAX_BYTES:,} (256 MiB)")
        _whole(self.max_concurrent, "--max-concurrent", 1, MAX_MAX_CONCURRENT, f"a whole number from 1 to {MAX_MAX_CONCURRENT}")
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) or not math.isfinite(self.timeout) \
                or not 0 < self.timeout <= MAX_TIMEOUT:
            raise BadInputError(f"--timeout: expected seconds above 0 and at most {MAX_TIMEOUT:g}; got {self.timeout!r}.")
        if not isinstance(self.host, str) or not self.host.strip() or any(c.isspace() or ord(c) < 32 for c in self.host) or len(self.host) > 253:
            raise BadInputError(f"--host: expected an IP address or host name (127.0.0.1, ::1, 0.0.0.0, a name); got {self.host!r}.")
        return self

    @property
    def max_pixels(self) -> int:
        """The most pixels an uploaded image may have: the decoders' limit, as for ``trainer predict``."""
        from trainer.readers.decoders import image_pixel_limit

        return image_pixel_limit()

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def settings_from(host: object, port: object, max_bytes: object = None, max_concurrent: object = None, timeout: object = None) -> ServeSettings:
    """Checked settings from the command line's or the API's values (None: the default)."""
    return ServeSettings(
        host=host, port=port, max_bytes=DEFAULT_MAX_BYTES if max_bytes is None else max_bytes,  # type: ignore[arg-type]
        max_concurrent=DEFAULT_MAX_CONCURRENT if max_concurrent is None else max_concurrent,  # type: ignore[arg-type]
        timeout=DEFAULT_TIMEOUT if timeout is None else timeout,  # type: ignore[arg-type]
    ).check()


def _whole(value: object, option: str, low: int, high: int, allowed: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadInputError(f"{option}: expected {allowed}; got {value!r}.")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (127.0.0.0/8, ::1, ``localhost``): nothing on the network can connect."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_local_host_header(value: str) -> bool:
    """A ``Host`` header that names this machine's loopback (``localhost:8000``, ``127.0.0.1``, ``[::1]:8000``).

    A server on loopback answers only these: a web page that rebinds its own domain name to
    127.0.0.1 (DNS rebinding) then gets a refusal instead of the model's answers.
    """
    value = value.strip()
    if value.startswith("["):
        host = value[1:value.find("]")] if "]" in value else value
    else:
        host = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
    return bool(host) and is_loopback(host)
