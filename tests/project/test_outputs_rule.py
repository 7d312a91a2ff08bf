"""The output rule (trainer/outputs.py) is the only way trainer writes a file: a scan of the source, and the rule's targets.

Fast: no TensorFlow. The scan parses every module under trainer/ and fails on any call that writes
a file some other way (``open(..., "w")``, ``write_text``, ``np.save``, ``savefig``, ``json.dump``,
``os.replace``, ``shutil.copy``, ``h5py.File(..., "w")``, ``model.save``/``export``, ...) unless it
writes into memory, into a handle or temporary path that an outputs helper gave it, or is listed
in ALLOWED with the reason it must write itself.
"""
from __future__ import annotations

import ast
import functools
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trainer.outputs as outputs
from trainer.errors import BadInputError
from trainer.outputs import OutputError, check_output_file, write_file

TRAINER = Path(__file__).resolve().parents[2] / "trainer"

# (module, function, call) -> why it writes without trainer.outputs. Keep this short: route a writer
# through outputs (write_file, atomic_path, atomic_file, atomic_write_*) rather than adding it here.
ALLOWED = {
    # Keras writes the export itself (SavedModel folder, .onnx, .tflite) into a staging folder that
    # plan_export checked under the output rule (check_replaceable: new, empty or trainer's own signed
    # export) and Made tracks; the finished export is then renamed into place.
    ("inference/export.py", "write_export", "model.export"): "Keras's exporter writes into trainer's staging folder",
    ("inference/export.py", "write_export", "os.rename"): "moves trainer's own previous export (plan_export recognised it) into the staging folder",
    ("inference/export.py", "write_export", "os.replace"): "swaps the finished export in, after plan_export's rule check",
    # A private copy of a SavedModel in a fresh mkdtemp folder (0700, this process's own) so that what
    # was checked is what runs; removed after use. No user path is written.
    ("inference/exported.py", "stage_export", "write_bytes"): "a private copy in a mkdtemp folder this process created",
    # The signing key: created once with O_EXCL | O_NOFOLLOW and mode 0600 in the user's config folder;
    # never replaced (an existing key that is not a private regular file is not used).
    ("inference/provenance.py", "export_key", "os.open"): "the export key, created exclusively with mode 0600",
    ("inference/provenance.py", "export_key", "os.fdopen"): "writes the new key into that exclusive descriptor",
    # history.csv grows by one fsynced row per epoch inside the run directory trainer created; an
    # atomic rewrite per epoch would copy the whole file each time.
    ("run/rundir.py", "HistoryWriter.append", "open"): "appends a row to history.csv in trainer's own run directory",
    # The tensorboard callback on JAX / PyTorch: a new event file (O_EXCL, a name with host, pid and object id) in the
    # log_dir the trusted config names, appended to as the run goes, as TensorFlow's own writer does.
    ("catalogue/event_scalars.py", "EventFile.__init__", "open"): "creates a new TensorBoard event file exclusively in the config's log_dir",
    # The compile cache's probe: an exclusive file in trainer's own cache folder (0700, this user's, checked first), so a
    # full or read-only disk turns the cache off before the run rather than failing inside it; removed at once.
    ("runtime/compile_cache.py", "own_folder", "open"): "an exclusive probe file in trainer's own 0700 cache folder, removed at once",
    # The json_log callback appends one line per epoch to the file the user's config names.
    # (the config is trusted: it may name any file, as Keras's CSVLogger and ModelCheckpoint do)
    ("catalogue/callbacks.py", "_json_log_class.JsonLinesLog.on_train_begin", "write_text"): "empties the json_log file the user's config names",
    ("catalogue/callbacks.py", "_json_log_class.JsonLinesLog.on_epoch_end", "open"): "appends a line per epoch to that file",
    # Backbone features: streamed into an exclusive (O_EXCL) partial file beside the cache entry with
    # ordinary writes (a full disk is one message), fsynced, renamed into place; Made removes the part.
    ("run/features.py", "write_features", "open"): "an exclusive partial file in trainer's feature cache",
    ("run/features.py", "write_features", "os.replace"): "renames that partial file into place",
    # Keras picks a weights reader by suffix: a link with the right suffix in a TemporaryDirectory.
    ("models/vgg16_head.py", "_load_keras3_weights", "symlink_to"): "a link in a private temporary folder, for reading",
}

