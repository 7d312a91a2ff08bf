"""Credentials in URLs: the one place that masks them, and the one way they reach a child process (stdlib only).

Every URL trainer prints, logs, stores in a file, hands to MLflow as a parameter or puts in an
error message goes through ``mask_url`` (or ``scrub`` for free text that may contain one). A
child process that needs a secret gets it through its environment (``secret_env``), never on its
command line, where every user of the machine can read it (``ps``, ``/proc/PID/cmdline``).
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping
from urllib.parse import unquote

MASK = "***"

# Query or keyword parameters whose value is a credential (lower case; matched case-insensitively). Not a bare
# "key": messages say KEY=VALUE.
SECRET_KEYS = frozenset({
    "password", "passwd", "pwd", "pass", "sslpassword", "secret", "client_secret", "token", "access_token",
    "refresh_token", "id_token", "auth", "auth_token", "authorization", "api_key", "apikey", "private_key",
    "credential", "credentials", "sig", "signature", "x-amz-signature", "x-amz-credential", "x-amz-security-token",
    "sas", "sastoken", "session_token",
})

_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<authority>[^/?#\s'\"<>]*)")
_PARAM = re.compile(r"(?P<sep>^|[?&;\s,(])(?P<key>[A-Za-z][A-Za-z0-9_.\-]*)(?P<eq>\s*=\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^&;\s#'\",)]*)")


def mask_url(value: object) -> str:
    """``value`` as text with every password, token and secret parameter replaced by ``***``.

    ``postgresql://ann:pw@db/s?sslpassword=x`` -> ``postgresql://ann:***@db/s?sslpassword=***``;
    a libpq keyword string (``host=db password=pw``) is masked the same way. The user name and
    host stay, so the message still says where. Never raises; text without credentials is returned
    as it came.
    """
    text = value if isinstance(value, str) else str(value)
    text = _URL.sub(_mask_authority, text)
    return _PARAM.sub(_mask_param, text)


def _mask_authority(match: re.Match[str]) -> str:
    authority = match.group("authority")
    if "@" not in authority:
        return match.group(0)
    userinfo, host = authority.rsplit("@", 1)
    user = userinfo.split(":", 1)[0] if ":" in userinfo else userinfo
    # user:secret@ keeps the user; a bare userinfo is a token when the scheme is http(s) (https://TOKEN@host)
    if ":" not in userinfo and match.group("scheme").lower().startswith("http"):
        user = MASK
    else:
        user = f"{user}:{MASK}" if ":" in userinfo else user
    return f"{match.group('scheme')}{user}@{host}"


def _mask_param(match: re.Match[str]) -> str:
    if match.group("key").lower() not in SECRET_KEYS or not match.group("value"):
        return match.group(0)
    return f"{match.group('sep')}{match.group('key')}{match.group('eq')}{MASK}"


def secret_parts(value: str) -> list[str]:
    """The credentials inside a URL or keyword string (raw and percent-decoded), for ``scrub``."""
    parts: list[str] = []
    for match in _URL.finditer(value):
        authority = match.group("authority")
        if "@" in authority:
            userinfo = authority.rsplit("@", 1)[0]
            secret = userinfo.split(":", 1)[1] if ":" in userinfo else (userinfo if match.group("scheme").lower().startswith("http") else "")
            parts += [secret, unquote(secret)]
    for match in _PARAM.finditer(value):
        if match.group("key").lower() in SECRET_KEYS:
            raw = match.group("value").strip("'\"")
            parts += [raw, unquote(raw)]
    return sorted({p for p in parts if len(p) >= 3}, key=len, reverse=True)  # very short values would mask ordinary words


def scrub(text: object, secrets_from: Iterable[str] = ()) -> str:
    """Free text (an exception message, a log line) with URLs masked and every credential of ``secrets_from`` removed.

    A driver's error message may repeat the password in a form ``mask_url`` cannot see (decoded,
    quoted, inside a DSN): the credentials taken from the URLs the caller used are replaced
    wherever they appear.
    """
    masked = mask_url(text)
    for source in secrets_from:
        for secret in secret_parts(str(source)):
            masked = masked.replace(secret, MASK)
    return masked


def has_secret(value: str) -> bool:
    """Whether ``value`` carries a credential that ``mask_url`` would hide."""
    return mask_url(value) != value


def secret_env(name: str, value: str, base: Mapping[str, str]) -> dict[str, str]:
    """A child process's environment: ``base`` plus ``name=value`` (the way a secret travels; never argv)."""
    env = dict(base)
    env[name] = value
    return env


def mask_urls_in(value: Any) -> Any:
    """JSON-like data (dicts, lists, strings) with ``mask_url`` applied to every string value (keys stay).

    What a config becomes before it is stored (``config.yaml``) or sent to a tracker as parameters.
    """
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, dict):
        return {key: mask_urls_in(inner) for key, inner in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_urls_in(inner) for inner in value]
    return value
