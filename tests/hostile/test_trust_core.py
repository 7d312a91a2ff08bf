"""The trust core: credential masking, bounded readers of untrusted files, and the output rule (fast, no TensorFlow)."""
from __future__ import annotations

import json
import os
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field

from trainer import readers
from trainer.errors import BadInputError, RunDirError
from trainer.outputs import Made, check_replaceable, claim_dir
from trainer.secrets import MASK, mask_url, scrub, secret_env, secret_parts

# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://ann:hunter2@db:5432/sweeps", "postgresql://ann:***@db:5432/sweeps"),
        ("postgresql+psycopg://ann:p%40ss@db/s?sslmode=require", "postgresql+psycopg://ann:***@db/s?sslmode=require"),
        ("postgresql://ann@db/s?password=hunter2&sslmode=require", "postgresql://ann@db/s?password=***&sslmode=require"),
        ("postgresql://db/s?user=ann&PASSWORD=hunter2", "postgresql://db/s?user=ann&PASSWORD=***"),
        ("https://tok3n@mlflow.example/", "https://***@mlflow.example/"),
        ("https://ann:tok3n@mlflow.example/path?token=abc123", "https://ann:***@mlflow.example/path?token=***"),
        ("http://u:p@ss@host/x", "http://u:***@host/x"),  # an unescaped @ in the password
        ("host=db user=ann password=hunter2 dbname=s", "host=db user=ann password=*** dbname=s"),
        ("sqlite:///outputs/mlflow.db", "sqlite:///outputs/mlflow.db"),
        ("file:///tmp/mlruns", "file:///tmp/mlruns"),
        ("outputs/sweep/optuna-journal.log", "outputs/sweep/optuna-journal.log"),
        ("cannot reach postgresql://a:b1c2@h/d (timeout)", "cannot reach postgresql://a:***@h/d (timeout)"),
    ],
)
def test_mask_url_hides_every_credential_and_keeps_the_rest(url, shown):
    assert mask_url(url) == shown


secret_text = st.text(alphabet=string.ascii_letters + string.digits + "!$%^*()-_+[]{}~", min_size=6, max_size=20)


@settings(max_examples=100, deadline=None)
@given(secret=secret_text, user=st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8),
       scheme=st.sampled_from(["postgresql", "postgresql+psycopg", "mysql", "https", "http", "databricks"]),
       form=st.sampled_from(["userinfo", "query", "both"]))
def test_no_password_survives_masking(secret, user, scheme, form):
    from urllib.parse import quote

    encoded = quote(secret, safe="")
    assume(encoded not in f"{scheme}://{user}@db.example:5432/name?sslmode=require&token=")
    if form == "userinfo":
        url = f"{scheme}://{user}:{encoded}@db.example:5432/name"
    elif form == "query":
        url = f"{scheme}://{user}@db.example/name?sslmode=require&password={encoded}"
    else:
        url = f"{scheme}://{user}:{encoded}@db.example/name?token={encoded}"
    masked = mask_url(url)
    assert encoded not in masked and MASK in masked
    assert "db.example" in masked  # still says where
    assert secret not in scrub(f"driver said: password {secret!r} rejected for {url}", [url])


def test_scrub_removes_a_decoded_password_a_driver_repeats():
    url = "postgresql://ann:s3cr%40t@db/s"
    assert "s3cr@t" in secret_parts(url)
    message = 'connection failed: FATAL password "s3cr@t" for ann at postgresql://ann:s3cr%40t@db/s'
    assert "s3cr" not in scrub(message, [url])


def test_secret_env_adds_the_secret_to_a_copy():
    base = {"PATH": "/bin"}
    env = secret_env("TRAINER_SECRET", "pw", base)
    assert env == {"PATH": "/bin", "TRAINER_SECRET": "pw"} and base == {"PATH": "/bin"}


# --------------------------------------------------------------------------- readers


class Sample(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epoch: int = Field(ge=0, le=1_000_000)
    name: str = Field(max_length=64)


def test_read_record_returns_the_typed_record(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"epoch": 3, "name": "x"}))
    assert readers.read_record(Sample, tmp_path / "r.json") == Sample(epoch=3, name="x")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"epoch": -1, "name": "x"}', "epoch is -1"),
        ('{"epoch": Infinity, "name": "x"}', "epoch is inf"),
        ('{"epoch": 1e308, "name": "x"}', "epoch is 1e+308"),
        ('{"epoch": true, "name": "x"}', "epoch"),
        ('{"epoch": 1, "name": "x", "extra": 1}', "extra"),
        ('[1, 2]', "holds a JSON list"),
        ('{"epoch": 1', "not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
        ('{"epoch": ' + "9" * 5000 + ', "name": "x"}', "not valid JSON"),
    ],
)
def test_read_record_refuses_malformed_records_naming_file_and_field(tmp_path, content, expected):
    path = tmp_path / "r.json"
    path.write_text(content)
    with pytest.raises(RunDirError) as error:
        readers.read_record(Sample, path)
    assert str(path) in error.value.message and expected in error.value.message