OUTPUT_HELPERS = {"atomic_path", "atomic_file"}  # hand out a temporary path or handle that the rule installs
MEMORY = {"BytesIO", "StringIO"}
WRITE_MODE = set("wax+")


def _call_name(func: ast.expr) -> str:
    """``open``, ``os.replace``, ``np.save``, ``model.save``: the callee as written (receiver's last name + attribute)."""
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        value = func.value
        base = value.id if isinstance(value, ast.Name) else value.attr if isinstance(value, ast.Attribute) else ""
        return f"{base}.{func.attr}" if base else func.attr
    return ""


def _const(node: ast.expr | None) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def _arg(call: ast.Call, index: int, keyword: str) -> ast.expr | None:
    if len(call.args) > index:
        return call.args[index]
    return next((k.value for k in call.keywords if k.arg == keyword), None)


class _Scan(ast.NodeVisitor):
    """Every writing call of one module, as (qualified function, call) pairs, minus those into memory or an outputs helper."""

    def __init__(self, module: str, helpers: set[str]):
        self.module = module
        self.helpers = helpers
        self.scope: list[str] = []
        self.safe: list[set[str]] = [set()]
        self.found: list[tuple[str, str, int]] = []

    # names bound to memory buffers or to what an outputs helper yields are safe targets
    def _safe_value(self, value: ast.expr | None) -> bool:
        if isinstance(value, ast.Call):
            name = _call_name(value.func).split(".")[-1]
            return name in MEMORY or name in self.helpers
        return False

    def _is_safe(self, node: ast.expr | None) -> bool:
        if node is None:
            return False
        if self._safe_value(node):
            return True
        if isinstance(node, ast.Name):
            return any(node.id in names for names in self.safe)
        if isinstance(node, ast.Call) and _call_name(node.func) in ("str", "Path", "os.fspath"):
            return bool(node.args) and self._is_safe(node.args[0])
        return False

    def _function(self, node):
        self.scope.append(node.name)
        self.safe.append(set())
        self.generic_visit(node)
        self.safe.pop()
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_ClassDef(self, node):
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_Assign(self, node):
        if self._safe_value(node.value):
            self.safe[-1].update(t.id for t in node.targets if isinstance(t, ast.Name))
        self.generic_visit(node)

    def visit_With(self, node):
        for item in node.items:
            if isinstance(item.optional_vars, ast.Name) and (self._safe_value(item.context_expr) or (
                isinstance(item.context_expr, ast.Call) and _call_name(item.context_expr.func) == "open"
                and self._is_safe(_arg(item.context_expr, 0, "file")))):
                self.safe[-1].add(item.optional_vars.id)
        self.generic_visit(node)

    def _report(self, node: ast.Call, what: str) -> None:
        self.found.append((".".join(self.scope) or "<module>", what, node.lineno))

    def visit_Call(self, node):  # noqa: C901 - one branch per kind of writer
        name = _call_name(node.func)
        last = name.split(".")[-1]
        receiver = node.func.value if isinstance(node.func, ast.Attribute) else None
        if name in ("open", "io.open", "os.fdopen") or (last == "open" and receiver is not None and name not in ("os.open", "h5py.open")):
            mode = _const(_arg(node, 1 if name != "open" or receiver is None else 0, "mode"))
            target = _arg(node, 0, "file") if receiver is None or name in ("io.open", "os.fdopen") else receiver
            devnull = isinstance(target, ast.Attribute) and target.attr == "devnull"
            if isinstance(mode, str) and WRITE_MODE & set(mode) and not devnull and not self._is_safe(target):
                self._report(node, name.split(".")[-1] if name != "os.fdopen" else "os.fdopen")
        elif name == "os.open":
            flags = ast.unparse(_arg(node, 1, "flags") or ast.Constant(0))
            if any(flag in flags for flag in ("O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC")):
                self._report(node, "os.open")
        elif last in ("write_text", "write_bytes", "touch", "symlink_to", "hardlink_to") and receiver is not None:
            if not self._is_safe(receiver):
                self._report(node, last)
        elif name in ("os.replace", "os.rename", "os.renames", "os.link", "os.symlink", "os.truncate") or (last == "rename" and receiver is not None):
            self._report(node, name if name.startswith("os.") else "rename")
        elif name.startswith("shutil.") and last in ("copy", "copy2", "copyfile", "copyfileobj", "copytree", "move"):
            self._report(node, name)
        elif name in ("tempfile.mkstemp", "tempfile.NamedTemporaryFile", "tempfile.TemporaryFile"):
            self._report(node, name)
        elif last in ("save", "savez", "savez_compressed") and name.split(".")[0] in ("np", "numpy"):
            if not self._is_safe(_arg(node, 0, "file")):
                self._report(node, name)
        elif last in ("savefig", "tofile", "to_csv", "to_json"):
            if not self._is_safe(_arg(node, 0, "fname")):
                self._report(node, last)
        elif name in ("json.dump", "pickle.dump", "yaml.dump", "yaml.safe_dump") and (len(node.args) > 1 or any(k.arg == "stream" for k in node.keywords)):
            if not self._is_safe(_arg(node, 1, "fp" if name.startswith(("json", "pickle")) else "stream")):
                self._report(node, name)
        elif name in ("h5py.File", "File"):
            mode = _const(_arg(node, 1, "mode"))
            if isinstance(mode, str) and mode != "r" and not self._is_safe(_arg(node, 0, "name")):
                self._report(node, "h5py.File")
        elif last in ("save", "save_weights", "export", "save_model") and receiver is not None and name.split(".")[0] not in ("np", "numpy"):
            self._report(node, f"model.{last}")
        self.generic_visit(node)


