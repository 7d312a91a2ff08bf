"""Beyond one device: the distribute block resolved from config / environment / Slurm, the bounded
rendezvous, a real two-process multi_worker run on 127.0.0.1, mirrored on two logical CPUs, and
run / eval / predict on the JAX backend (subprocesses: the backend and devices are fixed at start-up).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from tests.conftest import tiny_config
from tests.datagen import write_mnist_npz
from trainer.runtime.distribute import (
    CoordinatorError,
    backend_environment,
    check_backend_installed,
    choose_backend,
    first_slurm_host,
    parse_coordinator,
    rendezvous,
    resolve_distribute,
)
from trainer.errors import BadInputError, ConfigError

RUN_FILES = {"config.yaml", "manifest.json", "model.h5", "last.h5", "history.csv", "metrics.json", "checkpoint.json", "curves.png", "report.html"}


def section(strategy="multi_worker", coordinator=None, num_processes=None, process_id=None, timeout_seconds=5.0):
    return SimpleNamespace(
        strategy=strategy, coordinator=coordinator, num_processes=num_processes, process_id=process_id, timeout_seconds=timeout_seconds
    )


def free_port() -> int:
    """A port with its neighbour free too (the rendezvous uses port+1)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port >= 65534:
            continue
        with socket.socket() as neighbour:
            try:
                neighbour.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of ports")


# --------------------------------------------------------------------------- resolution (no TensorFlow)


def test_config_then_trainer_variables_then_slurm():
    env = {
        "TRAINER_COORDINATOR": "10.0.0.9:4000", "TRAINER_NUM_PROCESSES": "4",
        "SLURM_NTASKS": "8", "SLURM_PROCID": "3", "SLURM_STEP_NODELIST": "gpu[07-09]", "SLURM_JOB_ID": "123456",
    }
    setup = resolve_distribute(section(process_id=1), env)
    assert setup.coordinator == ("10.0.0.9", 4000) and setup.num_processes == 4 and setup.process_id == 1
    assert setup.sources == {"coordinator": "TRAINER_COORDINATOR", "num_processes": "TRAINER_NUM_PROCESSES", "process_id": "config"}
    assert not setup.is_chief

    slurm = resolve_distribute(section(), {k: v for k, v in env.items() if not k.startswith("TRAINER_")})
    assert slurm.coordinator == ("gpu07", 20000 + 123456 % 10000) and slurm.num_processes == 8 and slurm.process_id == 3
    ported = resolve_distribute(section(), {**slurm_env(), "TRAINER_COORDINATOR_PORT": "29500"})
    assert ported.coordinator == ("node1", 29500) and ported.is_chief


def slurm_env():
    return {"SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_JOB_NODELIST": "node1,node2"}


@pytest.mark.parametrize(
    "nodelist, first",
    [("node01", "node01"), ("node[03-05,9]", "node03"), ("gpu[12,4],cpu1", "gpu12"), ("a-b-c[007-010]", "a-b-c007"), ("n1,n2", "n1")],
)
def test_first_slurm_host(nodelist, first):
    assert first_slurm_host(nodelist) == first


def test_missing_and_out_of_range_settings_name_the_key():
    with pytest.raises(ConfigError) as missing:
        resolve_distribute(section(num_processes=2), {})
    assert "distribute.coordinator (or TRAINER_COORDINATOR)" in missing.value.message
    assert "distribute.process_id (or TRAINER_PROCESS_ID)" in missing.value.message
    assert "num_processes" not in missing.value.message.split("needs")[1].split(";")[0]
    with pytest.raises(ConfigError, match=r"distribute.process_id \(from TRAINER_PROCESS_ID\): 2 is out of range.*0\.\.1"):
        resolve_distribute(section(coordinator="h:1"), {"TRAINER_NUM_PROCESSES": "2", "TRAINER_PROCESS_ID": "2"})
    with pytest.raises(ConfigError, match="TRAINER_NUM_PROCESSES.*'two' is not a whole number"):
        resolve_distribute(section(coordinator="h:1", process_id=0), {"TRAINER_NUM_PROCESSES": "two"})
    with pytest.raises(ConfigError, match="TRAINER_COORDINATOR.*not HOST:PORT"):
        resolve_distribute(section(num_processes=1, process_id=0), {"TRAINER_COORDINATOR": "nohost"})
    none = resolve_distribute(section(strategy="mirrored", num_processes=2), {"TRAINER_NUM_PROCESSES": "9"})
    assert none.num_processes == 1 and "only apply to strategy multi_worker" in none.notices[0]


