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
result = CliRunner().invoke(app, {args!r})
print(result.exit_code)
print(result.output)
print("TF-IMPORTED" if "tensorflow" in sys.modules or "keras" in sys.modules else "TF-NOT-IMPORTED")
"""


def probe(args, env):
    done = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    code, *rest = done.stdout.splitlines()
    return int(code), "\n".join(rest)


def test_importing_the_cli_does_not_import_tensorflow(subprocess_env):
    code = "import sys, trainer.cli; print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("command", [[], ["run"], ["validate"]])
def test_help_does_not_import_tensorflow(subprocess_env, command):
    code, output = probe([*command, "--help"], subprocess_env)
    assert code == 0 and "Usage" in output and "TF-NOT-IMPORTED" in output


def test_validate_does_not_import_tensorflow(subprocess_env, write_config):
    config = write_config(tiny_config("/nonexistent.npz"))
    code, output = probe(["validate", str(config)], subprocess_env)
    assert code == 0 and "valid" in output and "TF-NOT-IMPORTED" in output


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
