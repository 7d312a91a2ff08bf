"""Credentials in URLs: the one place that finds and masks them, and the one way they reach a child process.

Every URL trainer prints, logs, stores in a file, hands to MLflow as a parameter or puts in an
error message goes through ``mask_url`` (or ``scrub`` for free text that may contain one). A
child process that needs a secret gets it through its environment (``secret_env``), never on its
command line, where every user of the machine can read it (``ps``, ``/proc/PID/cmdline``);
``has_secret`` (the same finding as ``mask_url``) decides what must travel that way.

Where the password is: a password may hold every printable character, ``/ ? # @ : ' "`` and
spaces included, and users type them unescaped. So the userinfo is not cut where a URL
grammar would cut it: the password is everything between the first ``:`` after ``scheme://``
and the **last** ``@`` on that line (``credential_spans``). That span always contains what the
stores' own parsers take for the password (``urllib.parse.urlsplit``: the last ``@`` before the
first ``/ ? #``; SQLAlchemy's ``make_url``, which MLflow's and Optuna's database stores use: up
to the first ``@``), and ``secret_parts`` adds their readings (decoded too) for ``scrub``. When
in doubt more is masked, never less. A bare userinfo (``https://TOKEN@host``) is a token for
http(s) only, as urllib reads it (no ``/ ? #`` or space in it). Secret query and libpq keyword
parameters (``password=``, ``token=``, ...) are masked up to the next ``&``, ``;``, space or end
(a quoted libpq value to its closing quote). A password holding a line break is not supported.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Iterator, Mapping, NamedTuple
from urllib.parse import quote, unquote, urlsplit

MASK = "***"

# Query or keyword parameters whose value is a credential (lower case; matched case-insensitively). Not a bare
# "key": messages say KEY=VALUE.
SECRET_KEYS = frozenset({
    "password", "passwd", "pwd", "pass", "sslpassword", "secret", "client_secret", "token", "access_token",
    "refresh_token", "id_token", "auth", "auth_token", "authorization", "api_key", "apikey", "private_key",
    "credential", "credentials", "sig", "signature", "x-amz-signature", "x-amz-credential", "x-amz-security-token",
    "sas", "sastoken", "session_token",
})

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_LINE_END = re.compile(r"[\r\n]")
_BARE_TOKEN = re.compile(r"[^/?#\s]+")
_PARAM = re.compile(
    r"(?P<sep>^|[?&;\s,(])(?P<key>[A-Za-z][A-Za-z0-9_.\-]*)(?P<eq>\s*=\s*)"
    r"(?P<value>'(?:\\.|[^'\\])*'?|\"(?:\\.|[^\"\\])*\"?|[^&;\s'\"]*)"
)


class Credential(NamedTuple):
    """One credential inside a text: ``text[start:end]`` is replaced by ``***``; ``url`` is the URL it belongs to."""

    start: int
    end: int
    url: str


def credential_spans(text: str) -> list[Credential]:
    """Where the userinfo credentials of every ``scheme://`` URL in ``text`` are (left to right, not overlapping)."""
    spans: list[Credential] = []
    pos = 0
    while (match := _SCHEME.search(text, pos)) is not None:
        start = match.end()
        line = _LINE_END.search(text, start)
        line_end = line.start() if line else len(text)
        at = text.rfind("@", start, line_end)
        if at < 0 or text.startswith("/", start):  # no userinfo; or an empty authority (sqlite:///path, file:///path)
            pos = start
            continue
        url = text[match.start():line_end]
        colon = text.find(":", start, at)
        if colon >= 0:  # user:password@host; the password runs to the last @
            spans.append(Credential(colon + 1, at, url))
        elif match.group(0).lower().startswith(("http://", "https://")) and _BARE_TOKEN.fullmatch(text[start:at]):
            spans.append(Credential(start, at, url))  # https://TOKEN@host
        else:  # ann@host: a user name, no secret
            pos = start
            continue
        pos = at + 1
    return spans