@pytest.mark.parametrize("text, parsed", [("127.0.0.1:29500", ("127.0.0.1", 29500)), ("node-7.cluster:80", ("node-7.cluster", 80)), ("[::1]:9", ("::1", 9))])
def test_parse_coordinator(text, parsed):
    assert parse_coordinator(text) == parsed


@pytest.mark.parametrize("text", ["localhost", ":80", "h:0", "h:65535", "h:p", "a b:1"])
def test_parse_coordinator_refuses(text):
    with pytest.raises(ConfigError, match="distribute.coordinator"):
        parse_coordinator(text)


def test_config_file_validates_the_block(write_config):
    from trainer.config import load_config

    config = load_config(write_config({"distribute": {"strategy": "multi_worker", "coordinator": "h:1", "num_processes": 2, "process_id": 1}}))
    assert config.distribute.process_id == 1 and config.to_dict()["distribute"]["timeout_seconds"] == 120.0


@pytest.mark.parametrize(
    "bad, needle",
    [
        ({"strategy": "horovod"}, "distribute.strategy"),
        ({"coordinator": "nohost"}, "distribute.coordinator: 'nohost' is not HOST:PORT"),
        ({"num_processes": 2, "process_id": 2}, "process_id 2 is out of range"),
        ({"num_processes": 0}, "distribute.num_processes"),
    ],
)
def test_config_file_refuses_a_bad_block(write_config, bad, needle):
    from trainer.config import load_config

    with pytest.raises(ConfigError) as error:
        load_config(write_config({"distribute": bad}, "bad.yaml"))
    assert needle in str(error.value)


def test_backend_choice():
    assert choose_backend("none", {}) == ("tensorflow", None)
    assert choose_backend("mirrored", {"KERAS_BACKEND": "jax"}) == ("jax", None)
    backend, notice = choose_backend("multi_worker", {})
    assert backend == "jax" and "KERAS_BACKEND=jax" in notice
    with pytest.raises(BadInputError, match="not supported on the tensorflow backend.*KERAS_BACKEND=jax"):
        choose_backend("multi_worker", {"KERAS_BACKEND": "tensorflow"})
    assert choose_backend("none", {"KERAS_BACKEND": "torch"}) == ("torch", None)
    with pytest.raises(BadInputError, match="KERAS_BACKEND=mxnet: trainer supports tensorflow, jax, torch"):
        choose_backend("none", {"KERAS_BACKEND": "mxnet"})
    with pytest.raises(BadInputError, match="already running on tensorflow"):
        choose_backend("multi_worker", {}, loaded_backend="tensorflow")
    with pytest.raises(BadInputError, match=r"jax and jaxlib are not installed; run pip install -e '\.\[jax\]'"):
        check_backend_installed("jax", find_spec=lambda name: None)
    check_backend_installed("tensorflow", find_spec=lambda name: object())
    assert backend_environment("jax", {"TRAINER_CPU_DEVICES": "2", "XLA_FLAGS": "--x=1"}) == {
        "KERAS_BACKEND": "jax", "XLA_FLAGS": "--x=1 --xla_force_host_platform_device_count=2",
    }
    assert backend_environment("tensorflow", {"TRAINER_CPU_DEVICES": "2"}) == {}


