"""Best and last: model.h5 is the best epoch by train.monitor, last.h5 the last; a finished run keeps no lock and no .npz."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import tiny_config
from trainer.config import load_config
from trainer.config.monitor import guess_mode, resolve_monitor
from trainer.errors import ConfigError, RunDirError


@pytest.mark.parametrize(
    "name, mode",
    [("val_loss", "min"), ("loss", "min"), ("val_accuracy", "max"), ("val_top_5_accuracy", "max"), ("val_sparse_categorical_accuracy", "max"),
     ("val_mae", "min"), ("val_mean_squared_error", "min"), ("val_auc", "max"), ("val_precision", "max"), ("val_thing", None), ("learning_rate", None)],
)
def test_the_direction_comes_from_the_name(name, mode):
    assert guess_mode(name) == mode


LOGGED = ["loss", "accuracy", "val_loss", "val_accuracy", "val_custom_score", "learning_rate"]


@pytest.mark.parametrize(
    "train, validation, expected",
    [
        ({}, "test", ("val_loss", "min")),
        ({}, "none", ("loss", "min")),
        ({"monitor": "val_accuracy"}, 0.1, ("val_accuracy", "max")),
        ({"monitor": "loss", "monitor_mode": "max"}, "test", ("loss", "max")),
        ({"monitor": "val_custom_score", "monitor_mode": "max"}, "test", ("val_custom_score", "max")),
    ],
)
def test_resolve_monitor(train, validation, expected):
    config = load_config(None, [], base=tiny_config(None, train=train, data={"validation": validation}))
    assert resolve_monitor(config, LOGGED if validation != "none" else ["loss", "accuracy", "learning_rate"]) == expected


@pytest.mark.parametrize(
    "train, validation, message",
    [
        ({"monitor": "val_acuracy"}, "test", "train.monitor: no value named 'val_acuracy' is logged (did you mean 'val_accuracy'?)"),
        ({"monitor": "val_loss"}, "none", "there is no validation split: data.validation is none"),
        ({"monitor": "learning_rate"}, "test", "learning_rate is a setting"),
        ({"monitor": "val_custom_score"}, "test", "set train.monitor_mode: min"),
    ],
)
def test_a_monitor_that_cannot_be_followed_is_refused(train, validation, message):
    config = load_config(None, [], base=tiny_config(None, train=train, data={"validation": validation}))
    logged = LOGGED if validation != "none" else ["loss", "accuracy", "learning_rate"]
    with pytest.raises(ConfigError, match=None) as caught:
        resolve_monitor(config, logged)
    assert message in caught.value.message


@pytest.mark.parametrize(
    "sets, expected",
    [
        (["train.monitor=val_acuracy"], "did you mean 'val_accuracy'"),
        (["train.monitor_mode=biggest"], "train.monitor_mode"),
        (["train.monitor=[1]"], "train.monitor"),
        (["data.validation=none", "train.monitor=val_accuracy"], "data.validation is none"),
    ],
)
def test_validate_refuses_bad_monitor_settings_with_exit_2(sets, expected, cli, write_config):
    config = write_config(tiny_config(None))
    result = cli("validate", config, *[arg for text in sets for arg in ("--set", text)])
    assert result.exit_code == 2, result.output
    assert expected in result.unwrapped and "Traceback" not in result.output


def test_the_default_monitor_leaves_config_yaml_as_before():
    """Runs from before train.monitor resume: the defaults are not written into config.yaml."""
    config = load_config(None, [], base=tiny_config(None))
    assert "monitor" not in config.to_dict()["train"] and "monitor_mode" not in config.to_dict()["train"]


# --------------------------------------------------------------------------- checkpoint.json of a completed run


def record(**values):
    return {"version": 2, "epoch": 3, "weights_file": "checkpoint-epoch0003.weights.npz", **values}


@pytest.mark.parametrize(
    "values, ok",
    [
        ({}, True),
        ({"weights_file": "last.h5", "completed": True}, True),
        ({"weights_file": "model.h5", "completed": True}, True),
        ({"weights_file": "last.h5"}, False),  # a last.h5 only once completed
        ({"completed": True}, False),  # completed names the .h5
        ({"weights_file": "../last.h5", "completed": True}, False),
        ({"weights_file": "last.h5", "completed": True, "callbacks": [{"best_weights_file": "checkpoint-best0-epoch0002.weights.npz"}]}, False),
        ({"weights_file": "last.h5", "completed": "yes"}, False),
    ],
)
def test_a_completed_checkpoint_record_names_only_its_h5(values, ok, tmp_path):
    from trainer.readers.run_files import read_checkpoint_record

    (tmp_path / "checkpoint.json").write_text(json.dumps(record(**values)))
    if ok:
        assert read_checkpoint_record(tmp_path).epoch == 3
    else:
        with pytest.raises(RunDirError):
            read_checkpoint_record(tmp_path)


@pytest.mark.parametrize(
    "best, ok",
    [
        ({"monitor": "val_loss", "mode": "min", "epoch": 2, "value": 0.5, "last_epoch": 3, "last_weights": "last.h5"}, True),
        ({"monitor": "val_loss", "mode": "lowest", "epoch": 2}, False),
        ({"monitor": "val_loss", "mode": "min", "epoch": 0}, False),
        ({"monitor": "val_loss", "mode": "min", "last_weights": "../x.h5"}, False),
    ],
)
def test_metrics_best_is_a_bounded_record(best, ok, tmp_path):
    from trainer.readers.run_files import read_metrics_record

    (tmp_path / "metrics.json").write_text(json.dumps({"status": "completed", "best": best}))
    if ok:
        assert read_metrics_record(tmp_path).best.epoch == 2
    else:
        with pytest.raises(RunDirError):
            read_metrics_record(tmp_path)


# --------------------------------------------------------------------------- runs


def run_files(run_dir: Path) -> set[str]:
    return {p.name for p in run_dir.iterdir()}


@pytest.fixture
def best_first_run(cli, mnist_npz, write_config, tmp_path):
    """Four epochs where the best by the monitor is epoch 1: the *highest* training loss (monitor_mode: max)."""
    config = write_config(tiny_config(mnist_npz, train={"epochs": 4, "monitor": "loss", "monitor_mode": "max"}))
    run_dir = tmp_path / "run"
    result = cli("run", config, "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    return config, run_dir


@pytest.mark.slow
def test_model_h5_is_the_best_epoch_and_last_h5_the_last(best_first_run, cli, tmp_path):
    config, run_dir = best_first_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = [json.loads(json.dumps(row)) for row in __import__("trainer.run.rundir", fromlist=["x"]).read_history(run_dir / "history.csv")]
    assert metrics["best"] == {"monitor": "loss", "mode": "max", "epoch": 1, "value": pytest.approx(history[0]["loss"]), "last_epoch": 4, "last_weights": "last.h5"}
    # a finished run directory: no lock, no checkpoint .npz; checkpoint.json names last.h5
    assert run_files(run_dir) == {"config.yaml", "manifest.json", "history.csv", "metrics.json", "checkpoint.json", "curves.png", "model.h5", "last.h5", "report.html"}
    assert json.loads((run_dir / "checkpoint.json").read_text())["weights_file"] == "last.h5"
    # eval reads model.h5 (the best epoch: its test numbers are metrics.json's); RUN/last.h5 is the last epoch
    best = cli("eval", run_dir, "--output", tmp_path / "best.json")
    last = cli("eval", run_dir / "last.h5", "--output", tmp_path / "last.json")
    assert best.exit_code == 0 and last.exit_code == 0, best.output + last.output
    best_report, last_report = (json.loads((tmp_path / name).read_text()) for name in ("best.json", "last.json"))
    assert best_report["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-5)
    assert last_report["loss"] != pytest.approx(best_report["loss"], rel=1e-3)


@pytest.mark.slow
def test_resume_after_completion_continues_from_last_h5(best_first_run, cli, tmp_path, write_config, mnist_npz):
    config, run_dir = best_first_run
    reference = tmp_path / "reference"
    assert cli("run", config, "--set", "train.epochs=6", "--run-dir", reference).exit_code == 0
    assert cli("run", config, "--run-dir", run_dir, "--resume").exit_code == 2  # the same epochs: nothing to resume
    result = cli("run", config, "--set", "train.epochs=6", "--run-dir", run_dir, "--resume")
    assert result.exit_code == 0, result.output
    from trainer.run.rundir import read_history

    got, want = read_history(run_dir / "history.csv"), read_history(reference / "history.csv")
    assert [r["epoch"] for r in got] == list(range(1, 7))
    for a, b in zip(got, want):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["best"]["epoch"] == 1 and metrics["best"]["last_epoch"] == 6  # the best kept across the resume
    assert metrics["test"]["loss"] == pytest.approx(json.loads((reference / "metrics.json").read_text())["test"]["loss"], rel=1e-5)
    assert ".trainer.lock" not in run_files(run_dir) and not list(run_dir.glob("*.npz"))


@pytest.mark.slow
def test_when_the_last_epoch_is_the_best_there_is_one_model_file(cli, mnist_npz, write_config, tmp_path):
    config = write_config(tiny_config(mnist_npz, train={"epochs": 3, "monitor": "loss"}))  # the training loss falls every epoch
    run_dir = tmp_path / "run"
    assert cli("run", config, "--run-dir", run_dir).exit_code == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["best"]["epoch"] == 3 and metrics["best"]["last_weights"] == "model.h5"
    assert not (run_dir / "last.h5").exists() and not (run_dir / ".trainer.lock").exists()
    result = cli("eval", run_dir / "last.h5")
    assert result.exit_code == 2 and "was the best by loss" in result.unwrapped and "model.h5 holds it" in result.unwrapped


@pytest.mark.slow
def test_early_stopping_restoring_its_best_does_not_change_last_h5(cli, mnist_npz, write_config, tmp_path):
    """early_stopping with restore_best_weights puts its best weights in at the end; last.h5 still holds the last epoch."""
    config = write_config(tiny_config(
        mnist_npz, train={"epochs": 3, "monitor": "loss", "monitor_mode": "max"},
        callbacks=[{"name": "early_stopping", "monitor": "loss", "mode": "max", "patience": 5, "restore_best_weights": True}],
    ))
    run_dir = tmp_path / "run"
    assert cli("run", config, "--run-dir", run_dir).exit_code == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["best"]["epoch"] == 1 and metrics["best"]["last_weights"] == "last.h5"
    result = cli("eval", run_dir / "last.h5", "--split", "train", "--output", tmp_path / "last.json")
    assert result.exit_code == 0, result.output
    last = json.loads((tmp_path / "last.json").read_text())
    best = cli("eval", run_dir, "--split", "train", "--output", tmp_path / "best.json")
    assert best.exit_code == 0
    assert last["loss"] < json.loads((tmp_path / "best.json").read_text())["loss"]  # the last epoch fits train better than epoch 1


@pytest.mark.slow
@pytest.mark.parametrize("name, damage", [
    ("last.h5", lambda data: b"not an hdf5 file" + data[:64]),
    ("last.h5", lambda data: data[: len(data) // 2]),  # truncated
    ("model.h5", lambda data: b"\x89HDF\r\n\x1a\n" + b"\0" * 512),
])
def test_a_refused_resume_leaves_the_completed_run_as_it_was(best_first_run, cli, name, damage):
    """A crafted last.h5/model.h5 is refused (exit 2) before anything is written: metrics.json still says completed."""
    config, run_dir = best_first_run
    target = run_dir / name
    target.write_bytes(damage(target.read_bytes()))
    before = {path.name: path.read_bytes() for path in run_dir.iterdir()}
    result = cli("run", config, "--set", "train.epochs=6", "--run-dir", run_dir, "--resume")
    assert result.exit_code == 2, result.output
    assert f"{target}" in result.unwrapped and "cannot be resumed" in result.unwrapped
    assert {path.name: path.read_bytes() for path in run_dir.iterdir()} == before  # no lock, history and metrics untouched
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