def test_read_bytes_refuses_what_is_not_a_small_regular_file_inside_its_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    outside = tmp_path / "secret.json"
    outside.write_text("{}")
    (run / "out.json").symlink_to(outside)
    (run / "zero.json").symlink_to("/dev/zero")
    os.mkfifo(run / "fifo.json")
    (run / "dir.json").mkdir()
    (run / "big.json").write_bytes(b" " * 2048)
    (run / "latin.json").write_bytes(b'{"name": "\xff"}')
    (run / "nul.json").write_bytes(b'{"name": "\x00"}')
    cases = {
        "out.json": "points outside", "zero.json": "points outside", "fifo.json": "not a regular file",
        "dir.json": "not a regular file", "big.json": "more than the 1 KiB", "missing.json": "is missing",
        "latin.json": "not UTF-8", "nul.json": "NUL byte",
    }
    for name, expected in cases.items():
        with pytest.raises(RunDirError) as error:
            readers.read_text(run / name, limit=1024, folder=run)
        assert expected in error.value.message, name
        assert name in error.value.message


def test_read_bytes_follows_a_link_that_stays_inside_the_folder(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "b.json").symlink_to(tmp_path / "a.json")
    assert readers.read_json(tmp_path / "b.json") == {}


def test_read_csv_bounds_rows_columns_and_fields(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("epoch,loss\n1,0.5\n2,0.4\n")
    assert readers.read_csv(path) == (["epoch", "loss"], [["1", "0.5"], ["2", "0.4"]])
    path.write_text("epoch\n" + "1\n" * 20)
    with pytest.raises(RunDirError, match="more than 10 rows"):
        readers.read_csv(path, max_rows=10)
    path.write_text("a\n" + ",".join("x" * 10 for _ in range(50)) + "\n")
    with pytest.raises(RunDirError, match="50 fields"):
        readers.read_csv(path, max_columns=10)
    path.write_text('a\n"' + "x" * (readers.CSV_FIELD_LIMIT + 10) + '"\n')
    with pytest.raises(RunDirError, match="not CSV"):
        readers.read_csv(path)


valid_record = json.dumps({"epoch": 3, "name": "x"}).encode()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_records_are_read_or_refused_with_one_message(tmp_path, data):
    content = bytearray(valid_record)
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        position = data.draw(st.integers(0, max(len(content) - 1, 0)))
        if action == "flip" and content:
            content[position] = data.draw(st.integers(0, 255))
        elif action == "insert":
            content[position:position] = data.draw(st.binary(min_size=1, max_size=8))
        elif action == "delete" and content:
            del content[position]
        else:
            content = content[:position]
    path = tmp_path / "r.json"
    path.write_bytes(bytes(content))
    try:
        record = readers.read_record(Sample, path, limit=4096)
    except RunDirError as error:
        assert str(path) in error.message and "\n" not in error.message
    else:
        assert 0 <= record.epoch <= 1_000_000 and len(record.name) <= 64


# --------------------------------------------------------------------------- outputs


def test_claim_dir_creates_or_takes_an_empty_folder_only(tmp_path, monkeypatch):
    assert claim_dir(tmp_path / "new" / "deep", "--output") == (tmp_path / "new" / "deep", True)
    (tmp_path / "empty").mkdir()
    assert claim_dir(tmp_path / "empty", "--output") == (tmp_path / "empty", False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "saved_model.pb").write_text("theirs")
    with pytest.raises(BadInputError, match="not empty"):
        claim_dir(tmp_path / "full", "--output")
    assert (tmp_path / "full" / "saved_model.pb").read_text() == "theirs"
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInputError, match="not a folder"):
        claim_dir(tmp_path / "file", "--output")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    with pytest.raises(BadInputError, match="working directory"):
        claim_dir(Path("."), "--output")


def test_check_replaceable_replaces_only_recognised_files(tmp_path):
    path = tmp_path / "manifest.json"
    assert check_replaceable(path, "--output", lambda p: False) is False  # absent: nothing to replace
    path.write_text("theirs")
    with pytest.raises(BadInputError, match="not a file trainer wrote"):
        check_replaceable(path, "--output", lambda p: p.read_text() == "ours")
    path.write_text("ours")
    assert check_replaceable(path, "--output", lambda p: p.read_text() == "ours") is True
    link = tmp_path / "link.json"
    link.symlink_to(path)
    with pytest.raises(BadInputError, match="symbolic link"):
        check_replaceable(link, "--output", lambda p: True)


def test_made_removes_only_what_it_made(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "keep.txt").write_text("keep")
    made = Made()
    with pytest.raises(RuntimeError):
        with made.undone_on_error():
            ours = made.make_dir(tmp_path / "ours", "test")
            (ours / "half.h5").write_text("half")
            made.track_file(theirs / "new.txt").write_text("new")
            raise RuntimeError("failed")
    assert not (tmp_path / "ours").exists() and not (theirs / "new.txt").exists()
    assert (theirs / "keep.txt").read_text() == "keep"


def test_made_leaves_a_folder_swapped_in_by_someone_else(tmp_path):
    made = Made()
    ours = made.make_dir(tmp_path / "ours", "test")
    ours.rename(tmp_path / "moved")
    ours.mkdir()  # another folder now (the moved one keeps its inode): not the folder this process made
    (ours / "theirs.txt").write_text("x")
    made.undo()
    assert (ours / "theirs.txt").exists()