# --------------------------------------------------------------------------- the bounded rendezvous


def test_rendezvous_meets_and_times_out():
    port = free_port()
    setups = [resolve_distribute(section(coordinator=f"127.0.0.1:{port}", num_processes=3, process_id=i, timeout_seconds=20), {}) for i in range(3)]
    errors: list[BaseException] = []

    def join(setup):
        try:
            rendezvous(setup)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=join, args=(s,)) for s in reversed(setups)]  # workers first: they retry
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join(30)
    assert not errors and not any(t.is_alive() for t in threads)

    lonely = resolve_distribute(section(coordinator=f"127.0.0.1:{free_port()}", num_processes=2, process_id=0), {})
    with pytest.raises(CoordinatorError, match="only 1 of 2 processes arrived within 0.5 s"):
        rendezvous(lonely, timeout_seconds=0.5)
    worker = resolve_distribute(section(coordinator=f"127.0.0.1:{free_port()}", num_processes=2, process_id=1), {})
    with pytest.raises(CoordinatorError, match="unreachable"):
        rendezvous(worker, timeout_seconds=0.5)


# --------------------------------------------------------------------------- real processes


def trainer_command(*args) -> list[str]:
    return [sys.executable, "-m", "trainer", *[str(a) for a in args]]


def backend_env(base: dict[str, str], backend: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS", "TRAINER_CPU_DEVICES") and not k.startswith(("TRAINER_", "SLURM_"))}
    if backend:
        env["KERAS_BACKEND"] = backend
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    """One single-process JAX run (3 epochs) of the tiny config: the baseline for multi_worker, the subject of eval/predict."""
    root = tmp_path_factory.mktemp("jax")
    data = write_mnist_npz(root / "mnist.npz", n_train=256, n_test=64, seed=0)
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data, train={"epochs": 3, "batch_size": 32})))
    from tests.conftest import REPO_ROOT

    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(trainer_command("run", config, "--run-dir", root / "single"), env=backend_env(env, "jax"), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return SimpleNamespace(root=root, data=data, config=config, run_dir=root / "single", env=env)


@pytest.mark.slow
def test_jax_backend_run_eval_predict(jax_run, tmp_path):
    metrics = json.loads((jax_run.run_dir / "metrics.json").read_text())
    assert metrics["distribute"] == {**metrics["distribute"], "strategy": "none", "backend": "jax", "processes": 1, "replicas": 1}
    assert metrics["versions"]["jax"] and "(JAX, float32)" in metrics["device"]["description"] and metrics["device"]["backend"] == "jax"
    assert metrics["test"]["accuracy"] > 0.8

    env = backend_env(jax_run.env, "jax")
    evaluated = subprocess.run(trainer_command("eval", jax_run.run_dir, "--output", tmp_path / "eval.json"), env=env, capture_output=True, text=True, timeout=180)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)

    images = np.load(jax_run.data)["x_test"][:5]
    np.save(tmp_path / "five.npy", images)
    predicted = subprocess.run(
        trainer_command("predict", jax_run.run_dir, tmp_path / "five.npy", "--output", tmp_path / "p.json"), env=env, capture_output=True, text=True, timeout=180
    )
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    records = json.loads((tmp_path / "p.json").read_text())
    records = records if isinstance(records, list) else records["predictions"]
    expected = np.load(jax_run.data)["y_test"][:5]
    assert [r["predicted"] for r in records] == [int(v) for v in expected]


