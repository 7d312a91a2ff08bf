"""Every test checks something: an ``assert``, ``pytest.raises`` / ``warns`` / ``fail``, an ``assert_*`` call
(``np.testing.assert_allclose``, ...), or a call to a helper of tests/ that itself checks (found the same way).

A test that only calls the code ("no error") proves less than it reads; give it the assertion it means.
The scan parses the source (ast) and imports nothing: about two seconds, most of it ast.parse of tests/.
"""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
# pytest's own checks, called as pytest.X(...) or X(...)
CHECKING_CALLS = {"raises", "warns", "fail", "deprecated_call", "approx_equal"}


def _summary(node: ast.AST) -> tuple[bool, set[str]]:
    """(whether ``node`` checks by itself, the names it calls bare: ``f(...)``, the helpers it may lean on)."""
    direct, bare = False, set()
    for child in ast.walk(node):
        if isinstance(child, ast.Assert):
            direct = True
        elif isinstance(child, ast.Call):
            name = child.func.id if isinstance(child.func, ast.Name) else child.func.attr if isinstance(child.func, ast.Attribute) else ""
            if name.startswith("assert") or name in CHECKING_CALLS:
                direct = True
            elif isinstance(child.func, ast.Name):
                bare.add(name)
    return direct, bare


def _is_function(node: ast.AST) -> bool:
    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))


def scan(paths: list[Path]) -> list[str]:
    """``file:line name`` of each test function in ``paths`` that checks nothing."""
    trees = {path: ast.parse(path.read_text(), filename=str(path)) for path in paths}
    summaries = {path: [(node, _summary(node)) for node in ast.walk(tree) if _is_function(node)] for path, tree in trees.items()}
    helpers_by_name: dict[str, list[tuple[bool, set[str]]]] = {}
    for found in summaries.values():
        for node, summary in found:
            if not node.name.startswith("test_"):
                helpers_by_name.setdefault(node.name, []).append(summary)

    def checks(summary: tuple[bool, set[str]], helpers: set[str]) -> bool:
        return summary[0] or bool(summary[1] & helpers)

    helpers: set[str] = set()
    while True:  # a helper that calls a checking helper checks too; a name defined twice counts when every definition checks
        new = {name for name, defined in helpers_by_name.items() if name not in helpers and all(checks(s, helpers) for s in defined)}
        if not new:
            break
        helpers |= new
    return [
        f"{path.name}:{node.lineno} {node.name}"
        for path, found in summaries.items()
        for node, summary in found
        if node.name.startswith("test_") and not checks(summary, helpers)
    ]


def test_every_test_function_checks_something():
    unchecked = scan(sorted(TESTS.rglob("*.py")))
    assert not unchecked, "tests that assert nothing (add the assertion they mean):\n" + "\n".join(unchecked)


def test_the_scan_finds_a_test_without_a_check_and_accepts_each_kind_of_check(tmp_path):
    (tmp_path / "test_sample.py").write_text(
        "import pytest\nimport numpy as np\n"
        "def ok(r):\n    assert r\n"
        "def via_ok(r):\n    ok(r)\n"
        "def quiet(r):\n    return r\n"
        "def test_assert():\n    assert 1\n"
        "def test_raises():\n    with pytest.raises(ValueError):\n        int('x')\n"
        "def test_numpy():\n    np.testing.assert_array_equal([1], [1])\n"
        "def test_helper():\n    via_ok(1)\n"
        "def test_nothing():\n    int('1')\n"
        "def test_quiet_helper():\n    quiet(1)\n"
        "def test_method_named_like_a_helper():\n    {}.ok(1)\n"
    )
    assert scan([tmp_path / "test_sample.py"]) == [
        "test_sample.py:18 test_nothing", "test_sample.py:20 test_quiet_helper", "test_sample.py:22 test_method_named_like_a_helper",
    ]
