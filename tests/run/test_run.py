"""`trainer run` end to end on tiny generated data: files written, numbers recorded, exit codes."""
from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest
import yaml

from tests.conftest import tiny_config
from tests.datagen import write_cifar10_dir, write_idx_dir, write_mnist_npz


@pytest.mark.slow
def test_run_writes_complete_run_directory(cli, mnist_npz, write_config, tmp_path):
    config = write_config(tiny_config(mnist_npz, train={"epochs": 2}))
    run_dir = tmp_path / "run"
    result = cli("run", config, "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    assert {"config.yaml", "model.h5", "history.csv", "metrics.json", "manifest.json"} <= {p.name for p in run_dir.iterdir()}

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["epochs_completed"] == 2
    assert set(metrics["test"]) >= {"loss", "accuracy"}
    assert metrics["validation"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    # the figures people report are in metrics.json too, equal to what trainer eval computes from model.h5
    result = cli("eval", run_dir, "--output", tmp_path / "eval.json")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "eval.json").read_text())["summary"]
    assert set(summary) == {"macro_precision", "weighted_precision", "macro_recall", "weighted_recall", "macro_f1", "weighted_f1", "balanced_accuracy"}
    for key, value in summary.items():
        assert metrics["test"][key] == pytest.approx(value, abs=1e-6), key
    assert metrics["versions"]["keras"] == keras.__version__
    assert metrics["seed"] == 1 and metrics["device"]["kind"] == "cpu"

    with open(run_dir / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_seconds"} <= set(rows[0])
    assert float(rows[-1]["loss"]) == pytest.approx(metrics["train"]["loss"])

    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["train"]["epochs"] == 2 and resolved["labels"]["encoding"] == "auto"

    model = keras.models.load_model(run_dir / "model.h5")
    data = np.load(mnist_npz)
    probabilities = model.predict(data["x_test"].astype("float32")[..., None], verbose=0)
    accuracy = float(np.mean(probabilities.argmax(1) == data["y_test"]))
    assert accuracy == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    assert accuracy > 0.5  # the synthetic classes are learnable


@pytest.mark.slow
def test_run_learns_with_onehot_and_logits(cli, mnist_npz, write_config, tmp_path):
    onehot = write_config(tiny_config(mnist_npz, loss="categorical_crossentropy", labels={"encoding": "onehot"}, train={"epochs": 3}), "onehot.yaml")
    logits = write_config(
        tiny_config(mnist_npz, model={"type": "mlp", "hidden_units": [16], "output": "logits"},
                    loss={"name": "sparse_categorical_crossentropy", "from_logits": True}, train={"epochs": 3}),
        "logits.yaml",
    )
    for config, name in ((onehot, "a"), (logits, "b")):
        result = cli("run", config, "--run-dir", tmp_path / name)
        assert result.exit_code == 0, result.output
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert metrics["test"]["accuracy"] > 0.8


@pytest.mark.slow
def test_same_seed_same_history(cli, mnist_npz, write_config, tmp_path):
    config = write_config(tiny_config(mnist_npz, train={"epochs": 2}))
    for name in ("a", "b"):
        assert cli("run", config, "--run-dir", tmp_path / name).exit_code == 0
    rows = [list(csv.DictReader(open(tmp_path / n / "history.csv"))) for n in ("a", "b")]
    for first, second in zip(*rows):
        assert float(first["loss"]) == pytest.approx(float(second["loss"]), rel=1e-6)
        assert first["val_accuracy"] == second["val_accuracy"]


@pytest.mark.slow
def test_set_overrides_are_applied_and_validated(cli, mnist_npz, write_config, tmp_path):
    config = write_config(tiny_config(mnist_npz))
    result = cli("run", config, "--set", "train.epochs=2", "--set", "model.hidden_units=[8,4]", "--run-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert resolved["train"]["epochs"] == 2 and resolved["model"]["hidden_units"] == [8, 4]
    model = keras.models.load_model(tmp_path / "r" / "model.h5")
    assert [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)] == [8, 4, 10]

    bad = cli("run", config, "--set", "train.epochs=-1", "--run-dir", tmp_path / "bad")
    assert bad.exit_code == 2
    assert "train.epochs" in bad.output and "-1" in bad.output and "--set train.epochs=-1" in bad.output
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_default_run_dir_and_refusal_to_overwrite(cli, mnist_npz, write_config, tmp_path):
    out = tmp_path / "outs"
    config = write_config(tiny_config(mnist_npz, output={"dir": str(out)}))
    assert cli("run", config).exit_code == 0
    (run_dir,) = list(out.iterdir())
    assert run_dir.name.startswith("tiny-") and len(run_dir.name) == len("tiny-YYYYmmdd-HHMMSS")
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    again = cli("run", config, "--run-dir", run_dir)
    assert again.exit_code == 2 and "already exists" in again.output
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before


@pytest.mark.slow
def test_dry_run_trains_and_writes_nothing(cli, mnist_npz, write_config, tmp_path):
    config = write_config(tiny_config(mnist_npz))
    result = cli("run", config, "--dry-run", "--run-dir", tmp_path / "dry")
    assert result.exit_code == 0, result.output
    assert "Total params" in result.output and "dry run" in result.output
    assert not (tmp_path / "dry").exists()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["idx_gz", "idx_raw", "cifar10"])
