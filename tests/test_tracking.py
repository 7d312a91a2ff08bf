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
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        log.close()
        pytest.skip(f"mlflow server did not start within 90 s: {(root / 'server.log').read_text(errors='replace')[-500:]}")
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
        evaluation = CliRunner().invoke(app, ["eval", str(result.run_dir)])
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
