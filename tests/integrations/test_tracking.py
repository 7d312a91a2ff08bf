"""tracking.mlflow: runs logged through run events to a local SQLite store and to a real `mlflow server`."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_config
from tests.datagen import write_mnist_npz
from trainer.run.rundir import read_history

pytest.importorskip("mlflow", reason="tracking tests need the [mlflow] extra")

ARTIFACTS = {"model.h5", "config.yaml", "manifest.json", "metrics.json", "history.csv", "curves.png"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` on 127.0.0.1 (free port, temporary stores), stopped after the session."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "artifacts"),
    ]
    log = open(root / "server.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # minutes on a loaded machine: it imports most of MLflow and migrates its database
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        log.close()
        pytest.skip(f"mlflow server did not start within 300 s: {(root / 'server.log').read_text(errors='replace')[-500:]}")
    yield uri
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_mnist_npz(tmp_path_factory.mktemp("tracking-data") / "mnist.npz", n_train=128, n_test=32, seed=0)


def write(path: Path, config: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def tracked_config(data: Path, root: Path, uri: str | None, **sections) -> dict:
    return tiny_config(data, output={"dir": str(root / "outputs")}, tracking={"mlflow": {"uri": uri, "experiment": "tests"}}, **sections)


def client_for(run_dir: Path):
    from mlflow.tracking import MlflowClient

    stored = json.loads((run_dir / "tracking.json").read_text())["mlflow"]
    return MlflowClient(tracking_uri=stored["tracking_uri"]), stored["run_id"]


def artifact_names(client, run_id: str) -> set[str]:
    return {item.path for item in client.list_artifacts(run_id)}


@pytest.fixture(scope="module", params=["sqlite", "server"])
def completed_run(request, data, tmp_path_factory):
    """A 2-epoch run logged to the default SQLite store (uri: null) or to the server; the SQLite one then evaluated with trainer eval."""
    from typer.testing import CliRunner

    import trainer
    from trainer.cli import app

    uri = request.getfixturevalue("mlflow_server") if request.param == "server" else None
    root = tmp_path_factory.mktemp(f"tracked-{request.param}")
    result = trainer.train(write(root / "config.yaml", tracked_config(data, root, uri, train={"epochs": 2})))
    if request.param == "sqlite":
        evaluation = CliRunner().invoke(app, ["eval", str(result.run_dir), "--mlflow", f"sqlite:///{root / 'outputs' / 'mlflow.db'}"])
        assert evaluation.exit_code == 0, evaluation.output
        assert "logged to MLflow run" in evaluation.output
    return request.param, root, result


@pytest.mark.slow
def test_completed_run_has_params_metrics_per_epoch_test_metrics_artifacts_and_tags(completed_run):
    backend, root, result = completed_run
    client, run_id = client_for(result.run_dir)
    if backend == "sqlite":
        assert client.tracking_uri == f"sqlite:///{(root / 'outputs').resolve() / 'mlflow.db'}"
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "tests"
    assert run.info.run_name == result.run_dir.name
    params = run.data.params
    assert params["train.batch_size"] == "32" and params["model.hidden_units"] == "[16]" and params["optimizer.learning_rate"] == "0.01"
    assert params["model.type"] == "mlp" and params["train.epochs"] == "2"
    history = read_history(result.run_dir / "history.csv")
    for column in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        logged = client.get_metric_history(run_id, column)
        assert [m.step for m in logged] == [1, 2], column
        assert [m.value for m in logged] == pytest.approx([row[column] for row in history]), column
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert run.data.metrics["test_loss"] == pytest.approx(metrics["test"]["loss"])
    assert ARTIFACTS <= artifact_names(client, run_id)
    assert run.data.tags["status"] == "completed"
    assert run.data.tags["run_dir"] == str(result.run_dir.resolve())
    assert run.data.tags["trainer_version"] == "0.1.0"


@pytest.mark.slow
@pytest.mark.parametrize("completed_run", ["sqlite"], indirect=True)  # eval runs on the SQLite-tracked run only
def test_trainer_eval_adds_its_report_and_confusion_matrix_to_the_mlflow_run(completed_run):
    _, _, result = completed_run
    client, run_id = client_for(result.run_dir)
    assert {"eval-test.json", "confusion_matrix-test.png"} <= artifact_names(client, run_id)
    report = json.loads((result.run_dir / "eval-test.json").read_text())
    assert client.get_run(run_id).data.metrics["eval_test_accuracy"] == pytest.approx(report["accuracy"])


@pytest.mark.slow
def test_failed_run_is_failed_with_its_reason(data, tmp_path, write_config):
    import trainer
    from trainer.errors import RunFailedError

    config = tracked_config(data, tmp_path, None, optimizer={"name": "sgd", "learning_rate": 1e10}, train={"epochs": 3})
    with pytest.raises(RunFailedError):
        trainer.train(write_config(config))
    (run_dir,) = [p for p in (tmp_path / "outputs").iterdir() if p.is_dir() and (p / "tracking.json").exists()]
    client, run_id = client_for(run_dir)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["status"] == "failed" and "loss" in run.data.tags["reason"]
    assert {"config.yaml", "metrics.json"} <= artifact_names(client, run_id)


@pytest.mark.slow
def test_interrupted_run_is_killed_and_resume_continues_the_same_mlflow_run(data, tmp_path, write_config):
    import keras

    import trainer
    from trainer.errors import RunInterrupted

    class InterruptSecondEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    path = write_config(tracked_config(data, tmp_path, None, train={"epochs": 2}))
    run_dir = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        trainer.train(path, run_dir=run_dir, callbacks=[InterruptSecondEpoch()])
    client, run_id = client_for(run_dir)
    assert client.get_run(run_id).info.status == "KILLED"
    assert client.get_run(run_id).data.tags["status"] == "interrupted"

    trainer.train(path, run_dir=run_dir, resume=True)
    assert client_for(run_dir)[1] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "completed"
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2]
    assert len(client.search_runs([run.info.experiment_id])) == 1


@pytest.mark.slow
def test_tracker_failure_mid_run_warns_once_and_training_goes_on(data, tmp_path, write_config):
    import trainer
    from trainer.integrations.mlflow import connect

    path = write_config(tracked_config(data, tmp_path, None, train={"epochs": 2}))
    logger = connect(trainer.load_config(path))
    calls = {"metrics": 0}
    original = logger.client.log_batch

    def log_batch(run_id, metrics=(), params=(), tags=()):
        if metrics:
            calls["metrics"] += 1
            raise ConnectionError("tracking server went away")
        return original(run_id, metrics=metrics, params=params, tags=tags)

    logger.client.log_batch = log_batch
    with pytest.warns(RuntimeWarning, match="MLflow tracking at .* failed \\(tracking server went away\\)") as caught:
        result = trainer.train(path, events=[logger])
    assert result.status == "completed" and (result.run_dir / "model.h5").is_file()
    assert len([w for w in caught if "MLflow" in str(w.message)]) == 1
    assert calls["metrics"] == 1 and logger.disabled
    assert len(result.event_errors) == 1


@pytest.mark.slow
def test_sweep_parent_run_has_the_trial_as_child(data, tmp_path, write_config):
    import trainer
    from trainer.integrations.mlflow import parent_run

    path = write_config(tracked_config(data, tmp_path, None))
    config = trainer.load_config(path)
    with parent_run(config, "sweep") as parent_id:
        result = trainer.train(path, overrides=[f"tracking.mlflow.parent_run_id='{parent_id}'"])
    client, run_id = client_for(result.run_dir)
    assert client.get_run(run_id).data.tags["mlflow.parentRunId"] == parent_id
    assert client.get_run(parent_id).info.status == "FINISHED"


@pytest.mark.slow
def test_a_sweep_is_a_parent_run_with_each_trial_as_child(cli, data, tmp_path, write_config):
    pytest.importorskip("optuna", reason="the sweep needs the [sweep] extra")
    config = tracked_config(data, tmp_path, None, train={"epochs": 1},
                            sweep={"trials": 2, "sampler": "random", "space": {"optimizer.learning_rate": {"float": [0.001, 0.01]}}})
    config["data"]["validation"] = 0.25  # a sweep never selects on the test split
    sweep_dir = tmp_path / "sweep"
    result = cli("sweep", write_config(config), "--sweep-dir", sweep_dir)
    assert result.exit_code == 0, result.output
    trials = sorted(sweep_dir.glob("trial-*"))
    children = [client_for(trial) for trial in trials]
    parents = {client.get_run(run_id).data.tags["mlflow.parentRunId"] for client, run_id in children}
    assert len(trials) == 2 and len(parents) == 1
    client = children[0][0]
    parent = client.get_run(parents.pop())
    assert parent.info.status == "FINISHED" and parent.data.tags["trainer_kind"] == "sweep"
    assert "parent_run_id" not in (sweep_dir / "best.yaml").read_text()  # trainer run best.yaml is a run of its own


@pytest.mark.parametrize(
    "uri, message",
    [
        ("http://127.0.0.1:{port}", "tracking.mlflow.uri: cannot reach the MLflow server http://127.0.0.1:{port}"),
        ("nosuchscheme://x/y", "tracking.mlflow.uri: 'nosuchscheme://x/y' cannot be used as an MLflow tracking store"),
    ],
)
def test_bad_tracking_uri_exits_2_before_data_is_read(cli, write_config, tmp_path, uri, message):
    port = free_port()  # nothing listens there
    missing_data = tmp_path / "not-there.npz"  # reading data would fail with another message
    config = tiny_config(missing_data, output={"dir": str(tmp_path / "outputs")}, tracking={"mlflow": {"uri": uri.format(port=port)}})
    result = cli("run", write_config(config))
    assert result.exit_code == 2
    assert message.format(port=port) in result.output.replace("\n", "")
    assert not list((tmp_path / "outputs").glob("tiny-*"))


def test_missing_mlflow_exits_2_with_the_install_command(cli, write_config, tmp_path, monkeypatch, mnist_npz):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    config = tiny_config(mnist_npz, output={"dir": str(tmp_path / "outputs")}, tracking={"mlflow": {}})
    result = cli("run", write_config(config))
    assert result.exit_code == 2
    assert "pip install -e '.[mlflow]'" in result.output.replace("\n", "")


def test_tracking_section_is_validated_and_ignored_on_resume():
    from trainer.config import load_config
    from trainer.errors import ConfigError
    from trainer.run.checkpoint import config_differences

    with pytest.raises(ConfigError, match="tracking.mlflow.experiment"):
        load_config(None, ["tracking.mlflow.experiment=''"])
    with pytest.raises(ConfigError, match="tracking.mlflow.urls"):
        load_config(None, ["tracking.mlflow.urls=x"])
    old = load_config(None, []).to_dict()
    assert config_differences(old, load_config(None, ["tracking.mlflow.uri=http://h:5000"]).to_dict()) == []


def test_flatten_gives_dotted_keys():
    from trainer.integrations.mlflow import flatten

    assert flatten({"a": {"b": 1, "c": [16, 8]}, "callbacks": [{"name": "x", "p": None}], "s": "t"}) == {
        "a.b": "1", "a.c": "[16, 8]", "callbacks.0.name": "x", "callbacks.0.p": "null", "s": "t",
    }


# -- issue 19: credentials masked, run directories untrusted, every connection bounded ---------------------------

import http.server  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sqlite3  # noqa: E402
import threading  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SECRET = "pw-S3CRET-x9"
RUN_ID = "0123456789abcdef0123456789abcdef"


def closed_port_uri(template: str = "http://127.0.0.1:{port}") -> str:
    return template.format(port=free_port())  # nothing listens there


def write_tracking_json(run_dir: Path, uri: str, run_id: str = RUN_ID, **extra) -> Path:
    path = run_dir / "tracking.json"
    path.write_text(json.dumps({"mlflow": {"run_id": run_id, "experiment_id": "1", "tracking_uri": uri, **extra}}))
    return path


@pytest.mark.parametrize(
    "template",
    [
        "http://ann:" + SECRET + "@127.0.0.1:{port}",
        "https://" + SECRET + "@127.0.0.1:{port}",
        "http://127.0.0.1:{port}/?token=" + SECRET,
        "nosuchscheme://ann:" + SECRET + "@x/y?password=" + SECRET,
    ],
)
def test_credentials_in_a_bad_tracking_uri_are_masked_in_the_error(cli, write_config, tmp_path, template):
    config = tiny_config(tmp_path / "absent.npz", output={"dir": str(tmp_path / "outputs")}, tracking={"mlflow": {"uri": closed_port_uri(template)}})
    result = cli("run", write_config(config))
    assert result.exit_code == 2, result.output
    assert "tracking.mlflow.uri" in result.unwrapped and "***" in result.unwrapped
    assert SECRET not in result.unwrapped and "Traceback" not in result.output


def test_a_masked_credential_in_the_tracking_uri_is_refused_by_name(cli, write_config, tmp_path):
    """A URI copied from a notice or a stored config.yaml holds ``***``: sending it as the password is never right."""
    config = tiny_config(tmp_path / "absent.npz", tracking={"mlflow": {"uri": closed_port_uri("http://ann:***@127.0.0.1:{port}")}})
    result = cli("run", write_config(config))
    assert result.exit_code == 2
    assert "tracking.mlflow.uri" in result.unwrapped and "masked credential" in result.text
    assert "MLFLOW_TRACKING_PASSWORD" in result.unwrapped


def test_tracking_json_reader_masks_the_uri_and_reads_the_fields(tmp_path):
    from trainer.readers.tracking_files import read_tracking

    assert read_tracking(tmp_path) is None  # an untracked run
    write_tracking_json(tmp_path, f"http://ann:{SECRET}@h:5000", parent_run_id="p1")
    entry = read_tracking(tmp_path)
    assert entry.run_id == RUN_ID and entry.experiment_id == "1" and entry.parent_run_id == "p1"
    assert entry.tracking_uri == "http://ann:***@h:5000"


@pytest.mark.parametrize(
    "content, field",
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON list"),
        ('{"mlflow": {"experiment_id": "1", "tracking_uri": "sqlite:///x.db"}}', "mlflow.run_id"),
        ('{"mlflow": {"run_id": "../../etc", "experiment_id": "1", "tracking_uri": "sqlite:///x.db"}}', "mlflow.run_id"),
        ('{"mlflow": {"run_id": "%s", "experiment_id": 1, "tracking_uri": "sqlite:///x.db"}}' % RUN_ID, "mlflow.experiment_id"),
        ('{"mlflow": {"run_id": "%s", "experiment_id": "1", "tracking_uri": "http://h\\u001b[2J"}}' % RUN_ID, "mlflow.tracking_uri"),
        ('{"mlflow": {"run_id": "%s", "experiment_id": "1", "tracking_uri": "%s"}}' % (RUN_ID, "x" * 5000), "mlflow.tracking_uri"),
        ('{"mlflow": {"run_id": "%s", "experiment_id": "1", "tracking_uri": "sqlite:///a\u202edb.x"}}' % RUN_ID, "mlflow.tracking_uri"),
        ('{"mlflow": {"run_id": "%s", "experiment_id": "1", "tracking_uri": "u", "extra": 1}}' % RUN_ID, "mlflow.extra"),
        ('{"mlflow": {"run_id": "%s", "experiment_id": "1", "tracking_uri": "u"}, "x": 1}' % RUN_ID, "x"),
        ('{"mlflow": {"run_id": "%s", "experiment_id": "1", "tracking_uri": "u"}}' % RUN_ID + " " * 70_000, "bytes"),
    ],
)
def test_tracking_json_reader_refuses_what_trainer_does_not_write(tmp_path, content, field):
    from trainer.errors import RunDirError
    from trainer.readers.tracking_files import read_tracking

    (tmp_path / "tracking.json").write_text(content)
    with pytest.raises(RunDirError, match="tracking.json") as caught:
        read_tracking(tmp_path)
    assert field in caught.value.message


def test_tracking_json_reader_refuses_links_out_and_fifos(tmp_path):
    from trainer.errors import RunDirError
    from trainer.readers.tracking_files import read_tracking

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    outside = write_tracking_json(tmp_path, "sqlite:///x.db")
    (run_dir / "tracking.json").symlink_to(outside)
    with pytest.raises(RunDirError, match="outside"):
        read_tracking(run_dir)
    (run_dir / "tracking.json").unlink()
    os.mkfifo(run_dir / "tracking.json")
    with pytest.raises(RunDirError, match="not a regular file"):
        read_tracking(run_dir)


@pytest.fixture
def no_connections(monkeypatch):
    """Any socket connection or SQLite database opened fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a connection was attempted: {args[1:] or args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(sqlite3, "connect", refuse)


_VALID = {"mlflow": {"run_id": RUN_ID, "experiment_id": "1", "tracking_uri": "http://ann:pw@127.0.0.1:9/"}}
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12,
)