@functools.lru_cache(maxsize=None)
def _reexports(module: str) -> frozenset[str]:
    """The outputs helpers that ``module`` (a trainer module) imports from trainer.outputs at its top level, so others import them from it."""
    if module == "trainer.outputs":
        return frozenset(OUTPUT_HELPERS)
    parts = module.split(".")[1:]
    path = TRAINER.joinpath(*parts).with_suffix(".py") if parts else TRAINER / "__init__.py"
    if not path.is_file():
        path = TRAINER.joinpath(*parts, "__init__.py")
    if not path.is_file():
        return frozenset()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return frozenset({alias.name for node in tree.body if isinstance(node, ast.ImportFrom) and node.module == "trainer.outputs"
            for alias in node.names if alias.name in OUTPUT_HELPERS})


def _outputs_helpers(tree: ast.Module) -> set[str]:
    """Names this module imports (anywhere) that are trainer.outputs' atomic_path/atomic_file, directly or re-exported by a trainer module.

    Resolved from the source, without importing anything (the scan stays in the fast lane).
    """
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and (node.module == "trainer" or node.module.startswith("trainer.")):
            helpers = _reexports(node.module)
            names.update(alias.asname or alias.name for alias in node.names if alias.name in helpers)
    return names


@functools.lru_cache(maxsize=1)
def scan() -> dict[tuple[str, str, str], list[int]]:
    """Every writing call outside trainer/outputs.py: (module, function, call) -> line numbers."""
    found: dict[tuple[str, str, str], list[int]] = {}
    for path in sorted(TRAINER.rglob("*.py")):
        module = path.relative_to(TRAINER).as_posix()
        if module == "outputs.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        visitor = _Scan(module, _outputs_helpers(tree))
        visitor.visit(tree)
        for function, call, line in visitor.found:
            found.setdefault((module, function, call), []).append(line)
    return found


def test_every_file_is_written_through_the_output_rule():
    found = scan()
    unlisted = {key: lines for key, lines in found.items() if key not in ALLOWED}
    assert not unlisted, (
        "these calls write files without trainer.outputs (route them through write_file / atomic_path / atomic_file / "
        "atomic_write_*, or add them to ALLOWED with the reason):\n"
        + "\n".join(f"  trainer/{module}:{lines[0]} in {function}: {call}" for (module, function, call), lines in sorted(unlisted.items()))
    )


def test_the_allowlist_has_no_stale_entries():
    stale = sorted(set(ALLOWED) - set(scan()))
    assert not stale, f"ALLOWED lists writers that are gone (remove them): {stale}"


