"""Every connection check to a store trainer did not start is bounded: a few seconds and one line, whatever the scheme.

MLflow's database store retries a failing engine ~100 s, a driver waits for the TCP timeout;
``trainer.integrations.store_probe`` checks a database directly (TCP, then one driver connection
with a timeout) and SQLite paths on disk, before MLflow or Optuna get the URL. Closed ports are
local (127.0.0.1, a port nothing listens on); a "silent server" accepts TCP and never answers.
"""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from tests.conftest import tiny_config
from trainer.errors import BadInputError, ConfigError

PASSWORD = "Pa#Secret1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    return free_port()  # nothing listens there


@pytest.fixture
def silent_port():
    """A TCP server on 127.0.0.1 that accepts connections and never says a word (a hung database)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    server.close()


def one_line(message: str) -> bool:
    return "\n" not in message.strip()


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg", "mysql", "mysql+pymysql", "mssql+pyodbc", "cockroachdb"])
def test_a_closed_database_port_is_refused_in_seconds(scheme, closed_port):
    from trainer.integrations.store_probe import probe_database

    url = f"{scheme}://ann:{PASSWORD}@127.0.0.1:{closed_port}/db"
    started = time.monotonic()
    with pytest.raises(BadInputError) as caught:
        probe_database(url, "--storage")
    assert time.monotonic() - started < 10
    message = caught.value.message
    assert message.startswith("--storage: cannot reach the database of") and "refused" in message
    assert PASSWORD not in message and "Secret1" not in message and one_line(message)


def test_a_name_that_does_not_resolve_is_refused_in_seconds():
    from trainer.integrations.store_probe import probe_database

    started = time.monotonic()
    with pytest.raises(BadInputError, match="does not resolve"):
        probe_database(f"postgresql://ann:{PASSWORD}@no-such-host.invalid/db", "--storage")
    assert time.monotonic() - started < 10


@pytest.mark.slow  # waits for the driver's connect_timeout
def test_a_server_that_accepts_and_never_answers_is_refused_in_seconds(silent_port):
    from trainer.integrations.store_probe import probe_database

    started = time.monotonic()
    with pytest.raises(BadInputError) as caught:
        probe_database(f"postgresql://ann:{PASSWORD}@127.0.0.1:{silent_port}/db", "tracking.mlflow.uri", seconds=2)
    assert time.monotonic() - started < 10
    assert "cannot connect to the database" in caught.value.message and PASSWORD not in caught.value.message


@pytest.mark.parametrize("where", ["under-a-file", "not-a-file"])
def test_an_unusable_sqlite_path_is_refused_at_once(where, tmp_path):
    from trainer.integrations.store_probe import probe_database

    (tmp_path / "file").write_text("x")
    (tmp_path / "folder.db").mkdir()
    path = tmp_path / "file" / "mlflow.db" if where == "under-a-file" else tmp_path / "folder.db"
    with pytest.raises(ConfigError, match="tracking.mlflow.uri"):
        probe_database(f"sqlite:///{path}", "tracking.mlflow.uri", ConfigError)


def test_other_schemes_pass_the_probe_untouched(tmp_path):
    from trainer.integrations.store_probe import probe_database

    for url in (f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}", "databricks://profile", "http://127.0.0.1:9", str(tmp_path / "journal.log")):
        probe_database(url, "key")  # no exception: the caller bounds these otherwise
    assert not (tmp_path / "new").exists()


def test_within_bounds_any_call():
    from trainer.threads import within

    started = time.monotonic()
    with pytest.raises(BadInputError, match="gave up"):
        within(0.5, lambda: time.sleep(30), "gave up")
    assert time.monotonic() - started < 5
    assert within(5, lambda: 7, "x") == 7
    with pytest.raises(ZeroDivisionError):
        within(5, lambda: 1 / 0, "x")


# --------------------------------------------------------------------------- through the commands


@pytest.mark.slow
@pytest.mark.parametrize("template", ["postgresql://ann:{pw}@127.0.0.1:{port}/db", "mysql+pymysql://ann:{pw}@127.0.0.1:{port}/db"])
def test_trainer_run_with_an_unreachable_database_tracking_store(template, cli, write_config, tmp_path, closed_port):
    pytest.importorskip("mlflow")
    uri = template.format(pw=PASSWORD, port=closed_port)
    config = tiny_config(tmp_path / "absent.npz", output={"dir": str(tmp_path / "outputs")}, tracking={"mlflow": {"uri": uri}})
    path = write_config(config)
    started = time.monotonic()
    result = cli("run", path)
    elapsed = time.monotonic() - started
    assert result.exit_code == 2, result.output
    assert elapsed < 40, elapsed  # was ~106 s in MLflow's retry loop; the probe itself is timed above (imports are here)
    assert "tracking.mlflow.uri: cannot reach the database of" in result.text
    assert PASSWORD not in result.output and "Secret1" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not list((tmp_path / "outputs").glob("tiny-*"))


@pytest.mark.slow
def test_trainer_sweep_with_an_unreachable_storage(cli, write_config, tmp_path, closed_port):
    pytest.importorskip("optuna")
    config = tiny_config(tmp_path / "absent.npz", data={"validation": 0.2}, output={"dir": str(tmp_path / "outputs")}, sweep={
        "trials": 2, "space": {"optimizer.learning_rate": {"float": [1e-4, 1e-2]}}})
    started = time.monotonic()
    result = cli("sweep", write_config(config), "--storage", f"postgresql://ann:{PASSWORD}@127.0.0.1:{closed_port}/db")
    assert result.exit_code == 2, result.output
    assert time.monotonic() - started < 60  # trainer sweep imports TensorFlow before it opens the storage (seconds on a loaded machine)
    assert "--storage: cannot reach the database of postgresql://ann:***@127.0.0.1" in result.text
    assert "Secret1" not in result.output


def test_eval_mlflow_with_an_unreachable_database_is_bounded(tmp_path, closed_port):
    from trainer.integrations.mlflow import open_tracked_run, stored_uri
    from trainer.readers.tracking_files import tracking_record

    uri = f"postgresql://ann:{PASSWORD}@127.0.0.1:{closed_port}/db"
    (tmp_path / "tracking.json").write_text(json.dumps(tracking_record("0" * 32, "1", stored_uri(uri), None)))
    started = time.monotonic()
    with pytest.raises(BadInputError) as caught:
        open_tracked_run(tmp_path, uri, "--mlflow")
    assert time.monotonic() - started < 10
    assert caught.value.message.startswith("--mlflow: cannot reach the database") and "Secret1" not in caught.value.message


# --------------------------------------------------------------------------- every MLflow record ends in a final state


class FakeClient:
    """An MLflow client whose chosen calls fail; records what reached it."""

    def __init__(self, failing: set[str]):
        self.failing, self.calls = failing, []

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            if name in self.failing:
                raise OSError(f"{name} failed: Permission denied: 'mlartifacts'")
        return call


def ended_logger(tmp_path, failing: set[str], status: str = "completed", disabled: bool = False):
    from trainer.integrations.mlflow import MlflowLogger
    from trainer.run.events import RunResult

    (tmp_path / "model.h5").write_bytes(b"x")
    client = FakeClient(failing)
    logger = MlflowLogger(client, f"postgresql://ann:{PASSWORD}@db/x", "1")
    logger.run_id, logger.run_dir, logger.disabled = "0" * 32, tmp_path, disabled
    result = RunResult(status, tmp_path, metrics={"test": {"accuracy": 0.5}, "epochs_completed": 1})
    try:
        logger.on_run_end(result)
        raised = None
    except RuntimeError as exc:
        raised = exc
    return client, raised


def terminated(client) -> list[str]:
    return [kwargs.get("status") for name, _, kwargs in client.calls if name == "set_terminated"]


@pytest.mark.parametrize(
    "failing, status, expected",
    [
        (set(), "completed", "FINISHED"),
        ({"log_artifact"}, "completed", "FAILED"),
        ({"log_batch"}, "completed", "FAILED"),
        ({"set_tag"}, "completed", "FAILED"),
        ({"log_artifact"}, "interrupted", "KILLED"),
        ({"log_artifact"}, "failed", "FAILED"),
    ],
)
def test_the_mlflow_run_ends_whatever_fails_at_the_end(failing, status, expected, tmp_path):
    client, raised = ended_logger(tmp_path, failing, status)
    assert terminated(client) == [expected]
    assert (raised is None) == (not failing)  # one failure is reported, once
    if failing:
        assert PASSWORD not in str(raised)


def test_the_mlflow_run_ends_after_a_failure_mid_run(tmp_path):
    client, raised = ended_logger(tmp_path, set(), disabled=True)
    assert terminated(client) == ["FAILED"] and raised is None  # the mid-run failure was reported then
    assert not [c for c in client.calls if c[0] == "log_artifact"]


@pytest.mark.slow
def test_an_artifact_upload_failure_leaves_no_run_running(tmp_path, write_config, mnist_npz):
    """A real SQLite store whose artifact folder cannot be created: the run trains, warns once, and MLflow says FAILED."""
    pytest.importorskip("mlflow")
    import trainer
    from mlflow.tracking import MlflowClient

    outputs = tmp_path / "outputs"
    outputs.mkdir()
    (outputs / "mlartifacts").write_text("a file where the artifact folder would go")
    path = write_config(tiny_config(mnist_npz, output={"dir": str(outputs)}, tracking={"mlflow": {"experiment": "t"}}))
    with pytest.warns(RuntimeWarning, match="MLflow tracking at .* failed"):
        result = trainer.train(path)
    assert result.status == "completed" and len(result.event_errors) == 1
    stored = json.loads((result.run_dir / "tracking.json").read_text())["mlflow"]
    run = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow.db'}").get_run(stored["run_id"])
    assert run.info.status == "FAILED", run.info.status
    assert run.data.tags["status"] == "completed" and "tracking_error" in run.data.tags
    assert run.info.end_time is not None


# --------------------------------------------------------------------------- a real PostgreSQL with an awkward password

AWKWARD = "Pa#S e/c?r'e\"t:1"  # every character a regex-based mask stopped at, unescaped in the URL (SQLAlchemy reads it whole)


@pytest.fixture(scope="module")
def postgres_with_password(tmp_path_factory):
    """A throw-away PostgreSQL cluster on 127.0.0.1 with password authentication (scram) for the user postgres."""
    import os
    import shutil
    import subprocess

    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL's initdb and pg_ctl are not on PATH (install the postgresql server package)")
    pytest.importorskip("psycopg")
    as_postgres: list[str] = []
    folder = tmp_path_factory.mktemp("pg")
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root and runuser is missing")
        as_postgres = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
        os.chmod(folder, 0o700)
        for parent in list(folder.parents)[:3]:
            os.chmod(parent, os.stat(parent).st_mode | 0o011)  # let postgres reach its folder
    data, sockets, pwfile = folder / "data", folder / "sockets", folder / "pw"
    sockets.mkdir()
    pwfile.write_text(AWKWARD + "\n")
    if as_postgres:
        for path in (sockets, pwfile):
            shutil.chown(path, "postgres")
    port = free_port()
    try:
        subprocess.run([*as_postgres, initdb, "-D", str(data), "-U", "postgres", "--auth=scram-sha-256", f"--pwfile={pwfile}"],
                       check=True, capture_output=True, timeout=120)
        subprocess.run(
            [*as_postgres, pg_ctl, "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "60",
             "-o", f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
            check=True, capture_output=True, timeout=120,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"PostgreSQL did not start: {getattr(exc, 'stderr', b'')[-300:]!r}")
    yield port
    subprocess.run([*as_postgres, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)


@pytest.mark.slow
def test_a_real_database_with_an_awkward_password(postgres_with_password):
    from trainer.integrations.store_probe import probe_database
    from trainer.secrets import mask_url

    good = f"postgresql://postgres:{AWKWARD}@127.0.0.1:{postgres_with_password}/postgres"
    assert mask_url(good) == f"postgresql://postgres:***@127.0.0.1:{postgres_with_password}/postgres"
    probe_database(good, "--storage")  # the probe connects with the password as SQLAlchemy reads it
    wrong = good.replace("Pa#S", "Px#S")
    started = time.monotonic()
    with pytest.raises(BadInputError) as caught:
        probe_database(wrong, "--storage")
    assert time.monotonic() - started < 10
    message = caught.value.message
    assert "password authentication failed" in message and one_line(message)
    assert "Px#S" not in message and "e/c?r" not in message
