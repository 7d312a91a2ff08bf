"""Resume is exact in every case: more epochs after a finished run, best weights, callback logs, leftovers, SIGTERM anywhere.

Each killed or interrupted run is resumed and compared with one uninterrupted run of the same
config (history, csv_logger and json_log rows, test metrics).
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_config
from tests.datagen import write_mnist_npz
from trainer.run.checkpoint import CHECKPOINT_FILE, continue_callback_logs, remove_leftovers
from trainer.run.rundir import read_history

EPOCHS = 4
LOG_CALLBACKS = [
    # monitor the training loss in "max" mode: the best epoch is the first, so restoring it matters
    {"name": "early_stopping", "monitor": "loss", "mode": "max", "patience": 50, "restore_best_weights": True},
    {"name": "csv_logger", "filename": "epochs.csv"},
    {"name": "json_log", "filename": "epochs.jsonl"},
]


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    """Epochs of ~150 one-step calls, so a signal sent after an epoch lands mid-run."""
    folder = tmp_path_factory.mktemp("exact")
    data = write_mnist_npz(folder / "data.npz", n_train=2400, n_test=64, seed=0)
    config = tiny_config(
        data, train={"epochs": EPOCHS, "batch_size": 16}, compile={"steps_per_execution": 1},
        optimizer={"name": "adam", "learning_rate": 0.001}, callbacks=LOG_CALLBACKS,
    )
    path = folder / "exact.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def reference(config_path):
    """The same config, never interrupted."""
    from typer.testing import CliRunner

    from trainer.cli import app

    run_dir = config_path.parent / "reference"
    result = CliRunner().invoke(app, ["run", str(config_path), "--run-dir", str(run_dir)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return run_dir


def json_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """History, both callback logs and the test metrics equal the uninterrupted run's."""
    got, want = read_history(run_dir / "history.csv"), read_history(reference / "history.csv")
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want] == list(range(1, EPOCHS + 1))
    for a, b in zip(got, want):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    csv_got, csv_want = read_history(run_dir / "epochs.csv"), read_history(reference / "epochs.csv")
    assert [r["epoch"] for r in csv_got] == [r["epoch"] for r in csv_want] == list(range(EPOCHS))
    assert [r["loss"] for r in csv_got] == pytest.approx([r["loss"] for r in csv_want], rel=1e-5)
    json_got, json_want = json_rows(run_dir / "epochs.jsonl"), json_rows(reference / "epochs.jsonl")
    assert [r["epoch"] for r in json_got] == [r["epoch"] for r in json_want] == list(range(1, EPOCHS + 1))
    final, expected = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, reference))
    assert final["status"] == "completed" and final["epochs_completed"] == EPOCHS
    assert final["test"]["loss"] == pytest.approx(expected["test"]["loss"], rel=1e-5)
    assert final["test"]["accuracy"] == pytest.approx(expected["test"]["accuracy"])


