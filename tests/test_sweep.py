"""trainer sweep: the sweep section's checks, a sweep end to end, pruning, workers, resume, PostgreSQL."""
from __future__ import annotations

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

from tests.conftest import tiny_config
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

    result = cli("sweep", slow_trials_config, "--sweep-dir", sweep_dir, "--set", "train.epochs=1")
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
    pytest.importorskip("psycopg2", reason="psycopg2 is missing: pip install 'trainer[sweep]'")
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
    trials = optuna.load_study(study_name="shared", storage=postgres_url).get_trials()
    counted = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(counted) == 5  # none lost
    by_machine = [sorted(int(d.name.split("-")[1]) for d in folder.glob("trial-*")) for folder in machines]
    assert all(by_machine), by_machine  # split between the two processes
    assert sorted(by_machine[0] + by_machine[1]) == sorted(t.number for t in counted)  # none repeated
    assert len({t.user_attrs["pid"] for t in counted}) == 2
    for folder in machines:  # each machine's summary lists the whole study (as it stood when that machine finished)
        assert sorted(int(r["number"]) for r in read_trials(folder)) == sorted(t.number for t in trials)


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
    assert backbone_passes["first"] == ["backbone features (train)", "backbone features (validation)"]
    assert backbone_passes["other-head"] == []  # only the head changed: the features were read back
    assert any("reused from" in text for text in runs["other-head"].notices)
    assert len(list(cache.glob("*.npy"))) == 2 and not list(cache.glob(".*"))
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