@st.composite
def mutated_tracking_json(draw) -> bytes:
    """A valid tracking.json changed one of several ways: bytes flipped, cut, a field replaced, dropped or added."""
    data = json.loads(json.dumps(_VALID))
    how = draw(st.sampled_from(["bytes", "cut", "replace", "drop", "add", "top"]))
    entry = data["mlflow"]
    if how == "replace":
        entry[draw(st.sampled_from(sorted(entry)))] = draw(_JSON)
    elif how == "drop":
        entry.pop(draw(st.sampled_from(sorted(entry))))
    elif how == "add":
        entry[draw(st.text(max_size=12))] = draw(_JSON)
    elif how == "top":
        data = draw(_JSON)
    raw = json.dumps(data).encode()
    if how == "bytes":
        position = draw(st.integers(0, len(raw) - 1))
        raw = raw[:position] + draw(st.binary(min_size=1, max_size=4)) + raw[position + 1:]
    elif how == "cut":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    return raw


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=mutated_tracking_json())
def test_mutated_tracking_json_never_connects_and_never_raises_anything_but_exit_2(tmp_path, no_connections, content):
    from trainer.errors import BadInputError
    from trainer.integrations.mlflow import evaluation_hint, open_tracked_run

    (tmp_path / "tracking.json").write_bytes(content)
    hint = evaluation_hint(tmp_path)  # what eval says when it is not asked to log: never raises
    assert hint is None or isinstance(hint, str)
    with pytest.raises(BadInputError):  # asked, with a store that is not there: refused before connecting
        open_tracked_run(tmp_path, f"sqlite:///{tmp_path / 'absent.db'}", "--mlflow")
    assert not (tmp_path / "absent.db").exists()


