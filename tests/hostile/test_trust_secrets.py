"""Passwords over every printable character never reach a screen, a file or a command line.

``trainer.secrets`` finds a URL's password as everything between the first ``:`` after
``scheme://`` and the last ``@`` (the span that holds what urllib and SQLAlchemy read as the
password), so ``# / ? @ : ' "``, spaces and ``%`` cannot cut a mask short. Each place that shows,
stores or passes a URL is driven with hypothesis-made passwords; a password must appear there in
no form (as given, percent-encoded, percent-decoded). Fast: no store is contacted.
"""
from __future__ import annotations

import json
import string
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote, unquote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.conftest import tiny_config
from trainer.errors import BadInputError, ConfigError
from trainer.secrets import MASK, has_secret, mask_url, scrub, secret_parts, without_credentials

PRINTABLE = string.printable[:-5]  # letters, digits, punctuation and the space (no tab or line break)
TRICKY = "#/?@:'\" %&;=[]{}\\"
passwords = st.text(
    alphabet=st.one_of(st.sampled_from(PRINTABLE), st.sampled_from(TRICKY), st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp"))),
    min_size=1, max_size=24,
)
schemes = st.sampled_from(["postgresql", "postgresql+psycopg", "mysql+pymysql", "https", "http", "redis", "databricks"])
tails = st.sampled_from(["/studydb", "/studydb?sslmode=require", ":5432/studydb", "", "/", "/db#frag"])
HOST = "dbhost.example"
CONCRETE = "postgresql://ann:Pa#Secret1@host/db"


def url_for(scheme: str, password: str, tail: str = "/studydb") -> str:
    return f"{scheme}://ann:{password}@{HOST}{tail}"


def forms(password: str) -> set[str]:
    """The password as given, percent-encoded and percent-decoded."""
    return {password, quote(password, safe=""), quote(password), unquote(password)}


def leaked(password: str, shown: str, render) -> list[str]:
    """The forms of ``password`` in ``shown`` that the same rendering of a harmless password does not hold anyway."""
    harmless = render("Xq7Zk9Wv")
    return [form for form in forms(password) if form and form in shown and form not in harmless]


# --------------------------------------------------------------------------- the mask itself


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (CONCRETE, "postgresql://ann:***@host/db"),
        ("postgresql://ann:a/b?c@host:5432/db", "postgresql://ann:***@host:5432/db"),
        ("postgresql://ann:it's \"x\" y@host/db", "postgresql://ann:***@host/db"),
        ("postgresql://ann:p@ss@word@host/db?sslmode=require", "postgresql://ann:***@host/db?sslmode=require"),
        ("mysql://ann:x://y@host/db", "mysql://ann:***@host/db"),
        ("postgresql://ann:pw@host/db?sslpassword=a#b&x=1", "postgresql://ann:***@host/db?sslpassword=***&x=1"),
        ("host=db password='a b\\' c' user=ann", "host=db password=*** user=ann"),
        ("https://registry.example/@scope/pkg", "https://registry.example/@scope/pkg"),
        ("sqlite:////tmp/a@b/mlflow.db", "sqlite:////tmp/a@b/mlflow.db"),
        ("postgresql://ann@host/db", "postgresql://ann@host/db"),
    ],
)
def test_mask_url_cases(url, shown):
    assert mask_url(url) == shown
    assert has_secret(url) == (url != shown)


@settings(max_examples=50, deadline=None)
@given(password=passwords, scheme=schemes, tail=tails, encode=st.booleans())
def test_mask_url_hides_any_password_exactly(password, scheme, tail, encode):
    given_password = quote(password, safe="") if encode else password
    assume("\n" not in given_password and "\r" not in given_password)
    url = url_for(scheme, given_password, tail)
    assert mask_url(url) == url_for(scheme, MASK, tail)
    assert has_secret(url) and has_secret(f"tracking.mlflow.uri={url}")
    assert without_credentials(url) == f"{scheme}://{HOST}{tail}"


@settings(max_examples=30, deadline=None)
@given(password=passwords, scheme=schemes)
def test_the_stores_parsers_read_no_more_than_the_mask_hides(password, scheme):
    """What urllib and SQLAlchemy take for the password is inside the masked span: masked whatever they read."""
    url = url_for(scheme, password)
    shown = mask_url(url)
    parts = secret_parts(url)
    for part in parts:
        assert part not in shown or part in url_for(scheme, MASK)


@settings(max_examples=30, deadline=None)
@given(password=passwords, scheme=schemes)
def test_scrub_removes_a_password_a_driver_repeats_in_any_form(password, scheme):
    assume(all(len(form) >= 3 for form in forms(password)))  # shorter values are not scrubbed from prose (they would mask words)
    url = url_for(scheme, password)

    def render(pw):
        message = f"FATAL: password authentication failed for user \"ann\" ({pw!r}, {quote(pw, safe='')}, {unquote(pw)}) at {url_for(scheme, pw)}"
        return scrub(message, [url_for(scheme, pw)])

    assert not leaked(password, render(password), render)


