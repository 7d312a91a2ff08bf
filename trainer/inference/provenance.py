"""Whether trainer wrote an export: an HMAC-SHA256 keyed with a secret only this user holds (stdlib only).

A SavedModel is a program (TensorFlow's security guide), and ONNX / LiteRT files can read
files or need custom code, so ``trainer predict`` runs an export only when trainer wrote it
(or when the user says ``--trust-export``). "Trainer wrote it" must be something a person who
hands you a folder cannot forge: at export, trainer records in ``export-<format>.json`` a MAC
over the export's file digests and its manifest's, keyed with a per-user secret (32 random
bytes, created once with mode 0600 in ``$TRAINER_CONFIG_HOME``, else ``$XDG_CONFIG_HOME/trainer``,
else ``~/.config/trainer``). Predict recomputes the digests and checks the MAC. Nothing here prints.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

KEY_FILE = "export-key"
KEY_BYTES = 32
CONFIG_HOME_ENV = "TRAINER_CONFIG_HOME"
MAC_ALGORITHM = "hmac-sha256"


class KeyUnavailable(Exception):
    """The export key cannot be created or used (why in the message); exports are then unsigned."""


def config_home() -> Path:
    """Trainer's per-user configuration folder."""
    if os.environ.get(CONFIG_HOME_ENV):
        return Path(os.environ[CONFIG_HOME_ENV])
    if os.environ.get("XDG_CONFIG_HOME"):
        return Path(os.environ["XDG_CONFIG_HOME"]) / "trainer"
    return Path.home() / ".config" / "trainer"


def key_path() -> Path:
    return config_home() / KEY_FILE


def _read_key(path: Path) -> bytes:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise KeyUnavailable(f"{path} cannot be opened ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyUnavailable(f"{path} is not a regular file")
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise KeyUnavailable(f"{path} belongs to another user")
        if info.st_mode & 0o077:
            raise KeyUnavailable(f"{path} can be read or written by other users (mode {stat.S_IMODE(info.st_mode):o}; it must be 600)")
        text = os.read(fd, 4 * KEY_BYTES + 2).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise KeyUnavailable(f"{path} does not hold a key trainer wrote") from None
    if len(key) != KEY_BYTES:
        raise KeyUnavailable(f"{path} does not hold a key trainer wrote")
    return key


def export_key(*, create: bool) -> bytes:
    """The user's export key; created (mode 0600) when missing and ``create``; ``KeyUnavailable`` otherwise."""
    path = key_path()
    if create and not path.exists() and not path.is_symlink():
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except FileExistsError:
            pass  # another process made it first: use theirs
        except OSError as exc:
            raise KeyUnavailable(f"{path} cannot be created ({exc.strerror or exc})") from None
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(KEY_BYTES) + "\n")
    return _read_key(path)


def key_id(key: bytes) -> str:
    """A public name for a key (which key signed a report), not the key."""
    return hashlib.sha256(b"trainer export key id\0" + key).hexdigest()[:16]


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def mac(key: bytes, payload: dict[str, Any]) -> str:
    return hmac.new(key, _canonical(payload), hashlib.sha256).hexdigest()


def sign(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` plus ``algorithm``, ``key_id`` and ``mac`` (``KeyUnavailable`` when there is no usable key)."""
    key = export_key(create=True)
    signed = {**payload, "algorithm": MAC_ALGORITHM, "key_id": key_id(key)}
    return {**signed, "mac": mac(key, signed)}


def check_signature(signature: dict[str, Any]) -> str | None:
    """None when ``signature`` (with its ``mac``) was made with this user's key; else why not, in words."""
    try:
        key = export_key(create=False)
    except KeyUnavailable as exc:
        return f"this user has no usable export key ({exc})"
    payload = {k: v for k, v in signature.items() if k != "mac"}
    if payload.get("key_id") != key_id(key):
        return "it was signed with another user's (or another machine's) export key"
    try:
        expected = mac(key, payload)
    except (TypeError, ValueError):
        return "its signature is malformed"
    if not hmac.compare_digest(expected, str(signature.get("mac", ""))):
        return "its signature does not match (the report was changed after export)"
    return None