@pytest.fixture(scope="module")
def plain_run(data, tmp_path_factory) -> Path:
    """A finished run trained without tracking; tests copy it and add a tracking.json of their own."""
    import trainer

    root = tmp_path_factory.mktemp("plain-run")
    return trainer.train(write(root / "config.yaml", tiny_config(data, output={"dir": str(root / "outputs")})), run_dir=root / "run").run_dir


def hostile_copy(plain_run: Path, tmp_path: Path, uri: str) -> Path:
    """The run copied, its config.yaml claiming tracking and its tracking.json naming ``uri``: a run directory anyone could have written."""
    run_dir = tmp_path / "run"
    shutil.copytree(plain_run, run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["tracking"] = {"mlflow": {"uri": None}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    write_tracking_json(run_dir, uri)
    return run_dir


@pytest.mark.slow
def test_eval_never_opens_the_database_a_run_directory_names(cli, plain_run, tmp_path):
    unrelated = tmp_path / "accounts.db"
    with sqlite3.connect(unrelated) as db:
        db.execute("create table users (name text)")
    run_dir = hostile_copy(plain_run, tmp_path, f"sqlite:///{unrelated}")
    result = cli("eval", run_dir)
    assert result.exit_code == 0, result.output
    assert (run_dir / "eval-test.json").is_file()
    with sqlite3.connect(unrelated) as db:
        assert [row[0] for row in db.execute("select name from sqlite_master where type='table'")] == ["users"]
    assert "not logged to MLflow" in result.text and f"--mlflow sqlite:///{unrelated}" in result.unwrapped


@pytest.mark.slow
def test_eval_of_a_run_tracked_to_a_gone_server_does_not_wait(cli, plain_run, tmp_path):
    uri = closed_port_uri()
    run_dir = hostile_copy(plain_run, tmp_path, uri)
    started = time.monotonic()
    result = cli("eval", run_dir)
    assert result.exit_code == 0, result.output
    assert "not logged to MLflow" in result.text and (run_dir / "eval-test.json").is_file()
    (run_dir / "eval-test.json").unlink()
    asked = cli("eval", run_dir, "--mlflow", uri)  # asked for explicitly: exit 2 at once, before evaluating
    assert asked.exit_code == 2, asked.output
    assert "--mlflow" in asked.unwrapped and "cannot reach the MLflow server" in asked.text
    assert not (run_dir / "eval-test.json").exists() and "Traceback" not in asked.output
    assert time.monotonic() - started < 60


class _UnavailableBehindAProxy(http.server.BaseHTTPRequestHandler):
    """A proxy whose health check answers while the tracking server behind it is gone (503: MLflow retries for minutes)."""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200 if self.path.startswith("/health") else 503)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_eval_against_a_server_that_stops_answering_gives_up_within_its_bound(cli, plain_run, tmp_path, monkeypatch):
    import trainer.integrations.mlflow as tracking

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _UnavailableBehindAProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(tracking, "CALL_SECONDS", 3.0)
    try:
        run_dir = hostile_copy(plain_run, tmp_path, uri)
        started = time.monotonic()
        result = cli("eval", run_dir, "--mlflow", uri)
        assert time.monotonic() - started < 30
    finally:
        server.shutdown()
    assert result.exit_code == 2, result.output
    assert "did not answer within 3 s" in result.text and "Traceback" not in result.output


@pytest.mark.slow
def test_eval_refuses_a_named_store_that_is_not_the_runs(cli, plain_run, tmp_path):
    run_dir = hostile_copy(plain_run, tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")
    other = tmp_path / "other.db"
    result = cli("eval", run_dir, "--mlflow", f"sqlite:///{other}")
    assert result.exit_code == 2, result.output
    assert f"sqlite:///{other}" in result.unwrapped and f"sqlite:///{tmp_path / 'mlflow.db'}" in result.unwrapped
    assert not other.exists() and not (run_dir / "eval-test.json").exists()
    missing = cli("eval", run_dir, "--mlflow", f"sqlite:///{tmp_path / 'mlflow.db'}")  # the right name, but no store there
    assert missing.exit_code == 2 and "no MLflow store" in missing.text
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_eval_adds_its_report_when_the_store_is_named_with_set(cli, completed_run):
    backend, root, result = completed_run
    if backend != "sqlite":
        pytest.skip("the SQLite-tracked run")
    uri = f"sqlite:///{(root / 'outputs').resolve() / 'mlflow.db'}"
    evaluation = cli("eval", result.run_dir, "--split", "train", "--set", f"tracking.mlflow.uri={uri}")
    assert evaluation.exit_code == 0, evaluation.output
    client, run_id = client_for_uri(uri, result.run_dir)
    assert "eval_train_accuracy" in client.get_run(run_id).data.metrics


def client_for_uri(uri: str, run_dir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri), json.loads((run_dir / "tracking.json").read_text())["mlflow"]["run_id"]


@pytest.mark.slow
def test_credentials_in_the_tracking_uri_are_never_shown_stored_or_logged(cli, data, tmp_path, mlflow_server, write_config):
    port = mlflow_server.rsplit(":", 1)[1]
    uri = f"http://ann:{SECRET}@127.0.0.1:{port}"
    config = tracked_config(data, tmp_path, uri)
    run_dir = tmp_path / "run"
    result = cli("run", write_config(config), "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output and f"http://ann:***@127.0.0.1:{port}" in result.unwrapped
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    stored = json.loads((run_dir / "tracking.json").read_text())["mlflow"]
    assert stored["tracking_uri"] == f"http://ann:***@127.0.0.1:{port}"
    client, run_id = client_for_uri(mlflow_server, run_dir)
    run = client.get_run(run_id)
    assert run.data.params["tracking.mlflow.uri"] == f"http://ann:***@127.0.0.1:{port}"
    assert not [value for value in [*run.data.params.values(), *run.data.tags.values()] if SECRET in value]
    # a later command finds the run again from the masked record plus the credentials the user gives again
    masked = cli("eval", run_dir, "--mlflow", stored["tracking_uri"])
    assert masked.exit_code == 2 and "masked credential" in masked.text
    evaluation = cli("eval", run_dir, "--mlflow", uri)
    assert evaluation.exit_code == 0, evaluation.output
    assert f"logged to MLflow run {run_id}" in evaluation.text and SECRET not in evaluation.output
    assert "eval_test_accuracy" in client.get_run(run_id).data.metrics


def test_a_config_error_that_repeats_a_tracking_uri_masks_its_credentials(cli, write_config, tmp_path):
    config = write_config(tiny_config(tmp_path / "absent.npz"))
    result = cli("validate", config, "--set", f"tracking.mlflow={{uri: 'http://ann:{SECRET}@h:5000', experiment: ''}}")
    assert result.exit_code == 2
    assert "http://ann:***@h:5000" in result.unwrapped and SECRET not in result.output


@pytest.mark.slow
def test_eval_with_a_config_that_names_tracking_goes_on_when_it_cannot_log(cli, plain_run, tmp_path, data):
    """Tracking named only by the user's --config is optional: one notice, the report written, exit 0."""
    uri = closed_port_uri()
    run_dir = hostile_copy(plain_run, tmp_path, uri)
    own = write(tmp_path / "mine.yaml", tiny_config(data, tracking={"mlflow": {"uri": uri}}))
    result = cli("eval", run_dir, "--config", own)
    assert result.exit_code == 0, result.output
    assert "not logged to MLflow" in result.text and "cannot reach the MLflow server" in result.text
    assert (run_dir / "eval-test.json").is_file()
    (run_dir / "tracking.json").unlink()  # an untracked run: a notice, not an error
    untracked = cli("eval", run_dir, "--config", own)
    assert untracked.exit_code == 0 and "tracking.jsonismissing" in "".join(untracked.output.split())  # Rich may fold the path anywhere
