"""trainer sweep: the sweep section's checks, a sweep end to end, pruning, workers, resume, PostgreSQL."""
from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_config as plain_tiny_config


def tiny_config(data_path, **sections):
    """``tests.conftest.tiny_config`` with validation held out of the training data: a sweep refuses to optimise on the test split."""
    data = {"validation": 0.25, **sections.pop("data", {})}
    return plain_tiny_config(data_path, data=data, **sections)
from trainer.config.loading import parse_override
from trainer.config.sweep import format_value, override_text
from trainer.run.checkpoint import config_differences
from trainer.run.rundir import read_history

SPACE = {
    "optimizer.learning_rate": {"float": [1.0e-3, 3.0e-2], "log": True},
    "model.hidden_units": {"choice": [[8], [16, 8]]},
}


def sweep_config(data, **sweep):
    """A tiny config with a sweep section (2 epochs, so a pruner has a step to compare)."""
    section = {"trials": 3, "space": SPACE, **sweep}
    return tiny_config(data, train={"epochs": 2, "batch_size": 32}, sweep=section)


def flat(result) -> str:
    """The output with Rich's line breaks undone."""
    return " ".join(result.output.split())


def read_trials(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------- the section (fast, no TensorFlow)


@pytest.mark.parametrize(
    "space, expected",
    [
        ({"model.hiden_units": {"choice": [[8]]}}, ["sweep.space.model.hiden_units", "did you mean 'hidden_units'"]),
        ({"model.dropout": {"float": [0.0, 1.5]}}, ["sweep.space.model.dropout", "1.5", "less than 1"]),
        ({"train.batch_size": {"int": [0, 64], "step": 32}}, ["sweep.space.train.batch_size", "the value 0", "greater than 0"]),
        ({"model.activation": {"choice": ["relu", "rleu"]}}, ["sweep.space.model.activation", "'rleu'", "did you mean 'relu'"]),
        ({"traning.epochs": {"int": [1, 3]}}, ["sweep.space.traning.epochs", "did you mean 'train'"]),
        ({"model.dropout": {"float": [0.5, 0.1]}}, ["sweep.space.model.dropout", "empty"]),
        ({"optimizer.learning_rate": {"float": [0.0, 0.1], "log": True}}, ["log: true needs a low bound above 0"]),
        ({"model.dropout": {"flaot": [0.0, 0.5]}}, ["unknown key 'flaot'", "did you mean 'float'"]),
        ({"model.dropout": {"float": [0.0, 0.5], "int": [0, 1]}}, ["exactly one of"]),
        ({"model.dropout": {"choice": [0.1, 0.1]}}, ["repeat a value"]),
        ({"name": {"choice": ["a", "b"]}}, ["cannot search name"]),
    ],
)
def test_validate_refuses_a_bad_space_naming_the_key(cli, write_config, space, expected):
    path = write_config(tiny_config(None, sweep={"space": space}))
    result = cli("validate", path)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for text in expected:
        assert text in flat(result)


def test_validate_names_the_line_of_the_refused_key(cli, write_config):
    text = yaml.safe_dump(tiny_config(None), sort_keys=False) + "sweep:\n  space:\n    model.dropout: {float: [0.0, 2.0]}\n"
    path = write_config(text)
    line = text.splitlines().index("    model.dropout: {float: [0.0, 2.0]}") + 1
    result = cli("validate", path)
    assert result.exit_code == 2
    assert f"{path}:{line}: sweep.space.model.dropout" in flat(result)


@pytest.mark.parametrize(
    "sweep, expected",
    [
        ({"sampler": "grid", "space": SPACE}, "sampler: grid needs a finite set of values"),
        ({"metric": "val_loss", "space": SPACE}, "needs a validation split"),
        ({"sampler": "bayes", "space": SPACE}, "sweep.sampler"),
        ({"trials": 0, "space": SPACE}, "sweep.trials"),
        ({"trials": 3}, "sweep.space: required key is missing"),
    ],
)
def test_validate_refuses_bad_sweep_settings(cli, write_config, sweep, expected):
    path = write_config(tiny_config(None, data={"validation": "none"}, sweep=sweep))
    result = cli("validate", path)
    assert result.exit_code == 2, result.output
    assert expected in flat(result)


def test_validate_accepts_and_describes_a_sweep(cli, write_config):
    path = write_config(tiny_config(None, sweep={
        "trials": 5, "sampler": "grid", "space": {"model.hidden_units": {"choice": [[8], [16, 8]]}, "train.batch_size": {"int": [32, 96], "step": 32}},
    }))
    result = cli("validate", path)
    assert result.exit_code == 0, result.output
    assert "sweep: 5 trials over model.hidden_units, train.batch_size; maximize val_accuracy" in flat(result)


@pytest.mark.parametrize("value", [1.0e-5, 0.001, 3, True, None, "adam", [128, 64], {"name": "adam", "beta_1": 0.8}])
def test_a_sampled_value_survives_the_override_round_trip(value):
    key, parsed = parse_override(override_text("optimizer.learning_rate", value))
    assert key == ("optimizer", "learning_rate") and parsed == value
    assert format_value(1.0e-5) == "1.0e-05"  # PyYAML reads 1e-05 (no dot) as a string


def test_run_and_resume_ignore_the_sweep_section():
    old = tiny_config(None)
    new = tiny_config(None, sweep={"space": SPACE})
    assert config_differences(old, new) == []


def test_sweep_refuses_a_config_without_a_sweep_section(cli, write_config):
    result = cli("sweep", write_config(tiny_config(None)))
    assert result.exit_code == 2
    assert "has no sweep: section" in flat(result)


def test_the_sweep_section_does_not_change_run_config_files():
    from trainer.config import load_config

    assert "sweep" not in load_config(None, [], base=tiny_config(None)).to_dict()


# --------------------------------------------------------------------------- sweeps (TensorFlow)


@pytest.mark.slow
def test_sweep_end_to_end_and_best_yaml_reproduces(cli, write_config, mnist_npz, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = cli("sweep", write_config(sweep_config(mnist_npz)), "--sweep-dir", sweep_dir)
    assert result.exit_code == 0, result.output
    rows = read_trials(sweep_dir)
    assert [r["number"] for r in rows] == ["0", "1", "2"]
    assert {r["state"] for r in rows} <= {"completed", "pruned"}
    assert list(rows[0]) == ["number", "state", "value", *SPACE, "wall_seconds", "epochs", "run_dir", "host", "reason"]
    for row in rows:  # each trial is an ordinary run directory
        trial = Path(row["run_dir"])
        assert trial.parent == sweep_dir and (trial / "history.csv").is_file() and (trial / "metrics.json").is_file()
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    assert summary["counts"].get("completed", 0) + summary["counts"].get("pruned", 0) == 3
    best = summary["best"]
    assert best["value"] == max(float(r["value"]) for r in rows if r["state"] == "completed")
    for name in ("best.yaml", "optimization_history.png", "param_importances.png"):
        assert (sweep_dir / name).stat().st_size > 0
    best_yaml = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    assert "sweep" not in best_yaml
    assert best_yaml["optimizer"]["learning_rate"] == best["params"]["optimizer.learning_rate"]
    assert "best: trial" in flat(result) and "trainer run" in flat(result)

    rerun = cli("run", sweep_dir / "best.yaml", "--run-dir", tmp_path / "rerun")
    assert rerun.exit_code == 0, rerun.output
    again, original = read_history(tmp_path / "rerun" / "history.csv"), read_history(Path(best["run_dir"]) / "history.csv")
    assert [(r["loss"], r["val_accuracy"]) for r in again] == [(r["loss"], r["val_accuracy"]) for r in original]
    assert again[-1]["val_accuracy"] == best["value"]

    more = cli("sweep", write_config(sweep_config(mnist_npz)), "--sweep-dir", sweep_dir, "--trials", "4")
    assert more.exit_code == 0, more.output
    assert [r["number"] for r in read_trials(sweep_dir)] == ["0", "1", "2", "3"]  # continued, not restarted


@pytest.mark.slow
def test_pruning_stops_trials_of_a_bad_learning_rate(cli, write_config, mnist_npz, tmp_path):
    """Two good and two hopeless learning rates: a hopeless trial after a good one stops after its first epoch."""
    config = sweep_config(
        mnist_npz, trials=4, sampler="grid", startup_trials=1,
        space={"optimizer.learning_rate": {"choice": [0.02, 0.03, 1.0e-7, 1.0e-8]}},
        seed=3,  # the grid's seeded order: 1e-8, 0.03, 0.02, 1e-7 (with both hopeless rates first nothing is worse than the median)
    )
    sweep_dir = tmp_path / "sweep"
    result = cli("sweep", write_config(config), "--sweep-dir", sweep_dir)
    assert result.exit_code == 0, result.output
    rows = read_trials(sweep_dir)
    assert len(rows) == 4
    pruned = [r for r in rows if r["state"] == "pruned"]
    assert pruned and all(float(r["optimizer.learning_rate"]) < 1e-6 for r in pruned), rows
    for row in pruned:
        metrics = json.loads((Path(row["run_dir"]) / "metrics.json").read_text())
        assert metrics["status"] == "pruned" and metrics["epochs_completed"] == 1
        assert "pruned by the median pruner after epoch 1" in metrics["reason"]
        assert not (Path(row["run_dir"]) / "model.h5").exists()


@pytest.mark.slow
def test_a_grid_visits_each_point_once_and_a_nan_trial_is_recorded_failed(cli, write_config, mnist_npz, tmp_path):
    space = {"optimizer": {"choice": [{"name": "sgd", "learning_rate": 1.0e+30}, {"name": "adam", "learning_rate": 0.01}]}}
    config = sweep_config(mnist_npz, trials=5, sampler="grid", pruner="none", space=space)
    config["train"]["epochs"] = 1
    sweep_dir = tmp_path / "sweep"
    result = cli("sweep", write_config(config), "--sweep-dir", sweep_dir)
    assert result.exit_code == 0, result.output  # the budget is the grid's 2 points, not 5
    rows = {r["optimizer"]: r for r in read_trials(sweep_dir)}
    assert sorted(rows) == ["{learning_rate: 0.01, name: adam}", "{learning_rate: 1.0e+30, name: sgd}"]
    failed = rows["{learning_rate: 1.0e+30, name: sgd}"]
    assert failed["state"] == "failed" and "nan" in failed["reason"]
    assert json.loads((Path(failed["run_dir"]) / "metrics.json").read_text())["status"] == "failed"
    assert rows["{learning_rate: 0.01, name: adam}"]["state"] == "completed"


@pytest.mark.slow
def test_two_workers_share_one_journal(write_config, mnist_npz, tmp_path, subprocess_env):
    import optuna

    config = write_config(sweep_config(mnist_npz, trials=4, pruner="none"))
    sweep_dir = tmp_path / "sweep"
    done = subprocess.run(
        [sys.executable, "-m", "trainer", "sweep", str(config), "--workers", "2", "--sweep-dir", str(sweep_dir)],
        env=subprocess_env, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = read_trials(sweep_dir)
    assert [r["number"] for r in rows] == ["0", "1", "2", "3"] and {r["state"] for r in rows} == {"completed"}
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(sweep_dir / "optuna-journal.log")))
    trials = optuna.load_study(study_name="tiny", storage=storage).get_trials()
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # both processes ran trials
    assert len({t.user_attrs["run_dir"] for t in trials}) == 4
    assert (sweep_dir / "best.yaml").is_file()


def start_sweep(config: Path, sweep_dir: Path, env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trainer", "sweep", str(config), "--sweep-dir", str(sweep_dir), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def wait_for_epoch(process: subprocess.Popen, history: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if history.exists() and len(history.read_text().splitlines()) >= 2:  # header + one epoch: mid-trial
            return
        time.sleep(0.02)
    raise AssertionError(f"the trial did not reach an epoch: {process.communicate()[0]}")


@pytest.fixture
def slow_trials_config(write_config, tmp_path):
    """Trials of many small epochs, so that a signal lands in the middle of the first."""
    from tests.datagen import write_mnist_npz

    data = write_mnist_npz(tmp_path / "data.npz", n_train=1024, n_test=64, seed=0)
    config = sweep_config(data, trials=2, pruner="none")
    config["train"] = {"epochs": 6, "batch_size": 16}
    config["compile"] = {"steps_per_execution": 1}
    return write_config(config)


@pytest.mark.slow
def test_a_killed_sweep_continues_and_reuses_the_lost_budget(cli, slow_trials_config, tmp_path, subprocess_env):
    sweep_dir = tmp_path / "sweep"
    process = start_sweep(slow_trials_config, sweep_dir, subprocess_env)
    wait_for_epoch(process, sweep_dir / "trial-0000" / "history.csv")
    process.kill()
    process.wait()

    result = cli("sweep", slow_trials_config, "--sweep-dir", sweep_dir)  # the same config: another one is refused
    assert result.exit_code == 0, result.output
    assert "trial 0 was left running by a process that stopped" in flat(result)
    states = {r["number"]: r["state"] for r in read_trials(sweep_dir)}
    assert states == {"0": "lost", "1": "completed", "2": "completed"}  # trial 0's budget went to trial 2


@pytest.mark.slow
def test_ctrl_c_records_the_trial_as_interrupted_and_says_how_to_continue(slow_trials_config, tmp_path, subprocess_env):
    sweep_dir = tmp_path / "sweep"
    process = start_sweep(slow_trials_config, sweep_dir, subprocess_env)
    wait_for_epoch(process, sweep_dir / "trial-0000" / "history.csv")
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert f"continue the search with: trainer sweep {slow_trials_config} --sweep-dir {sweep_dir}" in " ".join(output.split())
    assert read_trials(sweep_dir)[0]["state"] == "interrupted"
    assert json.loads((sweep_dir / "trial-0000" / "metrics.json").read_text())["status"] == "interrupted"


# --------------------------------------------------------------------------- PostgreSQL


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A throw-away PostgreSQL cluster on 127.0.0.1 (initdb + pg_ctl), stopped and removed after the test."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL's initdb and pg_ctl are not on PATH (install the postgresql server package)")
    import importlib.util

    if not (importlib.util.find_spec("psycopg") or importlib.util.find_spec("psycopg2")):
        pytest.skip("no PostgreSQL driver (psycopg): pip install 'trainer[sweep]'")
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root and runuser is missing: PostgreSQL refuses to run as root")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    folder = Path(tempfile.mkdtemp(prefix="trainer-pg-", dir="/tmp"))
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    if as_postgres:
        shutil.chown(folder, "postgres")
        shutil.chown(sockets, "postgres")
    port = _free_port()
    try:
        subprocess.run([*as_postgres, initdb, "-D", str(data), "-U", "postgres", "--auth=trust"], check=True, capture_output=True, timeout=120)
        subprocess.run(
            [*as_postgres, pg_ctl, "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "60",
             "-o", f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
            check=True, capture_output=True, timeout=120,
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_postgres, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_two_sweeps_split_a_postgresql_study(write_config, mnist_npz, tmp_path, subprocess_env, postgres_url):
    import optuna

    config = write_config(sweep_config(mnist_npz, trials=5, pruner="none"))
    machines = [tmp_path / "machine-a", tmp_path / "machine-b"]
    processes = [
        start_sweep(config, folder, subprocess_env, "--storage", postgres_url, "--study", "shared") for folder in machines
    ]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    from trainer.integrations.optuna import open_storage

    trials = optuna.load_study(study_name="shared", storage=open_storage(postgres_url, tmp_path)).get_trials()
    counted = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(counted) == 5  # none lost
    by_machine = [sorted(int(d.name.split("-")[1]) for d in folder.glob("trial-*")) for folder in machines]
    assert all(by_machine), by_machine  # split between the two processes
    assert sorted(by_machine[0] + by_machine[1]) == sorted(t.number for t in counted)  # none repeated
    assert len({t.user_attrs["pid"] for t in counted}) == 2
    for folder in machines:  # each machine's summary lists the whole study as it stood when that machine finished: every
        # counted trial, and perhaps not a surplus trial the other machine opened (and closed unrun) after that
        listed = {int(r["number"]) for r in read_trials(folder)}
        assert {t.number for t in counted} <= listed <= {t.number for t in trials}


# --------------------------------------------------------------------------- the shared feature cache


class PhaseRecorder:
    """Run events: the phases (backbone passes) and notices of one run."""

    def __init__(self):
        self.phases: list[str] = []
        self.notices: list[str] = []

    def on_phase_start(self, description, total):
        self.phases.append(description)

    def on_notice(self, text):
        self.notices.append(text)


@pytest.mark.slow
def test_runs_with_the_same_frozen_backbone_share_one_feature_pass(tmp_path):
    """What a head search's trials get from feature_cache: one backbone pass for all of them."""
    import trainer
    from tests.datagen import write_mnist_npz

    data = write_mnist_npz(tmp_path / "m.npz", n_train=40, n_test=10)
    config = tiny_config(data, train={"epochs": 1, "batch_size": 16})
    config["model"] = {"type": "vgg16_head", "weights": "none", "head": {"hidden_units": [8], "dropout": 0.0}}
    from trainer.config import load_config

    loaded = load_config(None, [], base=config)
    cache = tmp_path / "features"
    runs = {}
    for name, overrides in (("first", []), ("other-head", ["model.head.dropout=0.3", "optimizer.learning_rate=0.001"])):
        recorder = PhaseRecorder()
        result = trainer.train(loaded, overrides=overrides, run_dir=tmp_path / name, feature_cache=cache, events=[recorder])
        assert result.status == "completed"
        runs[name] = recorder
    backbone_passes = {name: [p for p in r.phases if p.startswith("backbone features")] for name, r in runs.items()}
    # validation is held out of train (a sweep never selects on test), so the test split is a pass of its own
    assert backbone_passes["first"] == ["backbone features (train)", "backbone features (validation)", "backbone features (test)"]
    assert backbone_passes["other-head"] == []  # only the head changed: the features were read back
    assert any("reused from" in text for text in runs["other-head"].notices)
    assert len(list(cache.glob("*.npy"))) == 3 and not list(cache.glob(".*"))
    assert not (tmp_path / "first" / "features").exists()  # the run directory holds no copy


def test_the_feature_fingerprint_follows_backbone_weights_architecture_and_pixels():
    """A shared feature file is reused only for the same backbone (architecture, weights) and the same images."""
    import keras
    import numpy as np

    from trainer.run.features import CachedFeatureTraining

    def model(units: int, seed: int):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((4,))
        features = keras.Model(inputs, keras.layers.Dense(units)(inputs), name="features")
        return keras.Model(inputs, keras.layers.Dense(2, name="head")(features(inputs)))

    def fingerprint(net, x):
        return CachedFeatureTraining(net, None, Path("."), None, None, shared_dir=Path(".")).fingerprint(x)

    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    same = fingerprint(model(3, 0), x)
    assert fingerprint(model(3, 0), x) == same
    assert fingerprint(model(3, 1), x) != same  # other weights
    assert fingerprint(model(5, 0), x) != same  # another architecture
    assert fingerprint(model(3, 0), x + 1) != same  # other pixels


# --------------------------------------------------------------------------- issue 19: trust (secrets, untrusted stores, refusals)

PASSWORD = "s3cret-pw"
SECRET_URLS = [
    f"postgresql://sweeper:{PASSWORD}@127.0.0.1:1/sweeps",
    f"postgresql://sweeper@127.0.0.1:1/sweeps?sslmode=disable&password={PASSWORD}",
]


def plan_for(config: dict, **options):
    from trainer.config import load_config
    from trainer.sweep import plan_sweep

    return plan_sweep(load_config(None, [], base=config), **options)


@pytest.mark.parametrize("url", SECRET_URLS)
def test_the_storage_password_is_masked_wherever_the_sweep_shows_or_stores_it(url, tmp_path):
    from trainer.sweep.outputs import SweepSummary, sweep_json

    plan = plan_for(sweep_config(None), storage=url, sweep_dir=tmp_path / "s")
    shown = [plan.storage_label, plan.start_info(0).storage, json.dumps(sweep_json(plan, SweepSummary([], {}, None, 0, 3)))]
    for text in shown:
        assert PASSWORD not in text and "***" in text and "127.0.0.1:1/sweeps" in text, text


@pytest.mark.parametrize("url", SECRET_URLS)
def test_workers_get_the_storage_through_their_environment_never_argv(url, tmp_path):
    from trainer.sweep.workers import STORAGE_ENV, continue_command, worker_command

    plan = plan_for(sweep_config(None), storage=url, sweep_dir=tmp_path / "s")
    argv, env = worker_command(plan, tmp_path / "c.yaml", ["train.epochs=2"], base_env={"PATH": "/bin"})
    assert not any(PASSWORD in part for part in argv) and "--storage" not in argv
    assert env[STORAGE_ENV] == url and env["PATH"] == "/bin"
    hint = continue_command(tmp_path / "c.yaml", [], plan, None, url, None, 2)
    assert PASSWORD not in hint
    assert "--storage" in hint and "***" in hint  # the same store, with the password to put back


def test_a_storage_from_the_environment_stays_there_in_the_continue_hint(tmp_path):
    from trainer.sweep.workers import continue_command

    plan = plan_for(sweep_config(None), storage=SECRET_URLS[0], sweep_dir=tmp_path / "s")
    hint = continue_command(tmp_path / "c.yaml", [], plan, None, SECRET_URLS[0], None, 1, storage_from_env=True)
    assert "--storage" not in hint and PASSWORD not in hint


@pytest.mark.slow
@pytest.mark.parametrize("url", SECRET_URLS)
def test_an_unreachable_storage_is_named_without_its_password(cli, write_config, url, tmp_path):
    result = cli("sweep", write_config(sweep_config(None)), "--storage", url, "--sweep-dir", tmp_path / "s")
    assert result.exit_code == 2, result.output
    assert "--storage: cannot reach the database of" in result.text and "127.0.0.1:1/sweeps" in result.text  # the bounded probe (store_probe)
    assert PASSWORD not in result.output and "Traceback" not in result.output


def test_the_parent_mlflow_run_is_tagged_with_the_masked_storage(tmp_path, monkeypatch):
    import trainer.integrations.mlflow as mlflow_bridge
    from trainer.sweep.driver import tracking_parent

    seen = {}

    def fake_open_parent_run(config, name, run_id=None, tags=None):
        seen.update(tags or {})
        return "run-1"

    monkeypatch.setattr(mlflow_bridge, "open_parent_run", fake_open_parent_run)
    config = sweep_config(None)
    config["tracking"] = {"mlflow": {"uri": str(tmp_path / "mlruns")}}

    class Study:
        user_attrs: dict = {}

        def set_user_attr(self, key, value):
            self.user_attrs[key] = value

    tracking_parent(plan_for(config, storage=SECRET_URLS[1], sweep_dir=tmp_path / "s"), Study())
    assert seen["storage"] == "postgresql://sweeper@127.0.0.1:1/sweeps?sslmode=disable&password=***"


def test_a_continued_study_refuses_another_base_config_naming_what_differs(tmp_path):
    pytest.importorskip("optuna")
    from trainer.errors import BadInputError
    from trainer.sweep.driver import open_plan_study

    sweep_dir = tmp_path / "s"
    base = sweep_config("/data/a.npz")
    open_plan_study(plan_for(base, sweep_dir=sweep_dir))
    # what the space searches, where outputs go and the name are not the base config: accepted
    same = json.loads(json.dumps(base))
    same["optimizer"]["learning_rate"] = 0.5
    same["model"]["hidden_units"] = [99]
    same["output"] = {"dir": str(tmp_path / "elsewhere")}
    open_plan_study(plan_for(same, sweep_dir=sweep_dir, study="tiny"))
    other = json.loads(json.dumps(base))
    other["train"]["epochs"] = 7
    other["data"]["path"] = "/data/b.npz"
    with pytest.raises(BadInputError) as refused:
        open_plan_study(plan_for(other, sweep_dir=sweep_dir))
    message = str(refused.value)
    assert "another base config" in message and "data.path" in message and "train.epochs" in message
    assert "--study" in message


def test_the_sweep_command_refuses_another_base_config(cli, write_config, tmp_path):
    pytest.importorskip("optuna")
    from trainer.sweep.driver import open_plan_study

    sweep_dir = tmp_path / "s"
    open_plan_study(plan_for(sweep_config(None), sweep_dir=sweep_dir))
    changed = sweep_config(None)
    changed["seed"] = 5
    result = cli("sweep", write_config(changed), "--sweep-dir", sweep_dir)
    assert result.exit_code == 2, result.output
    assert "another base config" in result.text and "seed" in result.text and "Traceback" not in result.output


@pytest.mark.parametrize("choices", [[True, 1], [1, 1.0], [0, False, 0.0, "0"], [None, "null", 1, "1"]])
@pytest.mark.parametrize("sampler", ["random", "grid"])
def test_choices_that_python_finds_equal_stay_distinct(choices, sampler):
    optuna = pytest.importorskip("optuna")
    from trainer.config.sweep import SweepConfig
    from trainer.integrations import optuna as bridge

    sweep = SweepConfig.model_validate({"sampler": sampler, "seed": 1, "space": {"model.x": {"choice": choices}}})
    study = optuna.create_study(sampler=bridge.make_sampler(sweep, 1))
    drawn = []
    for _ in range(len(choices) if sampler == "grid" else 40):
        trial = study.ask()
        drawn.append(bridge.suggest(trial, sweep)["model.x"])
        study.tell(trial, 0.0)
    typed = {(type(v).__name__, repr(v)) for v in drawn}
    assert typed == {(type(v).__name__, repr(v)) for v in choices}


def test_choices_repeating_a_value_of_the_same_type_are_still_refused(cli, write_config):
    result = cli("validate", write_config(tiny_config(None, sweep={"space": {"model.dropout": {"choice": [0.1, 0.2, 0.1]}}})))
    assert result.exit_code == 2 and "repeat a value" in result.text


def _within(seconds: int):
    """A block that raises (instead of hanging the test run) when it takes longer than ``seconds``."""
    import contextlib

    @contextlib.contextmanager
    def guard():
        def stop(*_):
            raise TimeoutError(f"took more than {seconds} s")

        previous = signal.signal(signal.SIGALRM, stop)
        signal.alarm(seconds)
        try:
            yield
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)

    return guard()


@pytest.mark.parametrize(
    "space, key",
    [
        ({"train.epochs": {"int": [1, 10**12]}}, "train.epochs"),
        ({"model.dropout": {"float": [0.0, 0.5], "step": 1.0e-300}}, "model.dropout"),
        ({"train.epochs": {"int": [1, 1000]}, "train.batch_size": {"int": [1, 1000]}}, "train.batch_size"),
    ],
)
def test_a_huge_grid_is_refused_by_counting_not_enumerating(cli, write_config, space, key):
    with _within(30):
        result = cli("validate", write_config(tiny_config(None, sweep={"sampler": "grid", "space": space})))
    assert result.exit_code == 2, result.output
    assert "grid" in result.text and key in result.text and "100,000" in result.text and "Traceback" not in result.output


def test_a_large_grid_within_the_limit_is_counted_exactly():
    from trainer.config.sweep import SweepConfig

    sweep = SweepConfig.model_validate({"sampler": "grid", "space": {
        "train.epochs": {"int": [1, 1000], "step": 3}, "model.dropout": {"float": [0.0, 0.5], "step": 0.1}, "model.x": {"choice": [1, 2]},
    }})
    assert sweep.grid_size() == 334 * 6 * 2


def _not_a_journal(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"store-{kind}"
    if kind == "random":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "json":
        path.write_text('{"a": 1}\n')
    elif kind == "json-list":
        path.write_text("[1, 2, 3]\n")
    elif kind == "ops-without-fields":
        path.write_text('{"op_code": 0}\n{"op_code": 5, "worker_id": "w"}\n')
    elif kind == "nul":
        path.write_bytes(b'{"op_code": 0, "worker_id": "x\x00"}\n')
    elif kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        return Path("/dev/zero")
    elif kind == "link-to-device":
        path.symlink_to("/dev/zero")
    return path


@pytest.mark.parametrize("kind", ["random", "json", "json-list", "ops-without-fields", "nul", "folder", "fifo", "device", "link-to-device"])
def test_a_storage_file_that_is_not_an_optuna_journal_is_refused(cli, write_config, tmp_path, kind):
    pytest.importorskip("optuna")
    path = _not_a_journal(tmp_path, kind)
    with _within(60):
        result = cli("sweep", write_config(sweep_config(None)), "--storage", path, "--sweep-dir", tmp_path / "s")
    assert result.exit_code == 2, result.output
    assert str(path) in result.unwrapped and "journal" in result.text and "Traceback" not in result.output
    assert not list((tmp_path / "s").glob("trial-*"))


def _valid_journal(folder: Path) -> bytes:
    """A journal with a study and three trials (completed, pruned, failed) as a sweep writes them, without training."""
    optuna = pytest.importorskip("optuna")
    from trainer.integrations import optuna as bridge
    from trainer.sweep.driver import open_plan_study

    plan = plan_for(sweep_config(None), sweep_dir=folder)
    study = open_plan_study(plan)
    for number, state in enumerate(("completed", "pruned", "failed")):
        trial = study.ask()
        bridge.suggest(trial, plan.sweep)
        bridge.mark(trial, status=state, run_dir=str(plan.trial_dir(number)), overrides=["optimizer.learning_rate=0.01"],
                    wall_seconds=1.5, epochs=2, **bridge.this_process())
        trial.report(0.5, 1)
        if state == "completed":
            study.tell(trial, 0.5)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED if state == "pruned" else optuna.trial.TrialState.FAIL)
    return (folder / bridge.JOURNAL_FILE).read_bytes()


def test_a_damaged_journal_always_ends_in_a_refusal_naming_it(tmp_path):
    """Thousands of mutations of a real journal: the study opens and summarises, or exit 2 naming the file; nothing else."""
    pytest.importorskip("optuna")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from trainer.errors import TrainerError
    from trainer.integrations import optuna as bridge
    from trainer.sweep.driver import open_plan_study
    from trainer.sweep.outputs import summarize, sweep_json, trials_csv

    valid = _valid_journal(tmp_path / "valid")
    lines = valid.splitlines(keepends=True)
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["op_code", "worker_id", "study_id", "trial_id", "state", "user_attr", "value", "values", "params", "distributions", "datetime_start", "key", "number"]), inner, max_size=4),
        max_leaves=8,
    )

    def mutated(draw_kind, data):
        if draw_kind == "flip":
            index = data.draw(st.integers(0, len(valid) - 1))
            return valid[:index] + bytes([valid[index] ^ data.draw(st.integers(1, 255))]) + valid[index + 1:]
        if draw_kind == "truncate":
            return valid[: data.draw(st.integers(0, len(valid)))]
        if draw_kind == "drop-line":
            index = data.draw(st.integers(0, len(lines) - 1))
            return b"".join(lines[:index] + lines[index + 1:])
        if draw_kind == "replace-field":
            index = data.draw(st.integers(0, len(lines) - 1))
            record = json.loads(lines[index])
            key = data.draw(st.sampled_from(sorted(record)))
            record[key] = data.draw(json_values)
            return b"".join(lines[:index] + [json.dumps(record).encode() + b"\n"] + lines[index + 1:])
        index = data.draw(st.integers(0, len(lines)))
        return b"".join(lines[:index] + [json.dumps(data.draw(json_values)).encode() + b"\n"] + lines[index:])

    counter = iter(range(10**9))

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(kind=st.sampled_from(["flip", "truncate", "drop-line", "replace-field", "insert"]), data=st.data())
    def check(kind, data):
        folder = tmp_path / f"m{next(counter)}"
        folder.mkdir()
        (folder / bridge.JOURNAL_FILE).write_bytes(mutated(kind, data))
        plan = plan_for(sweep_config(None), sweep_dir=folder)
        try:
            study = open_plan_study(plan)
            summary = summarize(plan, study)
            trials_csv(summary.records, list(plan.sweep.space))
            json.dumps(sweep_json(plan, summary))
        except TrainerError as exc:
            assert exc.exit_code == 2
            assert str(folder / bridge.JOURNAL_FILE) in str(exc) or "study" in str(exc)

    check()


