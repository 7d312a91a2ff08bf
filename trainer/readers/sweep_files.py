"""Sweep stores read back: an Optuna journal file is checked before Optuna replays it (stdlib only).

A journal (``SWEEP_DIR/optuna-journal.log``, or the file ``--storage`` names) is a store anyone
could have written. Optuna reads it whole and replays every line; handed random bytes, a JSON
file, a folder, a FIFO or ``/dev/zero`` it raises whatever its parser meets, hangs, or reads
without end. ``check_journal`` lets only a bounded regular file of JSON operation lines through;
what Optuna still refuses while replaying is turned into the same refusal by the caller
(``trainer.integrations.optuna.open_storage``).
"""
from __future__ import annotations

import json
from pathlib import Path

from trainer.errors import BadInputError
from trainer.readers import MiB, read_text

JOURNAL_LIMIT = 256 * MiB  # a journal grows ~10 KiB a trial; Optuna holds all of it in memory
JOURNAL_OP_CODES = range(0, 64)  # Optuna's JournalOperation values (0-9 today), with room to grow
JOURNAL_WHAT = "an Optuna journal file (one JSON operation a line, as trainer sweep writes it)"


def check_journal(path: Path | str, *, folder: Path | str | None = None, error: type[Exception] = BadInputError) -> None:
    """Refuse a journal file that is not a bounded regular file of Optuna operation lines; a missing file is a new journal.

    ``folder``: the folder the file must lie in (the sweep directory for the default journal);
    None for a file the user named, whose own links are followed. The last line may be
    incomplete (another process is appending it), as Optuna allows.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    base = folder if folder is not None else path.resolve().parent
    text = read_text(path, limit=JOURNAL_LIMIT, folder=base, error=error, what=JOURNAL_WHAT)
    lines = text.split("\n")
    for number, line in enumerate(lines[:-1], start=1):  # lines[-1]: after the last newline, "" or a line being written
        problem = _operation_problem(line)
        if problem:
            raise error(f"{path}: line {number} {problem}; expected {JOURNAL_WHAT}. Name another --storage, or another --sweep-dir.")


def _operation_problem(line: str) -> str | None:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return "is not JSON"
    if not isinstance(record, dict):
        return f"holds a JSON {type(record).__name__}, not an operation"
    op_code, worker = record.get("op_code"), record.get("worker_id")
    if type(op_code) is not int or op_code not in JOURNAL_OP_CODES:
        return f"has op_code {op_code!r:.40}, not an Optuna operation number"
    if not isinstance(worker, str):
        return "has no worker_id"
    return None