@pytest.mark.parametrize("source, flagged", [
    ("def f(p):\n    open(p, 'w').write('x')\n", True),
    ("def f(p):\n    open(p, 'rb').read()\n", False),
    ("def f(p):\n    p.write_text('x')\n", True),
    ("def f(p):\n    import numpy as np\n    np.save(p, 1)\n", True),
    ("def f(fig):\n    import io\n    buffer = io.BytesIO()\n    fig.savefig(buffer)\n", False),
    ("def f(fig, p):\n    fig.savefig(p)\n", True),
    ("def f(d, fp):\n    import json\n    json.dump(d, fp)\n", True),
    ("def f(a, b):\n    import os\n    os.replace(a, b)\n", True),
    ("def f(a, b):\n    import shutil\n    shutil.copy2(a, b)\n", True),
    ("def f(p):\n    import h5py\n    h5py.File(p, 'w')\n", True),
    ("def f(model, p):\n    model.save(p)\n", True),
    ("def f(p):\n    from trainer.outputs import atomic_path\n    with atomic_path(p) as tmp:\n        with open(tmp, 'wb') as h:\n            h.write(b'x')\n", False),
    ("def f(p):\n    from trainer.outputs import atomic_file\n    import numpy as np\n    with atomic_file(p) as h:\n        np.savez(h, a=1)\n", False),
    ("def f(p):\n    from somewhere import atomic_path\n    with atomic_path(p) as tmp:\n        tmp.write_text('x')\n", True),  # not trainer's helper
])
def test_the_scan_sees_writers(source, flagged):
    """The scanner itself: each way of writing a file is found, writes into memory or an outputs helper are not."""
    tree = ast.parse(source)
    visitor = _Scan("x.py", _outputs_helpers(tree))
    visitor.visit(tree)
    assert bool(visitor.found) is flagged, visitor.found


# --------------------------------------------------------------------------- the rule's targets


def _is_own(path: Path) -> bool:
    return path.read_bytes().startswith(b"OURS")


def _make(kind: str, path: Path, mode: int = 0o600) -> None:
    """Put a ``kind`` of thing at ``path``: foreign/own file, link (to a file, dangling, to a folder), folder, FIFO."""
    if kind in ("foreign", "own"):
        path.write_bytes(b"theirs\n" if kind == "foreign" else b"OURS old\n")
        os.chmod(path, mode)
    elif kind == "link":
        target = path.with_name("target.txt")
        target.write_bytes(b"target\n")
        path.symlink_to(target)
    elif kind == "dangling link":
        path.symlink_to(path.with_name("nowhere.txt"))
    elif kind == "link to folder":
        path.with_name("elsewhere").mkdir()
        path.symlink_to(path.with_name("elsewhere"))
    elif kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind != "nothing":
        raise AssertionError(kind)


# kind -> (allowed without overwrite, allowed with overwrite, what the one-line refusal must say)
TARGETS = {
    "nothing": (True, True, ""),
    "own": (True, True, ""),
    "foreign": (False, True, "--overwrite"),
    "link": (False, False, "symbolic link"),
    "dangling link": (False, False, "symbolic link"),
    "link to folder": (False, False, "symbolic link"),
    "folder": (False, False, "is a folder"),
    "fifo": (False, False, "FIFO"),
}