# --------------------------------------------------------------------------- every place a URL is shown, stored or passed


def rendered_error(error) -> str:
    from trainer.console import err_console, print_error

    with err_console.capture() as captured:
        print_error(error)
    return captured.get()


@settings(max_examples=25, deadline=None)
@given(password=passwords, scheme=schemes, quoted=st.booleans())
def test_error_messages_on_the_terminal(password, scheme, quoted):
    def render(pw):
        url = url_for(scheme, pw)
        shown = repr(url) if quoted else url
        return rendered_error(ConfigError(f"tracking.mlflow.uri: cannot reach {shown} (refused); fix the URI."))

    assert not leaked(password, render(password), render)


def test_the_issues_concrete_case_on_the_terminal():
    shown = rendered_error(BadInputError(f"cannot open the study storage {CONCRETE}: timeout"))
    assert "Secret1" not in shown and "Pa#" not in shown and "ann:***@host/db" in shown


@settings(max_examples=15, deadline=None)
@given(password=passwords)
def test_config_yaml_and_best_yaml(password, tmp_path_factory):
    from trainer.config.loading import load_config
    from trainer.sweep.driver import plan_sweep
    from trainer.sweep.events import TrialRecord
    from trainer.sweep.outputs import best_yaml, sweep_json

    folder = tmp_path_factory.mktemp("sweep")

    def render(pw):
        url = url_for("postgresql", pw)
        config = load_config(None, [], base=tiny_config(folder / "none.npz", data={"validation": 0.2}, tracking={"mlflow": {"uri": url}}, sweep={
            "trials": 2, "storage": url, "space": {"optimizer.learning_rate": {"float": [1e-4, 1e-2]}}}))
        plan = plan_sweep(config, sweep_dir=folder)
        best = TrialRecord(0, "completed", 0.5, {"optimizer.learning_rate": 0.001})
        summary = SimpleNamespace(best=best, budget=2, used=1, counts={"completed": 1})
        return "\n".join([config.to_yaml(), best_yaml(plan, best), json.dumps(sweep_json(plan, summary)), plan.storage_label,
                          json.dumps(config.to_dict(masked=True))])

    assert not leaked(password, render(password), render)


@settings(max_examples=25, deadline=None)
@given(password=passwords, scheme=schemes)
def test_tracking_json(password, scheme):
    from trainer.integrations.mlflow import stored_uri
    from trainer.readers.tracking_files import tracking_record

    def render(pw):
        return json.dumps(tracking_record("0" * 32, "1", stored_uri(url_for(scheme, pw)), None))

    assert not leaked(password, render(password), render)


def plan_for(storage: str, folder: Path):
    return SimpleNamespace(storage=storage, sweep_dir=folder, study_name="study", budget=4)


@settings(max_examples=25, deadline=None)
@given(password=passwords, scheme=schemes)
def test_worker_command_line_and_continue_hint(password, scheme, tmp_path_factory):
    from trainer.sweep.workers import STORAGE_ENV, WORKER_SET_ENV, continue_command, worker_command

    folder = tmp_path_factory.mktemp("sweep")

    def render(pw):
        url = url_for(scheme, pw)
        overrides = ["train.epochs=2", f"tracking.mlflow.uri={url}"]
        command, env = worker_command(plan_for(url, folder), Path("c.yaml"), overrides, base_env={"PATH": "/bin"})
        assert env[STORAGE_ENV] == url and json.loads(env[WORKER_SET_ENV]) == overrides  # the secret travels here
        hint = continue_command(Path("c.yaml"), overrides, plan_for(url, folder), None, url, None, 2)
        return "\0".join(command) + "\n" + hint

    assert not leaked(password, render(password), render)


@pytest.mark.slow  # imports mlflow
@pytest.mark.parametrize("password", ["Pa#Secret1", "a b/c?d", "x@y@z", "it's\"q", "100%sure", "p:w"])
def test_mlflow_connect_messages(password, tmp_path):
    """A store MLflow cannot use: the message names the URI masked, and the driver's text is scrubbed."""
    from types import SimpleNamespace as NS

    from trainer.integrations.mlflow import connect

    url = f"nosuchscheme://ann:{password}@host/db"
    config = NS(name="t", output=NS(dir=str(tmp_path)), tracking=NS(mlflow=NS(uri=url, experiment=None, run_name=None, parent_run_id=None)))
    with pytest.raises(BadInputError) as caught:
        connect(config)
    shown = rendered_error(caught.value)
    assert not [form for form in forms(password) if form in shown], shown
