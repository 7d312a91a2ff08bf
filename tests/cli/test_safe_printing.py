"""Text from files reaches the terminal as text: controls escaped, Rich markup shown literally (trainer/console.py).

Class names (manifest.json), statuses and reasons (metrics.json), run and input names, and error
messages quoting them go through ``trainer.console``'s one printer: ``visible`` escapes C0, C1, DEL,
lone ESC, bidirectional and zero-width characters and lone surrogates; tables, messages and
notices hand that text to Rich as plain ``Text``, never as markup.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from tests.conftest import run_cli, tiny_config
from trainer.console import THEME, format_value, key_value_table, plain, records_table, untrusted, visible

HIDDEN = {"Cc", "Cf", "Cs", "Zl", "Zp"}

HOSTILE = [
    "\x1b]0;pwned\x07",  # window title
    "\x1b[2J\x1b[H",  # clear screen
    "\x1b]8;;file:///etc/passwd\x1b\\click\x1b]8;;\x1b\\",  # an OSC 8 hyperlink
    "\x9b31mred",  # C1 CSI
    "\x1b",  # lone ESC
    "a\rb",
    "x\x00y\x7f",
    "\u202eevil.exe",  # right-to-left override
    "zero\u200bwidth",
    "line\u2028sep",
    "[link=https://evil.example]click[/link]",
    "[/]",
    "[bold red]loud[/]",
    "[",
    "a\\",
    "\\[b]",
    "$\\frac{1}{0}$",  # mathtext in a picture
    "$",
    ":thumbsup:",
    "",
]

# text with controls, markup and anything else (lone surrogates too: undecodable file-name bytes)
texts = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(max_size=24),
    st.text(alphabet=st.sampled_from(list("[]/\\=:$ \x1b\x07\x9b\u202e\r\nabc")), max_size=24),
)


def raw_controls(output: str) -> list[str]:
    """Characters a terminal could obey or that hide text: anything in HIDDEN except the newlines of the layout."""
    return [c for c in output if c != "\n" and unicodedata.category(c) in HIDDEN]


@pytest.fixture(autouse=True, scope="module")
def wide_console():
    """The CLI's console as wide as a big terminal, so cells are not cut short and every bracket can be counted."""
    from trainer.console import console

    saved = console._width
    console.width = 1000
    yield
    console._width = saved


def render(renderable) -> str:
    out = Console(file=io.StringIO(), width=400, color_system=None, highlight=False, emoji=False, theme=THEME)
    out.print(renderable)
    return out.file.getvalue()


# --------------------------------------------------------------------------- the printer itself


@given(texts)
def test_visible_leaves_no_control_or_invisible_character(text):
    shown = visible(text)
    assert not [c for c in shown if unicodedata.category(c) in HIDDEN]
    assert "\n" in visible(text, layout=True) or "\n" not in text


@given(st.text(alphabet=st.characters(blacklist_categories=tuple(HIDDEN)), max_size=40))
def test_visible_leaves_ordinary_text_alone(text):
    assert visible(text) == text


@pytest.mark.parametrize("text, shown", [
    ("\x1b[2J", "\\x1b[2J"), ("\x9b", "\\x9b"), ("\u202e", "\\u202e"), ("\udcff", "\\xff"), ("\ud800", "\\ud800"), ("a\nb\tc", "a\\x0ab\\x09c"),
    ("\U000e0001", "\\U000e0001"),
])
def test_visible_escapes(text, shown):
    assert visible(text) == shown


@settings(max_examples=50)
@given(st.lists(texts, min_size=1, max_size=4))
def test_tables_show_every_cell_header_and_title_as_text(values):
    """records_table / key_value_table: whatever the strings, no raw control reaches the output and every bracket is kept."""
    records = [{value or "-": value for value in values}]
    for table in (records_table(values[0], records), key_value_table(values[-1], [(v, v) for v in values])):
        output = render(table)
        assert not raw_controls(output)
        for value in values:
            assert visible(value) in output or len(visible(value)) > 300  # literally, markup and all
    assert format_value("\x1b[31m") == "\\x1b[31m"


@given(texts)
def test_untrusted_inside_markup_is_literal(text):
    output = render(f"[bold]label:[/bold] {untrusted(text)}")
    assert not raw_controls(output)
    assert output.count("[") >= visible(text).count("[")
    assert render(plain(text)).rstrip("\n") == visible(text)


# --------------------------------------------------------------------------- through the CLI, no TensorFlow


def _fs_name(text: str) -> str:
    """A folder name the file system takes, from any text (no '/', NUL, '.', '..'; at most 200 bytes)."""
    name = "".join(c for c in text if c not in "/\x00" and unicodedata.category(c) != "Cs")[:40] or "x"
    return "run" + name if name in (".", "..") else name