def _snapshot(folder: Path) -> dict[str, tuple[str, bytes | str | None, int]]:
    """Every entry in ``folder``: its kind, content (files) or link target, and mode."""
    seen = {}
    for entry in sorted(folder.iterdir()):
        info = entry.lstat()
        if stat.S_ISLNK(info.st_mode):
            seen[entry.name] = ("link", os.readlink(entry), 0)
        elif stat.S_ISREG(info.st_mode):
            seen[entry.name] = ("file", entry.read_bytes(), stat.S_IMODE(info.st_mode))
        else:
            seen[entry.name] = ("other", None, stat.S_IMODE(info.st_mode))
    return seen


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("kind", list(TARGETS))
def test_write_file_targets(kind, overwrite, tmp_path):
    target = tmp_path / "out.json"
    _make(kind, target)
    before = _snapshot(tmp_path)
    allowed = TARGETS[kind][1 if overwrite else 0]
    if allowed:
        write_file(target, "OURS new\n", "--output", overwrite=overwrite, is_own=_is_own)
        assert target.read_bytes() == b"OURS new\n" and not target.is_symlink()
        if kind in ("own", "foreign"):
            assert stat.S_IMODE(target.stat().st_mode) == 0o600  # the mode of the file it replaced
        else:
            assert stat.S_IMODE(target.stat().st_mode) == outputs.new_file_mode()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(before) | {"out.json"})  # no temporary file left
        return
    with pytest.raises(BadInputError) as refused:
        write_file(target, "OURS new\n", "--output", overwrite=overwrite, is_own=_is_own)
    message = refused.value.message
    assert "\n" not in message and str(target) in message and TARGETS[kind][2] in message
    assert _snapshot(tmp_path) == before  # nothing changed: not the file, not the link's target, no temporary file


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o604, 0o755, 0o4755, 0o2775])
def test_a_replaced_file_keeps_its_mode_without_set_id_bits(mode, tmp_path):
    target = tmp_path / "x.csv"
    _make("foreign", target)
    os.chmod(target, mode)
    write_file(target, b"new", "--output", overwrite=True)
    assert stat.S_IMODE(target.stat().st_mode) == mode & 0o777


def test_a_read_only_file_is_refused_even_with_overwrite(tmp_path):
    target = tmp_path / "x.json"
    _make("foreign", target, mode=0o444)
    with pytest.raises(BadInputError, match="read-only"):
        write_file(target, b"new", "--output", overwrite=True)
    assert target.read_bytes() == b"theirs\n"


@pytest.mark.parametrize("name", ["a" * 250 + ".json", "x" + ".b" * 120 + ".csv"])
def test_a_name_at_the_length_limit_is_written(name, tmp_path):
    write_file(tmp_path / name, b"new", "--output")
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        write_file(tmp_path / "missing" / "x.json", b"new", "--output")
    assert not (tmp_path / "missing").exists()


def test_a_file_that_appears_while_writing_is_not_replaced(tmp_path, monkeypatch):
    """Checked, then someone creates the file before the rename: linked into place without replacing it (EEXIST)."""
    target = tmp_path / "x.json"
    real = outputs.atomic_path

    def racing(path, **kwargs):
        manager = real(path, **kwargs)

        class Race:
            def __enter__(self):
                tmp = manager.__enter__()
                target.write_bytes(b"theirs\n")  # appears after the check
                return tmp

            def __exit__(self, *exc):
                return manager.__exit__(*exc)

        return Race()

    monkeypatch.setattr(outputs, "atomic_path", racing)
    with pytest.raises(BadInputError, match="appeared while trainer was writing"):
        write_file(target, b"new", "--output")
    assert target.read_bytes() == b"theirs\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_a_full_disk_is_one_message_and_no_temporary_file(tmp_path, monkeypatch):
    """ENOSPC while writing: an OutputError (exit 1) naming the file; the old file and the folder are as they were."""
    import errno

    target = tmp_path / "x.json"
    _make("own", target)
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(outputs.os, "fsync", full)
    with pytest.raises(OutputError, match="No space left on device") as failed:
        write_file(target, b"OURS new", "--output", is_own=_is_own)
    monkeypatch.setattr(outputs.os, "fsync", real_fsync)
    assert failed.value.exit_code == 1 and str(target) in failed.value.message
    assert target.read_bytes() == b"OURS old\n" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(TARGETS)), overwrite=st.booleans(), mode=st.sampled_from([0o600, 0o644, 0o660, 0o700]),
       data=st.binary(max_size=64))
def test_property_write_file_obeys_the_rule(tmp_path_factory, kind, overwrite, mode, data):
    """Any target, flag and mode: written exactly when the rule allows it, else refused with nothing changed."""
    folder = tmp_path_factory.mktemp("out")
    target = folder / "out.csv"
    _make(kind, target, mode)
    before = _snapshot(folder)
    if TARGETS[kind][1 if overwrite else 0]:
        write_file(target, data, "--output", overwrite=overwrite, is_own=_is_own)
        assert target.read_bytes() == data
        assert stat.S_IMODE(target.stat().st_mode) == (mode if kind in ("own", "foreign") else outputs.new_file_mode())
    else:
        with pytest.raises(BadInputError):
            write_file(target, data, "--output", overwrite=overwrite, is_own=_is_own)
        assert _snapshot(folder) == before


