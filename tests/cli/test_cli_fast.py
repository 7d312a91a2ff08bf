"""--help and validate never import TensorFlow; mistakes are refused before any data is read."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import tiny_config

PROBE = """
import sys
from typer.testing import CliRunner
from trainer.cli import app
for args in {calls!r}:
    result = CliRunner().invoke(app, args)
    print(repr((result.exit_code, result.output, "tensorflow" in sys.modules or "keras" in sys.modules)))
"""


def probe_each(calls, env) -> list[tuple[int, str, bool]]:
    """Run each argument list through the CLI, in order, in one fresh process: (exit code, output, TensorFlow or Keras
    imported by then?) after each. Modules only accumulate, so the first call to import TensorFlow is the first True."""
    import ast

    done = subprocess.run([sys.executable, "-c", PROBE.format(calls=calls)], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return [ast.literal_eval(line) for line in done.stdout.splitlines()]


def probe(args, env):
    ((code, output, imported),) = probe_each([args], env)
    return code, output + ("\nTF-IMPORTED" if imported else "\nTF-NOT-IMPORTED")


def test_importing_the_cli_does_not_import_tensorflow(subprocess_env):
    code = "import sys, trainer.cli; print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False"


def test_help_and_validate_do_not_import_tensorflow(subprocess_env, write_config):
    """trainer --help, run --help, validate --help, then validate of a config whose data does not exist: one process."""
    config = write_config(tiny_config("/nonexistent.npz"))
    calls = [["--help"], ["run", "--help"], ["validate", "--help"], ["validate", str(config)]]
    results = probe_each(calls, subprocess_env)
    assert len(results) == len(calls)
    for args, (code, output, imported) in zip(calls, results):
        assert code == 0 and not imported, (args, code, output)
        assert ("Usage" in output) if args[-1] == "--help" else ("valid" in output), (args, output)


def test_loss_label_mismatch_refused_before_tensorflow_or_data(subprocess_env, write_config, tmp_path):
    """The data path does not even exist: the mismatch must be reported first, without importing TensorFlow."""
    config = write_config(tiny_config(tmp_path / "missing.npz", loss="categorical_crossentropy", labels={"encoding": "sparse"}))
    code, output = probe(["run", str(config), "--run-dir", str(tmp_path / "r")], subprocess_env)
    assert code == 2
    assert "categorical_crossentropy needs one-hot labels" in output and "TF-NOT-IMPORTED" in output
    assert not (tmp_path / "r").exists()


def test_bad_command_line_arguments_exit_2(cli, tmp_path):
    assert cli("run").exit_code == 2
    missing = cli("run", tmp_path / "absent.yaml")
    assert missing.exit_code == 2 and "config file not found" in missing.output
    assert cli("run", "x.yaml", "--no-such-option").exit_code == 2


def test_error_text_like_an_emoji_code_is_printed_as_given(write_config, cli):
    """Rich would turn ':-1:' (YAML `{0:-1}` read as one key) into a thumbs-down."""
    result = cli("validate", write_config(tiny_config("/tmp/x.npz")), "--set", "train.class_weight={0:-1}")
    assert result.exit_code == 2 and "0:-1" in result.output and "\N{THUMBS DOWN SIGN}" not in result.output