def mask_url(value: object) -> str:
    """``value`` as text with every password, token and secret parameter replaced by ``***``.

    ``postgresql://ann:pw@db/s?sslpassword=x`` -> ``postgresql://ann:***@db/s?sslpassword=***``;
    ``postgresql://ann:Pa#Secret1@host/db`` -> ``postgresql://ann:***@host/db``; a libpq keyword
    string (``host=db password=pw``) is masked the same way. The user name and host stay, so the
    message still says where. Never raises; text without credentials is returned as it came.
    """
    text = value if isinstance(value, str) else str(value)
    pieces, pos = [], 0
    for span in credential_spans(text):
        pieces += [text[pos:span.start], MASK]
        pos = span.end
    text = "".join(pieces) + text[pos:]
    return _PARAM.sub(_mask_param, text)


def _mask_param(match: re.Match[str]) -> str:
    if match.group("key").lower() not in SECRET_KEYS or not match.group("value") or match.group("value") == MASK:
        return match.group(0)
    return f"{match.group('sep')}{match.group('key')}{match.group('eq')}{MASK}"


def _parser_passwords(url: str) -> Iterator[str]:
    """The password as the stores' own parsers read ``url`` (urllib; SQLAlchemy's ``make_url`` where installed)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        yield password
    try:
        from sqlalchemy.engine import make_url  # installed with optuna and mlflow; imported only when a URL holds a credential
    except ImportError:
        return
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy can read: nothing to add
        return
    if isinstance(parsed.password, str) and parsed.password:
        yield parsed.password


def _forms(secret: str) -> list[str]:
    """A credential as it may be written elsewhere: as given, percent-decoded, percent-encoded."""
    decoded = unquote(secret)
    return [secret, decoded, quote(decoded, safe=""), quote(decoded), quote(secret, safe=""), quote(secret)]


def secret_parts(value: str) -> list[str]:
    """The credentials inside a URL or keyword string (as given, decoded and encoded), longest first, for ``scrub``."""
    parts: list[str] = []
    for span in credential_spans(value):
        parts += _forms(value[span.start:span.end])
        for password in _parser_passwords(span.url):
            parts += _forms(password)
    for match in _PARAM.finditer(value):
        if match.group("key").lower() in SECRET_KEYS:
            raw = match.group("value")
            parts += _forms(raw) + _forms(raw.strip("'\""))
    return sorted({p for p in parts if len(p) >= 3}, key=len, reverse=True)  # very short values would mask ordinary words


def scrub(text: object, secrets_from: Iterable[str] = ()) -> str:
    """Free text (an exception message, a log line) with URLs masked and every credential of ``secrets_from`` removed.

    A driver's error message may repeat the password in a form ``mask_url`` cannot see (decoded,
    quoted, inside a DSN): the credentials taken from the URLs the caller used are replaced
    wherever they appear.
    """
    raw = text if isinstance(text, str) else str(text)
    for source in secrets_from:  # before masking: a URL's password may be cut differently inside the message
        for secret in secret_parts(str(source)):
            raw = raw.replace(secret, MASK)
    return mask_url(raw)


def has_secret(value: str) -> bool:
    """Whether ``value`` carries a credential that ``mask_url`` would hide (then it never goes on a command line)."""
    return mask_url(value) != value


def without_credentials(url: str) -> str:
    """``url`` with its userinfo (user and password) removed: what a reachability probe may use and show."""
    spans = credential_spans(url)
    if not spans:
        match = _SCHEME.match(url)
        at = url.find("@", match.end()) if match else -1
        if match and at >= 0 and not url.startswith("/", match.end()) and _BARE_TOKEN.fullmatch(url[match.end():at]):
            return url[:match.end()] + url[at + 1:]  # ann@host
        return url
    first = spans[0]
    scheme_end = url.find("://") + 3
    return url[:scheme_end] + url[first.end + 1:] if first.end < len(url) else url[:scheme_end]


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