def _write_run(root: Path, name: str, status: str, reason: str | None = None) -> Path:
    run = root / name
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(tiny_config(None)))
    (run / "metrics.json").write_text(json.dumps({"status": status, "epochs_completed": 1, **({"reason": reason} if reason else {})}))
    return run


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs=st.lists(st.tuples(texts, texts.filter(lambda s: 1 <= len(s) <= 64)), min_size=1, max_size=3))
def test_runs_shows_names_and_statuses_as_text(tmp_path_factory, runs):
    root = tmp_path_factory.mktemp("runs")
    names = []
    for index, (name, status) in enumerate(runs):
        folder = f"{index}-{_fs_name(name)}"
        _write_run(root, folder, status)
        names.append(folder)
    result = run_cli("runs", root)
    assert result.exit_code == 0, result.output
    assert not raw_controls(result.output)
    brackets = sum(visible(n).count("[") for n in names) + sum(visible(s).count("[") for _, s in runs)
    assert result.output.count("[") >= brackets  # no markup was consumed


def test_runs_with_an_undecodable_folder_name(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    os.mkdir(os.fsencode(root) + b"/bad-\xff\x1b[2J")
    (Path(os.fsdecode(os.fsencode(root) + b"/bad-\xff\x1b[2J")) / "config.yaml").write_text(yaml.safe_dump(tiny_config(None)))
    result = run_cli("runs", root)
    assert result.exit_code == 0, result.output
    assert not raw_controls(result.output) and "bad-\\xff\\x1b[2J" in result.unwrapped


@pytest.mark.parametrize("text", HOSTILE[:14])
def test_error_messages_show_paths_as_text(text, tmp_path):
    """An error that quotes a path (here a folder that is not one) prints it escaped, exit code unchanged."""
    target = tmp_path / _fs_name(text)
    target.write_text("not a folder")
    result = run_cli("runs", target)
    assert result.exit_code == 2
    assert not raw_controls(result.output)
    assert visible(str(target)) in result.unwrapped


@pytest.mark.parametrize("command", ["eval", "predict"])
@pytest.mark.parametrize("text", ["\x1b]0;pwned\x07", "[link=https://evil.example]x[/link]", "\u202eabc"])
def test_manifest_values_in_errors_are_text(command, text, tmp_path):
    from tests.hostile.test_hostile_rundir import make_run

    run = make_run(tmp_path / "run", label_encoding=text)
    result = run_cli(command, run, *([tmp_path / "x.npy"] if command == "predict" else []))
    assert result.exit_code == 2, result.output
    assert not raw_controls(result.output) and "label_encoding" in result.text


# --------------------------------------------------------------------------- a trained run: predict and eval tables


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_path) -> Path:
    root = tmp_path_factory.mktemp("printing")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data_path)))
    result = run_cli("run", config, "--run-dir", root / "run")
    assert result.exit_code == 0, result.unwrapped
    return root / "run"


@pytest.fixture(scope="module")
def data_path(tmp_path_factory) -> Path:
    from tests.datagen import write_mnist_npz

    return write_mnist_npz(tmp_path_factory.mktemp("data") / "mnist.npz", n_train=256, n_test=64, seed=0)


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(texts, min_size=10, max_size=10))
def test_class_names_reach_predict_and_eval_as_text(trained, tmp_path_factory, names):
    """Crafted class names in manifest.json: predict's table, eval's per-class and confusion tables and its picture.

    Exit 0 as with ordinary names, no raw control in the output, every bracket shown.
    """
    folder = tmp_path_factory.mktemp("crafted")
    run = folder / "run"
    shutil.copytree(trained, run)
    for stale in list(run.glob("eval-*")) + list(run.glob("confusion_matrix-*")):
        stale.unlink()
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "class_names": names}))
    np.save(folder / "four.npy", np.zeros((4, 28, 28), dtype=np.uint8))
    brackets = sum(visible(n).count("[") for n in names)

    predicted = run_cli("predict", run, folder / "four.npy", "--top-k", "10", "--output", folder / "p.csv")
    assert predicted.exit_code == 0, predicted.output
    assert not raw_controls(predicted.output)
    assert predicted.output.count("[") >= brackets  # every name appears in the top-10 column

    evaluated = run_cli("eval", run, "--output", folder / "e.json")
    assert evaluated.exit_code == 0, evaluated.output
    assert not raw_controls(evaluated.output)
    assert evaluated.output.count("[") >= 2 * brackets  # the per-class table and the confusion matrix's header
    assert json.loads((folder / "e.json").read_text())["per_class"][0]["name"] == names[0]  # the file keeps the real name
    assert (folder / "confusion_matrix-test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_class_name_of_megabytes_is_cut_in_tables_and_pictures():
    from trainer.console import MAX_CELL
    from trainer.inference.plots import MAX_LABEL, _label

    output = render(records_table("t", [{"name": "x" * 1_000_000}]))
    assert len(output) < 3 * MAX_CELL and "(999,000 more characters)" in output
    assert len(_label("\x1b" * 1_000_000)) == MAX_LABEL


def test_a_study_records_status_and_values_reach_the_trials_table_as_text_not_markup():
    from rich.console import Console

    from trainer.cli.sweep import trials_table
    from trainer.sweep.events import TrialRecord

    record = TrialRecord(number=0, status="[link=http://x]\x1b]0;pwned\x07[/]", value=None, params={"a": "[bold]x"})
    console = Console(record=True, width=200, force_terminal=True)
    console.print(trials_table([record], None))
    text = console.export_text()
    assert "[link=http://x]" in text and "\\x1b" in text and "\x1b]0;" not in text and "[bold]x" in text
