"""What the data named by ``data.path`` was when a run started, so that ``--resume`` can tell when it changed (stdlib only).

A run records the fingerprint in ``checkpoint.json``; ``--resume`` computes it again and refuses
(exit 2) when it differs, naming ``data.path`` and what changed. A file or folder of at most
``HASH_LIMIT`` bytes is hashed in full (SHA-256, read in chunks); a bigger one is fingerprinted by
its listing: every file's relative name, size and modification time (cheap, and any copy,
replacement or edit changes it). Hidden entries (names starting with ``.``) of a folder are left
out, as the folder reader leaves them out; links are followed, to at most four levels.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from trainer.errors import DataError

HASH_LIMIT = 256 * 2**20  # bytes hashed in full; beyond that, names, sizes and modification times
CHUNK = 2**20


def fingerprint_data(data_config: Any) -> dict[str, Any] | None:
    """The fingerprint of ``data.path`` (None when the dataset comes from Keras's download cache)."""
    if getattr(data_config, "path", None) is None:
        return None
    if getattr(data_config, "dataset", None) == "csv":  # the table and the images beside it (allow_outside's others are not covered)
        return fingerprint_path(Path(data_config.path).resolve().parent)
    return fingerprint_path(Path(data_config.path))


def fingerprint_path(path: Path) -> dict[str, Any]:
    """``{path, kind, files, bytes, content, digest}`` of a file or a folder; a DataError naming data.path when unreadable."""
    try:
        if path.is_dir():
            entries = _listing(path)
            kind = "folder"
        else:
            info = path.stat()
            entries = [("", path, info.st_size, info.st_mtime_ns)]
            kind = "file"
        total = sum(size for _, _, size, _ in entries)
        digest = hashlib.sha256()
        full = total <= HASH_LIMIT
        for name, file, size, mtime in entries:
            digest.update(f"{name}\0{size}\0".encode("utf-8", "surrogateescape"))
            if full:
                _hash_file(digest, file)
            else:
                digest.update(f"{mtime}\0".encode())
    except OSError as exc:
        raise DataError(f"data.path {path}: cannot be read ({exc.strerror or exc}).") from None
    return {"path": str(path), "kind": kind, "files": len(entries), "bytes": total, "content": "full" if full else "listing", "digest": digest.hexdigest()}


MAX_DEPTH = 4  # data.path/train/<class>/<image> is 3 levels; links are followed, so a link loop ends here


def _listing(folder: Path) -> list[tuple[str, Path, int, int]]:
    """(relative name, path, size, mtime) of every file under ``folder`` (at most ``MAX_DEPTH`` levels), sorted by name."""
    entries: list[tuple[str, Path, int, int]] = []

    def visit(current: Path, prefix: str, depth: int) -> None:
        for entry in sorted(os.scandir(current), key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            name = f"{prefix}{entry.name}"
            if entry.is_dir():
                if depth < MAX_DEPTH:
                    visit(Path(entry.path), name + "/", depth + 1)
            elif entry.is_file():
                info = entry.stat()
                entries.append((name, Path(entry.path), info.st_size, info.st_mtime_ns))

    visit(folder, "", 1)
    return entries


def _hash_file(digest: Any, path: Path) -> None:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)


def data_changes(then: dict[str, Any], now: dict[str, Any] | None) -> list[str]:
    """What differs between the fingerprint a run recorded and the data now (empty: the same data)."""
    if now is None:
        return ["the run was trained on a data file, but data.path is now empty"]
    if then.get("digest") == now["digest"] and then.get("content") == now["content"]:
        return []
    changes = []
    if then.get("kind") != now["kind"]:
        changes.append(f"it was a {then.get('kind')} and is now a {now['kind']}")
    if then.get("files") != now["files"] and now["kind"] == "folder":
        changes.append(f"{then.get('files')} files when the run started, {now['files']} now")
    if then.get("bytes") != now["bytes"]:
        changes.append(f"{then.get('bytes'):,} bytes when the run started, {now['bytes']:,} now")
    if not changes:
        what = "its content" if now["content"] == "full" else "its file names or modification times"
        changes.append(f"{what} changed (SHA-256 {str(then.get('digest'))[:12]}... when the run started, {now['digest'][:12]}... now)")
    return changes