def test_check_output_file_names_the_flag_only_where_it_helps(tmp_path):
    target = tmp_path / "x.json"
    _make("fifo", target)
    with pytest.raises(BadInputError) as refused:
        check_output_file(target, "--output", overwrite=True)
    assert "not even with --overwrite" in refused.value.message


# --------------------------------------------------------------------------- through the CLI: refused before any work

from tests.hostile.test_hostile_rundir import make_run  # noqa: E402 - a run directory written by hand (no training)


def _args(command: str, run: Path, tmp_path: Path, output: Path, *extra) -> list:
    return [command, run, *([tmp_path / "x.npy"] if command == "predict" else []), "--output", output, *extra]


COMMAND_OUTPUTS = [("eval", "report.json"), ("predict", "p.json"), ("predict", "p.csv")]


@pytest.mark.parametrize("kind", ["foreign", "link", "dangling link", "folder", "fifo"])
@pytest.mark.parametrize("command, name", COMMAND_OUTPUTS)
def test_cli_output_targets_are_refused_before_any_work(command, name, kind, cli, tmp_path):
    run = make_run(tmp_path / "run")
    output = tmp_path / "out" / name
    output.parent.mkdir()
    _make(kind, output)
    before = _snapshot(output.parent)
    result = cli(*_args(command, run, tmp_path, output))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and str(output) in result.unwrapped
    assert TARGETS[kind][2] in result.text
    assert _snapshot(output.parent) == before


@pytest.mark.parametrize("command, name", COMMAND_OUTPUTS)
def test_cli_overwrite_lets_a_foreign_file_pass_the_rule(command, name, cli, tmp_path):
    """With --overwrite the output check passes and the command goes on (to the run, an empty folder here, which it refuses)."""
    run = tmp_path / "not-a-run"
    run.mkdir()
    output = tmp_path / name
    _make("foreign", output)
    refused = cli(*_args(command, run, tmp_path, output))
    assert refused.exit_code == 2 and "--overwrite" in refused.text and len(refused.output.strip().splitlines()) <= 3
    went_on = cli(*_args(command, run, tmp_path, output, "--overwrite"))
    assert went_on.exit_code == 2 and "config.yaml" in went_on.text and "already exists" not in went_on.text
    assert output.read_bytes() == b"theirs\n"  # the failure later left it as it was


@pytest.mark.parametrize("kind", ["foreign", "link", "fifo", "folder"])
def test_the_confusion_matrix_beside_the_report_obeys_the_same_rule(kind, cli, tmp_path):
    run = make_run(tmp_path / "run")
    reports = tmp_path / "reports"
    reports.mkdir()
    _make(kind, reports / "confusion_matrix-test.png")
    before = _snapshot(reports)
    result = cli("eval", run, "--output", reports / "x.json")
    assert result.exit_code == 2, result.output
    assert "confusion matrix" in result.text and str(reports / "confusion_matrix-test.png") in result.unwrapped
    assert _snapshot(reports) == before


def test_a_report_named_like_its_picture_is_refused(cli, tmp_path):
    run = make_run(tmp_path / "run")
    result = cli("eval", run, "--output", tmp_path / "confusion_matrix-test.png", "--overwrite")
    assert result.exit_code == 2 and "name of the confusion matrix" in result.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("name", ["eval-test.json", "confusion_matrix-test.png"])
@pytest.mark.parametrize("kind", ["foreign", "link"])
def test_eval_into_the_run_directory_obeys_the_rule(name, kind, cli, tmp_path):
    run = make_run(tmp_path / "run")
    _make(kind, run / name)
    result = cli("eval", run)
    assert result.exit_code == 2, result.output
    assert str(run / name) in result.unwrapped and TARGETS[kind][2] in result.text


@pytest.mark.parametrize("flag_help", ["eval", "predict"])
def test_overwrite_is_explained_in_help(flag_help, cli):
    result = cli(flag_help, "--help")
    assert "--overwrite" in result.text and "did not write" in result.text and "permissions are kept" in result.text