def test_run_accepts_each_published_format(cli, write_config, tmp_path, fmt):
    if fmt == "cifar10":
        path = write_cifar10_dir(tmp_path / "c", n_per_batch=10, n_test=10)
        config = tiny_config(path, data={"dataset": "cifar10"})
        expected_shape = [32, 32, 3]
    else:
        path = write_idx_dir(tmp_path / "idx", n_train=64, n_test=16, gz=fmt == "idx_gz")
        config = tiny_config(path)
        expected_shape = [28, 28, 1]
    result = cli("run", write_config(config), "--run-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["input_shape"] == expected_shape
    if fmt == "cifar10":
        assert manifest["class_names"][0] == "airplane"


def test_labels_starting_at_one_are_refused(cli, write_config, tmp_path):
    path = write_mnist_npz(tmp_path / "m.npz", n_train=64, n_test=16, label_offset=1)
    result = cli("run", write_config(tiny_config(path)), "--run-dir", tmp_path / "r")
    assert result.exit_code == 2
    assert "range from 1 to 10" in result.output and "0 to 9" in result.output
    assert "Traceback" not in result.output


def test_download_failure_names_data_path(cli, write_config, tmp_path, monkeypatch):
    import keras

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3] no network")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    result = cli("run", write_config(tiny_config(None)), "--run-dir", tmp_path / "r")
    assert result.exit_code == 2
    assert "data.path" in result.output and ".npz" in result.output and "IDX" in result.output


def test_bad_data_leaves_no_run_directory(cli, write_config, tmp_path):
    path = write_mnist_npz(tmp_path / "m.npz", n_train=64, n_test=16, label_offset=1)
    result = cli("run", write_config(tiny_config(path)), "--run-dir", tmp_path / "r")
    assert result.exit_code == 2
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_console_script_subprocess(subprocess_env, mnist_npz, write_config, tmp_path):
    """A real process, as a user runs it: exit code, output and the run directory."""
    import subprocess
    import sys

    config = write_config(tiny_config(mnist_npz))
    done = subprocess.run(
        [sys.executable, "-m", "trainer", "run", str(config), "--run-dir", str(tmp_path / "r")],
        env=subprocess_env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "run finished" in done.stdout and str(tmp_path / "r") in done.stdout
    assert "Traceback" not in done.stderr and "oneDNN" not in done.stderr
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["status"] == "completed"


def test_steps_per_execution_auto_rule(write_config):
    from trainer.config import load_config
    from trainer.models.compile import resolve_steps_per_execution

    def spe(steps, **sections):
        return resolve_steps_per_execution(load_config(write_config(tiny_config(None, **sections))), steps)

    assert spe(1875) == 93 and spe(10) == 1 and spe(100000) == 200 and spe(None) == 1
    assert spe(1875, compile={"steps_per_execution": 7}) == 7
    assert spe(1875, compile={"run_eagerly": True}) == 1
    assert spe(1875, callbacks=[{"name": "my_callbacks:Printer"}]) == 1
    # train.steps_per_epoch (an endless stream): a divisor, so that no epoch reads its successor's first batches
    assert spe(1875, train={"steps_per_epoch": 1875}) == 75 and spe(1873, train={"steps_per_epoch": 1873}) == 1


def test_progress_never_counts_past_the_epoch():
    """Keras reports a partial last execution's nominal end step (252 of 250); the bar stops at 250."""
    import io

    from rich.console import Console

    from trainer.cli.progress import RunProgress

    out = io.StringIO()
    progress = RunProgress(Console(file=out, force_terminal=True, width=120))
    progress.on_epoch_start(1, 2, 250)
    progress.on_progress(252, {"loss": 0.5})
    assert progress.progress.tasks[0].completed == 250
    progress.on_phase_end()


@pytest.mark.slow
def test_images_of_another_shape_than_the_dataset_are_named_in_a_notice(cli, mnist_npz, write_config, tmp_path):
    """cifar10 given an MNIST-shaped file trains (the model adapts), but never silently."""
    result = cli("run", write_config(tiny_config(mnist_npz, data={"dataset": "cifar10"})), "--run-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "images are 28x28x1, not 32x32x3 as in cifar10" in text and "data.dataset" in text
    # validation: none, so neither validation notice (the test split, or a fraction held out) is printed either
    plain = cli("run", write_config(tiny_config(mnist_npz, data={"validation": "none"}), "plain.yaml"), "--run-dir", tmp_path / "p")
    assert "not 28x28x1" not in " ".join(plain.output.split()) and "notice" not in plain.output