def start(args: list, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trainer", *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def signal_after_rows(process: subprocess.Popen, history: Path, rows: int, signum: int) -> subprocess.CompletedProcess:
    """Send ``signum`` once ``history`` holds ``rows`` epochs; wait for the end."""
    while process.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= rows + 1:
            process.send_signal(signum)
            break
        time.sleep(0.01)
    output, _ = process.communicate(timeout=180)
    return subprocess.CompletedProcess(process.args, process.returncode, output)


@pytest.mark.slow
def test_extended_run_killed_then_resumed(cli, config_path, reference, tmp_path, subprocess_env):
    """A finished 2-epoch run, extended to 4 and killed in epoch 4: --resume continues (no 'already completed')."""
    run_dir = tmp_path / "extended"
    assert cli("run", config_path, "--run-dir", run_dir, "--set", "train.epochs=2").exit_code == 0
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
    process = start(["run", config_path, "--run-dir", run_dir, "--resume"], subprocess_env)
    killed = signal_after_rows(process, run_dir / "history.csv", 3, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL, killed.stdout

    result = cli("run", config_path, "--run-dir", run_dir, "--resume")
    assert result.exit_code == 0, result.output
    assert_same_run(run_dir, reference)


@pytest.mark.slow
def test_sigkill_mid_run_restores_best_weights_and_continues_logs(cli, config_path, reference, tmp_path, subprocess_env):
    run_dir = tmp_path / "killed"
    process = start(["run", config_path, "--run-dir", run_dir], subprocess_env)
    killed = signal_after_rows(process, run_dir / "history.csv", 2, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL, killed.stdout
    state = json.loads((run_dir / CHECKPOINT_FILE).read_text())
    assert 1 <= state["epoch"] < EPOCHS
    assert (run_dir / state["callbacks"][0]["best_weights_file"]).is_file()  # epoch 1's weights, the best so far

    result = cli("run", config_path, "--run-dir", run_dir, "--resume")
    assert result.exit_code == 0, result.output
    assert_same_run(run_dir, reference)
    # the run completed: its checkpoint .npz files are gone, checkpoint.json names the last epoch's .h5
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == []
    assert json.loads((run_dir / CHECKPOINT_FILE).read_text())["completed"] is True


AUGMENT = {"flip": "horizontal", "crop": 2, "rotation": 0.05, "zoom": 0.1, "translate": 0.1, "contrast": 0.2}
# Augmented inside the training step (trainer.data.device_augment): every change but rand_augment, which stays on the host.
RECIPES = {
    "affine": AUGMENT,
    "mixing": {"flip": "alternating", "crop": 2, "crop_padding": "reflect", "random_erasing": 0.5, "mixup": 0.2, "cutmix": 1.0},
    "rand_augment": {"flip": "horizontal", "crop": 2, "rand_augment": {"magnitude": 9, "layers": 2}},  # on the host
}


@pytest.fixture(scope="module", params=RECIPES.values(), ids=RECIPES.keys())
def augmented(tmp_path_factory, request):
    """A config with augmentation on, and its uninterrupted run: the reference a killed and resumed run must equal."""
    from typer.testing import CliRunner

    from trainer.cli import app

    folder = tmp_path_factory.mktemp("augmented")
    data = write_mnist_npz(folder / "data.npz", n_train=800, n_test=64, seed=0)
    config = tiny_config(data, train={"epochs": EPOCHS, "batch_size": 16}, compile={"steps_per_execution": 1}, optimizer={"name": "adam", "learning_rate": 0.001})
    config["data"]["augment"] = request.param
    path = folder / "augmented.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = CliRunner().invoke(app, ["run", str(path), "--run-dir", str(folder / "reference")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return path, folder / "reference"


@pytest.mark.slow
@pytest.mark.parametrize("killed_after", [2, 3])  # the history row of epoch N can precede its checkpoint: N-1 is kept
def test_augmented_run_killed_then_resumed_equals_the_uninterrupted_one(cli, augmented, tmp_path, subprocess_env, killed_after):
    """Every augmentation draw comes from (seed, epoch, position): kill -9 at any epoch and --resume give the same history.csv."""
    config_path, reference = augmented
    run_dir = tmp_path / "killed"
    process = start(["run", config_path, "--run-dir", run_dir], subprocess_env)
    killed = signal_after_rows(process, run_dir / "history.csv", killed_after, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL, killed.stdout
    result = cli("run", config_path, "--run-dir", run_dir, "--resume")
    assert result.exit_code == 0, result.output
    got, want = read_history(run_dir / "history.csv"), read_history(reference / "history.csv")
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want] == list(range(1, EPOCHS + 1))
    for a, b in zip(got, want):
        assert (a["loss"], a["val_loss"]) == (pytest.approx(b["loss"], rel=1e-5), pytest.approx(b["val_loss"], rel=1e-5))
    final, expected = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, reference))
    assert final["test"]["loss"] == pytest.approx(expected["test"]["loss"], rel=1e-5)


class InterruptAtTrainEnd:
    """A Keras callback standing in for SIGTERM right after the last epoch (while the final files are saved)."""

    def __new__(cls):
        import keras

        class Interrupt(keras.callbacks.Callback):
            def on_train_end(self, logs=None):
                raise KeyboardInterrupt

        return Interrupt()


@pytest.mark.slow
def test_interrupt_after_the_last_epoch_then_resume(cli, config_path, reference, tmp_path):
    import trainer
    from trainer.errors import RunInterrupted

    run_dir = tmp_path / "final-save"
    with pytest.raises(RunInterrupted, match="after the last epoch"):
        trainer.train(config_path, run_dir=run_dir, callbacks=[InterruptAtTrainEnd()])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and "after the last epoch" in metrics["reason"]
    assert json.loads((run_dir / CHECKPOINT_FILE).read_text())["epoch"] == EPOCHS
    assert not (run_dir / "model.h5").exists()
    # what a kill in the middle of writing model.h5 and the curves leaves behind
    leftovers = [run_dir / ".model.k1ll3d.tmp.h5", run_dir / ".curves.x9y8z7.tmp.png"]
    for path in leftovers:
        path.write_bytes(b"half")

    result = cli("run", config_path, "--run-dir", run_dir, "--resume")
    assert result.exit_code == 0, result.output
    assert_same_run(run_dir, reference)
    assert not any(path.exists() for path in leftovers)
    assert (run_dir / "curves.png").is_file() and (run_dir / "model.h5").is_file()


def wait_for_tensorflow(process: subprocess.Popen) -> None:
    """Return once the process has TensorFlow's native library loaded (its import is under way)."""
    maps = Path(f"/proc/{process.pid}/maps")
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if "tensorflow" in maps.read_text():
                return
        except OSError:
            pass
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see when TensorFlow is loading")
@pytest.mark.parametrize("command", ["run", "eval"])
def test_sigterm_during_tensorflow_import_exits_130(command, config_path, reference, tmp_path, subprocess_env):
    args = ["run", config_path, "--run-dir", tmp_path / "new"] if command == "run" else ["eval", reference]
    before = sorted(p.name for p in reference.iterdir())
    process = start(args, subprocess_env)
    wait_for_tensorflow(process)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert "Traceback" not in output and "interrupted" in output
    assert not (tmp_path / "new").exists()  # nothing was created
    assert sorted(p.name for p in reference.iterdir()) == before  # eval wrote no half report


def test_continue_callback_logs_cuts_rows_after_the_checkpoint(tmp_path):
    """csv_logger counts epochs from 0, json_log from 1; rows past the checkpoint and a half line go."""
    csv_file, json_file = tmp_path / "epochs.csv", tmp_path / "epochs.jsonl"
    csv_file.write_text("epoch,loss\n0,0.5\n1,0.4\n2,0.3\n")
    json_file.write_text('{"epoch": 1, "loss": 0.5}\n{"epoch": 2, "loss": 0.4}\n{"epoch": 3, "lo')

    class CSVLogger:
        def __init__(self, filename):
            self.filename, self.append = filename, False

    class JsonLinesLog(CSVLogger):
        pass

    loggers = [CSVLogger(str(csv_file)), JsonLinesLog(str(json_file))]
    continue_callback_logs(loggers, tmp_path, 2)
    assert csv_file.read_text().splitlines() == ["epoch,loss", "0,0.5", "1,0.4"]
    assert [row["epoch"] for row in json_rows(json_file)] == [1, 2]
    assert all(logger.append for logger in loggers)


def test_remove_leftovers_stays_inside_the_run_dir(tmp_path):
    run_dir, outside = tmp_path / "run", tmp_path / "outside"
    run_dir.mkdir()
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    (run_dir / ".model.abc.tmp.h5").write_text("x")
    (run_dir / "features").symlink_to(outside)  # a crafted link: removed, never followed
    (run_dir / "history.csv").write_text("epoch\n")
    assert sorted(remove_leftovers(run_dir)) == [".model.abc.tmp.h5", "features"]
    assert sorted(p.name for p in run_dir.iterdir()) == ["history.csv"]
    assert (outside / "keep.txt").read_text() == "x"


def test_unused_imports_are_skipped_while_tensorflow_loads_and_work_after():
    """The CLI keeps Keras from importing scikit-learn at start-up (1-2 s); a later import still works."""
    import sys

    from trainer.cli.common import UNUSED_IMPORTS, without_unused_imports

    name = UNUSED_IMPORTS[0]
    saved = sys.modules.pop(name, None)
    try:
        with without_unused_imports():
            with pytest.raises(ImportError):
                __import__(name)
        assert name not in sys.modules
    finally:
        if saved is not None:
            sys.modules[name] = saved