@pytest.mark.slow
def test_a_sqlite_study_prints_no_optuna_warning_per_trial(write_config, mnist_npz, tmp_path, subprocess_env):
    config = write_config(sweep_config(mnist_npz, trials=3, pruner="median", startup_trials=1,
                                       space={"optimizer.learning_rate": {"float": [1.0e-3, 3.0e-2], "log": True}}))
    done = subprocess.run(
        [sys.executable, "-m", "trainer", "sweep", str(config), "--storage", f"sqlite:///{tmp_path / 'study.db'}", "--sweep-dir", str(tmp_path / "s")],
        env=subprocess_env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    warned = [line for line in (done.stdout + done.stderr).splitlines() if "Warning" in line or "optuna" in line.lower()]
    assert warned == [], warned


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_a_postgresql_password_never_reaches_ps_the_output_or_sweep_json(slow_trials_config, tmp_path, subprocess_env, postgres_url):
    """--workers 2 on a password-protected URL (the test cluster trusts any password), then Ctrl-C."""
    url = postgres_url.replace("postgres@", f"postgres:{PASSWORD}@") + f"?password={PASSWORD}"
    sweep_dir = tmp_path / "sweep"
    process = start_sweep(slow_trials_config, sweep_dir, subprocess_env, "--storage", url, "--study", "secret", "--workers", "2")
    wait_for_epoch(process, sweep_dir / "trial-0000" / "history.csv", timeout=180)
    workers = _children(process.pid)
    assert len(workers) == 2
    for pid in workers:
        assert PASSWORD not in (Path("/proc") / str(pid) / "cmdline").read_bytes().decode()
        assert PASSWORD.encode() in (Path("/proc") / str(pid) / "environ").read_bytes()
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=180)
    assert process.returncode == 130, output
    text = " ".join(output.split())
    assert PASSWORD not in output and "Traceback" not in output
    assert "continue the search with: trainer sweep" in text and "--storage" in text and "***" in text
    assert PASSWORD not in (sweep_dir / "sweep.json").read_text()
    assert "***" in json.loads((sweep_dir / "sweep.json").read_text())["storage"]