# --------------------------------------------------------------------------- a trained run: what is written


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    import yaml

    from tests.conftest import run_cli, tiny_config
    from tests.datagen import write_mnist_npz

    root = tmp_path_factory.mktemp("outputs-rule")
    data = write_mnist_npz(root / "mnist.npz", n_train=256, n_test=64, seed=0)
    (root / "config.yaml").write_text(yaml.safe_dump(tiny_config(data)))
    result = run_cli("run", root / "config.yaml", "--run-dir", root / "run")
    assert result.exit_code == 0, result.unwrapped
    return root / "run"


@pytest.mark.slow
def test_eval_and_predict_replace_with_overwrite_keeping_the_mode_then_recognise_their_own(trained, cli, tmp_path):
    import numpy as np

    from trainer.inference.evaluate import is_eval_report
    from trainer.inference.plots import is_trainer_png
    from trainer.inference.predict import is_predictions_file

    report, picture, csv_out = tmp_path / "r.json", tmp_path / "confusion_matrix-test.png", tmp_path / "p.csv"
    np.save(tmp_path / "x.npy", np.zeros((2, 28, 28), dtype=np.uint8))
    for path in (report, picture, csv_out):
        _make("foreign", path, mode=0o600)

    assert cli("eval", trained, "--output", report).exit_code == 2  # refused: nothing computed or changed
    assert report.read_bytes() == picture.read_bytes() == b"theirs\n"
    evaluated = cli("eval", trained, "--output", report, "--overwrite")
    assert evaluated.exit_code == 0, evaluated.output
    predicted = cli("predict", trained, tmp_path / "x.npy", "--output", csv_out, "--overwrite")
    assert predicted.exit_code == 0, predicted.output
    for path, own in ((report, is_eval_report), (picture, is_trainer_png), (csv_out, is_predictions_file)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path  # the mode of the file it replaced
        assert own(path), path

    # trainer's own files are replaced without --overwrite; nothing else is left beside them
    assert cli("eval", trained, "--output", report).exit_code == 0
    assert cli("predict", trained, tmp_path / "x.npy", "--output", csv_out).exit_code == 0
    assert cli("predict", trained, tmp_path / "x.npy", "--output", tmp_path / "p.json").exit_code == 0
    assert cli("predict", trained, tmp_path / "x.npy", "--output", tmp_path / "p.json").exit_code == 0
    assert is_predictions_file(tmp_path / "p.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["r.json", "confusion_matrix-test.png", "p.csv", "p.json", "x.npy"])
    assert stat.S_IMODE((tmp_path / "p.json").stat().st_mode) == outputs.new_file_mode()


@pytest.mark.slow
def test_a_report_that_cannot_be_written_takes_the_new_picture_with_it(trained, cli, tmp_path, monkeypatch):
    import trainer.inference.evaluate as evaluate

    def failing(*args, **kwargs):
        raise OutputError("--output: cannot be written (No space left on device); nothing was changed and no temporary file was left.")

    monkeypatch.setattr(evaluate, "write_eval_report", failing)
    result = cli("eval", trained, "--output", tmp_path / "r.json")
    assert result.exit_code == 1 and "No space left" in result.text
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["link", "dangling link", "fifo"])
def test_the_run_lock_is_never_opened_through_a_link_or_on_a_fifo(kind, tmp_path):
    """A crafted run directory's .trainer.lock cannot make --resume create or open a file elsewhere (or block on a FIFO)."""
    from trainer.errors import RunDirError
    from trainer.run.checkpoint import RunLock

    run = tmp_path / "run"
    run.mkdir()
    lock = RunLock(run)
    _make(kind, lock.path)
    before = _snapshot(run), _snapshot(tmp_path)
    with pytest.raises(RunDirError, match="cannot write the run directory"):
        lock.acquire()
    assert (_snapshot(run), _snapshot(tmp_path)) == before and not (run / "nowhere.txt").exists()


def test_the_run_lock_is_created_and_reused(tmp_path):
    from trainer.run.checkpoint import RunLock

    with RunLock(tmp_path):
        assert (tmp_path / ".trainer.lock").is_file()
    with RunLock(tmp_path):
        pass