@pytest.mark.slow
def test_two_process_multi_worker_matches_one_process(jax_run, tmp_path):
    port = free_port()
    run_dir = tmp_path / "shared-run"
    scratch = tmp_path / "worker-tmp"
    scratch.mkdir()
    common = ["--set", "distribute.strategy=multi_worker", "--set", "distribute.timeout_seconds=60"]
    # no KERAS_BACKEND: multi_worker picks JAX. Process 0 from the config, process 1 from TRAINER_* variables.
    chief = subprocess.Popen(
        trainer_command("run", jax_run.config, "--run-dir", run_dir, *common, "--set", f"distribute.coordinator=127.0.0.1:{port}",
                        "--set", "distribute.num_processes=2", "--set", "distribute.process_id=0"),
        env=backend_env(jax_run.env, None), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    worker = subprocess.Popen(
        trainer_command("run", jax_run.config, "--run-dir", run_dir, *common),
        env=backend_env(jax_run.env, None, TRAINER_COORDINATOR=f"127.0.0.1:{port}", TRAINER_NUM_PROCESSES="2", TRAINER_PROCESS_ID="1", TMPDIR=str(scratch)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        outputs = [process.communicate(timeout=240)[0] for process in (chief, worker)]
    finally:
        for process in (chief, worker):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert chief.returncode == 0 and worker.returncode == 0, "\n---\n".join(outputs)
    assert "multi_worker runs on the JAX backend" in outputs[0]
    assert "process 1 of 2 finished; process 0 writes the run directory" in outputs[1]

    assert {p.name for p in run_dir.iterdir()} == {p.name for p in jax_run.run_dir.iterdir()} <= RUN_FILES | {"checkpoint-epoch0003.weights.npz"}
    assert list(scratch.iterdir()) == []  # the worker's private scratch folder is gone too
    metrics = json.loads((run_dir / "metrics.json").read_text())
    single = json.loads((jax_run.run_dir / "metrics.json").read_text())
    assert metrics["distribute"]["strategy"] == "multi_worker" and metrics["distribute"]["backend"] == "jax"
    assert metrics["distribute"]["processes"] == 2 and metrics["distribute"]["replicas"] == 2 and metrics["distribute"]["process_id"] == 0
    # the same global batches in the same order: the same model as one process, up to float reduction order
    assert metrics["train"]["loss"] == pytest.approx(single["train"]["loss"], rel=1e-3, abs=1e-4)
    assert metrics["test"]["accuracy"] >= single["test"]["accuracy"] - 0.02
    assert metrics["test"]["loss"] == pytest.approx(single["test"]["loss"], rel=1e-2, abs=1e-3)


def test_unreachable_coordinator_is_a_bounded_exit_2(mnist_npz, write_config, subprocess_env):
    config = write_config(tiny_config(mnist_npz))
    port = free_port()
    done = subprocess.run(
        trainer_command("run", config, "--set", "distribute.strategy=multi_worker", "--set", "distribute.timeout_seconds=1"),
        env=backend_env(subprocess_env, None, TRAINER_COORDINATOR=f"127.0.0.1:{port}", TRAINER_NUM_PROCESSES="2", TRAINER_PROCESS_ID="1"),
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"127.0.0.1:{port} (from TRAINER_COORDINATOR) unreachable" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_multi_worker_refuses_tensorflow_backend(mnist_npz, write_config, subprocess_env):
    config = write_config(tiny_config(mnist_npz, distribute={"strategy": "multi_worker", "coordinator": "127.0.0.1:1", "num_processes": 1, "process_id": 0}))
    done = subprocess.run(trainer_command("run", config), env=backend_env(subprocess_env, "tensorflow"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "set KERAS_BACKEND=jax" in done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_mirrored_on_two_logical_cpus(backend, mnist_npz, write_config, subprocess_env, tmp_path):
    config = write_config(tiny_config(mnist_npz, train={"epochs": 3}, distribute={"strategy": "mirrored"}))
    done = subprocess.run(
        trainer_command("run", config, "--run-dir", tmp_path / "run"), env=backend_env(subprocess_env, backend, TRAINER_CPU_DEVICES="2"),
        capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["distribute"]["strategy"] == "mirrored" and metrics["distribute"]["backend"] == backend
    assert metrics["distribute"]["processes"] == 1 and metrics["distribute"]["replicas"] == 2
    assert metrics["test"]["accuracy"] > 0.8