def test_best_yaml_comes_from_the_space_never_from_what_the_study_recorded(tmp_path):
    """A study is a store anyone may write: forged overrides and a run_dir holding a FIFO change nothing."""
    optuna = pytest.importorskip("optuna")
    from trainer.integrations import optuna as bridge
    from trainer.sweep import write_outputs
    from trainer.sweep.driver import open_plan_study

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.mkfifo(elsewhere / "config.yaml")
    plan = plan_for(sweep_config(None), sweep_dir=tmp_path / "s")
    study = open_plan_study(plan)
    trial = study.ask()
    values = bridge.suggest(trial, plan.sweep)
    bridge.mark(trial, status="completed", run_dir=str(elsewhere), overrides=["data.path=/etc/passwd", "[red]x[/red]"], epochs="2")
    study.tell(trial, 0.5)
    with _within(60):
        summary = write_outputs(plan, study)
    best = yaml.safe_load((tmp_path / "s" / "best.yaml").read_text())
    assert best["data"]["path"] is None and best["optimizer"]["learning_rate"] == values["optimizer.learning_rate"]
    assert summary.best.overrides == [override_text(k, v) for k, v in values.items()] and summary.best.epochs is None
    forged = study.ask()
    forged_params = {"optimizer.learning_rate": 5.0, "model.hidden_units": "[8]"}  # 5.0: outside the space
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    assert bridge.space_overrides(plan.sweep, forged_params) is None
    assert bridge.space_overrides(plan.sweep, {**forged_params, "optimizer.learning_rate": 0.01}) == [
        "optimizer.learning_rate=0.01", "model.hidden_units=[8]"]
    study.tell(forged, state=optuna.trial.TrialState.FAIL)


