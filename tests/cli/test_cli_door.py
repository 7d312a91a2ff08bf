"""One door: every ``trainer/cli`` module reaches the library through ``trainer.api`` only.

The imports of each ``cli/*.py`` (module level and inside functions) are read from its syntax
tree; below ``trainer.api`` only the console, the errors and the event types the CLI renders
are allowed. A command that needs more adds it to ``trainer.api`` (docs/api.md).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

CLI = Path(__file__).resolve().parents[2] / "trainer" / "cli"
ALLOWED = {"trainer", "trainer.api", "trainer.console", "trainer.errors", "trainer.run.events", "trainer.sweep.events"}


def trainer_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of a ``trainer`` module in ``path``, at any depth; ``trainer.cli`` itself excluded."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # a relative import: inside trainer.cli
                continue
            names = [node.module or ""]
        else:
            continue
        found += [(node.lineno, name) for name in names if name == "trainer" or name.startswith("trainer.")]
    return [(line, name) for line, name in found if name != "trainer.cli" and not name.startswith("trainer.cli.")]


@pytest.mark.parametrize("path", sorted(CLI.glob("*.py")), ids=lambda p: p.name)
def test_a_cli_module_imports_nothing_below_the_api_but_console_errors_and_events(path):
    wrong = [f"{path.name}:{line} imports {name}" for line, name in trainer_imports(path) if name not in ALLOWED]
    assert not wrong, "the CLI goes through trainer.api; move these into an API function:\n" + "\n".join(wrong)


@pytest.mark.parametrize("source, expected", [
    ("import trainer.run.training\n", ["trainer.run.training"]),
    ("def f():\n    from trainer.inference.load import load_run\n", ["trainer.inference.load"]),
    ("class C:\n    def m(self):\n        import trainer.sweep.workers as w\n", ["trainer.sweep.workers"]),
    ("from trainer.api import train\nfrom trainer.cli.common import FLAG\nfrom . import x\n", ["trainer.api"]),
])
def test_the_walk_finds_imports_at_every_depth(source, expected, tmp_path):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert [name for _, name in trainer_imports(path)] == expected


def test_the_sweep_storage_variable_is_the_one_the_workers_read():
    from trainer.cli.sweep import STORAGE_ENV
    from trainer.sweep.workers import STORAGE_ENV as WORKERS_STORAGE_ENV

    assert STORAGE_ENV == WORKERS_STORAGE_ENV
