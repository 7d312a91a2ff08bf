"""A key given at the wrong level gets the full path it belongs at ("did you mean 'train.epochs'?")."""
from __future__ import annotations

import pytest

from tests.conftest import REPO_ROOT

CONFIG = REPO_ROOT / "configs" / "mnist_sparse.yaml"


@pytest.mark.parametrize(
    ("setting", "suggestion"),
    [
        ("epochs=3", "train.epochs"),  # exact name one section down
        ("batch_size=8", "train.batch_size"),
        ("epoch=3", "train.epochs"),  # a near name one section down
        ("hidden_units=[8]", "model.hidden_units"),
        ("train.epoch=3", "epochs"),  # a near name at its own level still wins
    ],
)
def test_a_misplaced_key_names_the_path_it_belongs_at(cli, setting, suggestion):
    result = cli("validate", CONFIG, "--set", setting)
    assert result.exit_code == 2
    assert f"(did you mean '{suggestion}'?)" in result.text


def test_a_key_that_is_nowhere_gets_no_suggestion(cli):
    result = cli("validate", CONFIG, "--set", "nonsense=1")
    assert result.exit_code == 2 and "unknown key 'nonsense'" in result.text and "did you mean" not in result.text


@pytest.mark.parametrize("command", [["run"], ["predict"], ["eval"], ["export"], ["sweep"], ["lr-find"], []], ids=["run", "predict", "eval", "export", "sweep", "lr-find", "trainer"])
def test_flags_show_no_value_type_in_help(cli, command):
    result = cli(*command, "--help")
    assert result.exit_code == 0
    # Typer's own --help option keeps its "<bool>"; trainer's flags (--dry-run, --resume, --trust-export, --version) show none
    assert [line for line in result.output.splitlines() if "<bool>" in line and "--help" not in line] == []


@pytest.mark.parametrize("setting", ["tracking.mlflow.uri=postgresql://ann:Pa #Secret9@host/db", "model.hidden_units=[8] # wide", "name=#x"])
def test_a_set_value_that_yaml_would_cut_at_a_comment_is_refused_without_showing_the_rest(cli, setting):
    result = cli("validate", CONFIG, "--set", setting)
    assert result.exit_code == 2 and "starts a YAML comment" in result.text
    assert "Secret9" not in result.output


@pytest.mark.parametrize(("setting", "value"), [("name=a#b", "a#b"), ('name="a #b"', "a #b"), ("name='a #b'", "a #b")])
def test_a_hash_that_is_no_comment_stays_in_the_value(setting, value):
    from trainer.config.loading import parse_override

    assert parse_override(setting) == (("name",), value)
