"""The layers of ``docs/architecture.md`` hold in the code: no import cycle, imports only point down.

Every ``import`` under ``trainer/`` counts, at module level and inside functions (a function-level
import still ties the two modules together; it only hides the tie from Python's start-up), plain,
``from``, and relative. The layer table is read from ``docs/architecture.md``, so the page and the
code cannot drift apart: a package the table does not list fails here too.

``python3 tests/project/test_architecture.py`` prints the numbers the page quotes (modules, edges, cycles,
upward imports, lines, largest module).
"""
from __future__ import annotations

import ast
import functools
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "trainer"
DOC = ROOT / "docs" / "architecture.md"


@dataclass(frozen=True)
class Edge:
    """One import: ``source`` (a module) imports ``target`` (a module) at ``file:line``."""

    source: str
    target: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line} imports {self.target}"


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``trainer/``."""
    found = {}
    for path in sorted((root / "trainer").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


@functools.lru_cache(maxsize=None)
def imports(root: Path = ROOT) -> tuple[dict[str, Path], list[Edge]]:
    """Every import between two trainer modules (module and function level, absolute and relative)."""
    mods = modules(root)

    def known(name: str) -> str | None:
        while name not in mods and "." in name:
            name = name.rsplit(".", 1)[0]
        return name if name in mods else None

    edges: dict[Edge, None] = {}  # `from x import a, b` is one import of x
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                # `from trainer.run import rundir` imports the module trainer.run.rundir
                targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in mods else module for alias in node.names]
            else:
                continue
            for target in targets:
                if target == "trainer" or target.startswith("trainer."):
                    resolved = known(target)
                    if resolved and resolved != name:
                        edges[Edge(name, resolved, str(path.relative_to(root)), node.lineno)] = None
    return mods, list(edges)


@functools.lru_cache(maxsize=None)
def defined_names(path: Path) -> set[str] | None:
    """The names a module binds at its top level (defs, classes, assignments, imports); None when it has ``__getattr__``."""
    names: set[str] = set()
    body = list(ast.parse(path.read_text(), str(path)).body)
    while body:
        node = body.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):  # names bound in either branch
            body += node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", [])
            body += [statement for handler in getattr(node, "handlers", []) for statement in handler.body]
    return None if "__getattr__" in names else names


def unresolved(root: Path = ROOT) -> list[str]:
    """Each import of a trainer module that does not exist, or of a name it does not define (in trainer/, tests/, benchmarks/, examples/)."""
    mods = modules(root)
    found = []
    scripts = [("", path) for folder in ("tests", "benchmarks", "examples") for path in sorted((root / folder).rglob("*.py"))]
    for name, path in [*mods.items(), *scripts]:  # the tests, benchmarks and examples import trainer's modules too
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        where = path.relative_to(root)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [f"{where}:{node.lineno} imports {a.name}, which does not exist"
                          for a in node.names if a.name.startswith("trainer.") and a.name not in mods]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                if not (module == "trainer" or module.startswith("trainer.")):
                    continue
                if module not in mods:
                    found.append(f"{where}:{node.lineno} imports from {module}, which does not exist")
                    continue
                names = defined_names(mods[module])
                for alias in node.names:
                    if f"{module}.{alias.name}" not in mods and names is not None and alias.name != "*" and alias.name not in names:
                        found.append(f"{where}:{node.lineno} imports {alias.name} from {module}, which does not define it")
    return found


def package_of(module: str) -> str:
    """``trainer.run.rundir`` -> ``run``; ``trainer.outputs`` -> ``outputs``; ``trainer`` -> ``trainer``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def layer_table(doc: Path = DOC) -> dict[str, int]:
    """Package -> layer number (0 is the top), from the table between the ``layers`` markers of the page."""
    text = doc.read_text()
    section = text.split("<!-- layers -->", 1)[1].split("<!-- /layers -->", 1)[0]
    layers: dict[str, int] = {}
    for row in section.splitlines():
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].isdigit():
            continue
        for package in re.findall(r"`([\w.]+)`", cells[1]):
            assert package not in layers, f"docs/architecture.md lists {package} in two layers"
            layers[package] = int(cells[0])
    return layers


def upward(edges: list[Edge], layers: dict[str, int]) -> list[str]:
    """Each import from a package to one in a higher layer, as 'file:line imports module (layer a -> layer b)'."""
    found = []
    for edge in edges:
        source, target = package_of(edge.source), package_of(edge.target)
        if source in layers and target in layers and layers[target] < layers[source]:
            found.append(f"{edge} ({source}, layer {layers[source]}, may not import {target}, layer {layers[target]})")
    return found


def _witness(members: list[str], edges: list[Edge], key) -> list[str]:
    inside = set(members)
    return [str(edge) for edge in edges if key(edge.source) in inside and key(edge.target) in inside and key(edge.source) != key(edge.target)]


def test_no_module_cycle():
    _, edges = imports()
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        graph[edge.source].add(edge.target)
    found = cycles(graph)
    assert not found, "module cycles (break each by moving what both sides need into a module below both):\n" + "\n".join(
        f"  {' <-> '.join(members)}:\n    " + "\n    ".join(_witness(members, edges, lambda m: m)) for members in found
    )