def test_an_empty_storage_is_refused(cli, write_config, tmp_path):
    pytest.importorskip("optuna")
    result = cli("sweep", write_config(sweep_config(None)), "--storage", "", "--sweep-dir", tmp_path / "s")
    assert result.exit_code == 2 and "--storage is empty" in result.text and "Traceback" not in result.output


def test_a_set_value_holding_a_password_reaches_workers_through_their_environment(tmp_path, monkeypatch):
    from trainer.sweep.workers import WORKER_SET_ENV, continue_command, worker_command, worker_overrides as _worker_overrides

    overrides = ["train.epochs=2", f"sweep.storage=postgresql://u:{PASSWORD}@db/s", "train.epochs=3"]
    plan = plan_for(sweep_config(None), sweep_dir=tmp_path / "s")
    argv, env = worker_command(plan, tmp_path / "c.yaml", overrides, base_env={})
    assert not any(PASSWORD in part for part in argv) and "--set" not in argv
    monkeypatch.setenv(WORKER_SET_ENV, env[WORKER_SET_ENV])
    assert _worker_overrides() == overrides  # in order: the last train.epochs still wins
    hint = continue_command(tmp_path / "c.yaml", overrides, plan, None, None, None, 2)
    assert PASSWORD not in hint and "train.epochs=3" in hint and "***" in hint
    plain, _ = worker_command(plan, tmp_path / "c.yaml", ["train.epochs=2"], base_env={})
    assert plain[plain.index("--set") + 1] == "train.epochs=2"  # nothing secret: on the command line as before