def test_no_package_cycle():
    _, edges = imports()
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        if package_of(edge.source) != package_of(edge.target):
            graph[package_of(edge.source)].add(package_of(edge.target))
    found = cycles(graph)
    assert not found, "package cycles:\n" + "\n".join(
        f"  {' <-> '.join(members)}:\n    " + "\n    ".join(_witness(members, edges, package_of)) for members in found
    )


def test_every_package_has_a_layer():
    mods, _ = imports()
    layers = layer_table()
    missing = sorted({package_of(module) for module in mods} - set(layers))
    assert not missing, f"docs/architecture.md's layer table does not list {missing}: add each to the layer it belongs to"


def test_imports_point_down():
    _, edges = imports()
    found = upward(edges, layer_table())
    assert not found, "imports from a lower layer to a higher one (docs/architecture.md):\n  " + "\n  ".join(found)


def test_every_import_resolves():
    """A module or name that moved (or a merge that kept an old path) fails here by file:line, not at run time."""
    found = unresolved()
    assert not found, "imports of trainer modules or names that do not exist:\n  " + "\n  ".join(found)


THEMATIC_TEST_FOLDERS = {"hostile": "hostile users' cases across packages", "project": "rules over the whole repository: imports, writers, tests, CI environments, benchmarks"}


def misplaced_tests(root: Path = ROOT) -> list[str]:
    """What is wrong with tests/'s shape: a trainer package without ``tests/<package>/`` holding a test module, a test folder
    named after no package (``hostile`` and ``project`` excepted), a test module left at tests/'s top."""
    packages = {path.parent.name for path in (root / "trainer").glob("*/__init__.py")} | {"api"}
    folders = {path.name for path in (root / "tests").iterdir() if path.is_dir() and (path / "__init__.py").exists()}
    wrong = [f"trainer/{name}: no tests/{name}/ with a test module" for name in sorted(packages)
             if not any((root / "tests" / name).glob("test_*.py"))]
    wrong += [f"tests/{name}/: no trainer package of that name" for name in sorted(folders - packages - set(THEMATIC_TEST_FOLDERS))]
    wrong += [f"{path.relative_to(root)}: a test module belongs in the folder of the package it tests" for path in sorted((root / "tests").glob("test_*.py"))]
    return wrong


def test_the_tests_mirror_the_packages(tmp_path):
    """tests/<package>/ for each package of trainer/ (the API's tests in tests/api/); hostile and project suites stay thematic."""
    assert misplaced_tests() == []
    (tmp_path / "trainer" / "run").mkdir(parents=True)
    (tmp_path / "trainer" / "run" / "__init__.py").write_text("")
    (tmp_path / "tests" / "runs").mkdir(parents=True)
    (tmp_path / "tests" / "runs" / "__init__.py").write_text("")
    (tmp_path / "tests" / "test_loose.py").write_text("")
    assert misplaced_tests(tmp_path) == ["trainer/api: no tests/api/ with a test module", "trainer/run: no tests/run/ with a test module",
                                      "tests/runs/: no trainer package of that name",
                                      "tests/test_loose.py: a test module belongs in the folder of the package it tests"]


def test_the_table_parses(tmp_path):
    """The parser reads rows, not prose: a package named in two layers is refused, a row's backticked names all count."""
    page = tmp_path / "a.md"
    page.write_text("text `cli`\n<!-- layers -->\n| layer | packages |\n| --- | --- |\n| 0 | `cli`, `__main__` |\n| 1 | `api` |\n<!-- /layers -->\n")
    assert layer_table(page) == {"cli": 0, "__main__": 0, "api": 1}
    edges = [Edge("trainer.api", "trainer.cli.run", "trainer/api.py", 3), Edge("trainer.cli.run", "trainer.api", "trainer/cli/run.py", 9)]
    assert upward(edges, layer_table(page)) == ["trainer/api.py:3 imports trainer.cli.run (api, layer 1, may not import cli, layer 0)"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def numbers(root: Path = ROOT) -> dict[str, object]:
    """What docs/architecture.md quotes: modules, edges, cycles, package cycles, upward imports, lines."""
    mods, edges = imports(root)
    graph: dict[str, set[str]] = defaultdict(set)
    packages: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        graph[edge.source].add(edge.target)
        if package_of(edge.source) != package_of(edge.target):
            packages[package_of(edge.source)].add(package_of(edge.target))
    lines = {module: len(path.read_text().splitlines()) for module, path in mods.items()}
    module_cycles = cycles(graph)
    largest = max(lines, key=lines.get)
    return {
        "modules": len(mods),
        "edges": len({(edge.source, edge.target) for edge in edges}),
        "module cycles": len(module_cycles),
        "modules in cycles": sum(map(len, module_cycles)),
        "package cycles": cycles(packages),
        "upward imports": len(upward(edges, layer_table())) if DOC.exists() else "no table",
        "lines": sum(lines.values()),
        "largest module": f"{largest} ({lines[largest]} lines)",
    }


if __name__ == "__main__":
    for key, value in numbers(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT).items():
        print(f"{key}: {value}")
