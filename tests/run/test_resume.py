"""Checkpoints and resume: kill a real `trainer run` (SIGKILL, SIGINT, SIGTERM), resume, compare with an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import tiny_config
from tests.datagen import write_mnist_npz
from trainer.errors import RunDirError
from trainer.run.checkpoint import CHECKPOINT_FILE, RunLock, config_differences
from trainer.run.rundir import read_history

EPOCHS = 6


@pytest.fixture(scope="module")
def long_config(tmp_path_factory):
    """Epochs of a hundred small batches, so that a signal lands while the run is mid-way."""
    folder = tmp_path_factory.mktemp("long")
    data = write_mnist_npz(folder / "long.npz", n_train=3072, n_test=64, seed=0)
    config = tiny_config(
        data,
        train={"epochs": EPOCHS, "batch_size": 10},
        # one step per call: epochs long enough (~0.5 s) that the signal lands mid-run even on a
        # loaded machine, without changing what is computed
        compile={"steps_per_execution": 1},
        optimizer={"name": "adam", "learning_rate": 0.001},
        callbacks=[{"name": "early_stopping", "patience": 50}, {"name": "reduce_lr_on_plateau", "patience": 1, "factor": 0.5}],
    )
    path = folder / "long.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def assert_same_history(resumed: Path, reference: Path) -> None:
    got, want = read_history(resumed / "history.csv"), read_history(reference / "history.csv")
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want] == list(range(1, EPOCHS + 1))
    for a, b in zip(got, want):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["epoch"], key)
    final, expected = (json.loads((d / "metrics.json").read_text()) for d in (resumed, reference))
    assert final["status"] == "completed" and final["epochs_completed"] == EPOCHS
    assert final["test"]["loss"] == pytest.approx(expected["test"]["loss"], rel=1e-5)


def start_and_signal(config: Path, run_dir: Path, env: dict, signum: int) -> subprocess.CompletedProcess:
    """Start `python -m trainer run`, wait until 2 epochs are in history.csv, send ``signum``, wait for the end."""
    process = subprocess.Popen(
        [sys.executable, "-m", "trainer", "run", str(config), "--run-dir", str(run_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    history = run_dir / "history.csv"
    while process.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 3:  # header + 2 epochs
            process.send_signal(signum)
            break
        time.sleep(0.01)
    output, _ = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, output)


@pytest.fixture(scope="module")
def reference(long_config):
    """The same config, never interrupted (once per test process)."""
    from trainer.cli import app

    run_dir = long_config.parent / "reference"
    result = CliRunner().invoke(app, ["run", str(long_config), "--run-dir", str(run_dir)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(cli, long_config, reference, tmp_path, subprocess_env):
    run_dir = tmp_path / "killed"
    killed = start_and_signal(long_config, run_dir, subprocess_env, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL, killed.stdout
    state = json.loads((run_dir / CHECKPOINT_FILE).read_text())
    assert 1 <= state["epoch"] < EPOCHS  # killed mid-run, a complete checkpoint left
    assert (run_dir / state["weights_file"]).exists()
    assert not (run_dir / "model.h5").exists()

    result = cli("run", long_config, "--run-dir", run_dir, "--resume")
    assert result.exit_code == 0, result.output
    assert_same_history(run_dir, reference)
    assert not (run_dir / "checkpoint-epoch0001.weights.npz").exists()  # older checkpoints are removed


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_keeps_checkpoint_prints_resume_command_exit_130(cli, long_config, reference, tmp_path, subprocess_env, signum):
    run_dir = tmp_path / "interrupted"
    stopped = start_and_signal(long_config, run_dir, subprocess_env, signum)
    assert stopped.returncode == 130, stopped.stdout
    assert "Traceback" not in stopped.stdout
    command = f"trainer run {long_config} --run-dir {run_dir} --resume"
    assert command in " ".join(stopped.stdout.split())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    state = json.loads((run_dir / CHECKPOINT_FILE).read_text())
    assert metrics["status"] == "interrupted"
    # the signal may land between an epoch's history row and its checkpoint: that epoch is redone on resume
    assert metrics["epochs_completed"] - 1 <= state["epoch"] <= metrics["epochs_completed"]
    assert state["epoch"] >= 1

    result = cli("run", long_config, "--run-dir", run_dir, "--resume")
    assert result.exit_code == 0, result.output
    assert_same_history(run_dir, reference)


@pytest.fixture
def two_epoch_run(cli, mnist_npz, write_config, tmp_path):
    config = write_config(tiny_config(mnist_npz, train={"epochs": 2}))
    run_dir = tmp_path / "run"
    assert cli("run", config, "--run-dir", run_dir).exit_code == 0
    return config, run_dir


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.slow
def test_resume_with_more_epochs_after_a_kill_between_history_and_checkpoint(cli, two_epoch_run, tmp_path):
    config, run_dir = two_epoch_run
    reference = tmp_path / "reference"
    assert cli("run", config, "--set", "train.epochs=3", "--run-dir", reference).exit_code == 0
    with open(run_dir / "history.csv", "a") as handle:  # a row written, then killed before its checkpoint
        handle.write("3,0.1,0.2,0.3,0.4,0.01,1.0,100.0\n")

    result = cli("run", config, "--set", "train.epochs=3", "--run-dir", run_dir, "--resume")
    assert result.exit_code == 0, result.output
    rows, expected = read_history(run_dir / "history.csv"), read_history(reference / "history.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["loss"] == pytest.approx(expected[-1]["loss"], rel=1e-5)
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_completed"] == 3


@pytest.mark.slow
def test_resume_refuses_a_different_config_and_changes_nothing(cli, two_epoch_run):
    config, run_dir = two_epoch_run
    before = snapshot(run_dir)
    result = cli("run", config, "--run-dir", run_dir, "--resume", "--set", "seed=7", "--set", "optimizer.learning_rate=0.1")
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "seed: 1 in the run, 7 now" in text and "optimizer.learning_rate: 0.01 in the run, 0.1 now" in text
    assert "Traceback" not in result.output
    assert snapshot(run_dir) == before


@pytest.mark.slow
def test_resume_refusals(cli, two_epoch_run, tmp_path, write_config, mnist_npz):
    config, run_dir = two_epoch_run
    cases = [
        (("--run-dir", run_dir, "--resume"), "already completed"),
        (("--resume",), "--resume needs --run-dir"),
        (("--run-dir", tmp_path / "nowhere", "--resume"), "does not exist"),
        (("--run-dir", config, "--resume"), "is a file, not a run directory"),
        (("--run-dir", run_dir, "--resume", "--set", "train.epochs=1"), "must be at least 2"),
    ]
    for args, expected in cases:
        result = cli("run", config, *args)
        assert result.exit_code == 2, (args, result.output)
        assert expected in " ".join(result.output.split()), (args, result.output)
    (run_dir / CHECKPOINT_FILE).unlink()
    result = cli("run", config, "--run-dir", run_dir, "--resume", "--set", "train.epochs=3")
    assert result.exit_code == 2 and "no checkpoint" in result.output


@pytest.mark.slow
def test_existing_run_dir_without_resume_is_untouched(cli, two_epoch_run):
    config, run_dir = two_epoch_run
    before = snapshot(run_dir)
    result = cli("run", config, "--run-dir", run_dir)
    assert result.exit_code == 2 and "already exists" in result.output
    assert snapshot(run_dir) == before


@pytest.mark.slow
def test_a_locked_run_dir_is_refused(cli, two_epoch_run):
    config, run_dir = two_epoch_run
    lock = RunLock(run_dir).acquire()  # another trainer process holds the run directory
    try:
        result = cli("run", config, "--run-dir", run_dir, "--resume", "--set", "train.epochs=3")
    finally:
        lock.release()
    assert result.exit_code == 2 and "in use by another trainer process" in " ".join(result.output.split())
    assert json.loads((run_dir / CHECKPOINT_FILE).read_text())["epoch"] == 2


@pytest.mark.slow
def test_nan_loss_fails_with_exit_1_and_keeps_the_last_checkpoint(cli, mnist_npz, write_config, tmp_path):
    config = write_config(
        tiny_config(mnist_npz, model={"type": "mlp", "hidden_units": [16], "output": "logits"},
                    optimizer={"name": "sgd", "learning_rate": 1.0e30}, train={"epochs": 3})
    )
    run_dir = tmp_path / "nan"
    result = cli("run", config, "--run-dir", run_dir)
    assert result.exit_code == 1, result.output
    assert "the training loss became nan" in " ".join(result.output.split())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "nan" in metrics["reason"]
    assert not (run_dir / "model.h5").exists()
    assert not (run_dir / CHECKPOINT_FILE).exists()  # the NaN epoch is never checkpointed


@pytest.mark.slow
def test_unwritable_run_dir_is_a_clear_error(cli, mnist_npz, write_config, tmp_path):
    config = write_config(tiny_config(mnist_npz))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = cli("run", config, "--run-dir", blocker / "run")
    assert result.exit_code == 2
    assert "cannot write the run directory" in " ".join(result.output.split())


def test_config_differences_ignore_name_output_device_and_epochs():
    old = {"name": "a", "seed": 1, "train": {"epochs": 2, "batch_size": 8}, "output": {"dir": "x"}, "device": "auto"}
    new = {"name": "b", "seed": 1, "train": {"epochs": 5, "batch_size": 16}, "output": {"dir": "y"}, "device": "cpu"}
    assert config_differences(old, new) == ["train.batch_size: 8 in the run, 16 now"]


# --------------------------------------------------------------------------- the data a run was trained on (issue 19)


@pytest.mark.slow
@pytest.mark.parametrize("change", ["other-content", "other-size"])
def test_resume_refuses_when_the_data_file_was_replaced(change, cli, two_epoch_run, mnist_npz):
    config, run_dir = two_epoch_run
    assert json.loads((run_dir / CHECKPOINT_FILE).read_text())["data"]["path"] == str(mnist_npz)
    if change == "other-content":  # same shapes and size, other pixels: training would go on silently
        write_mnist_npz(mnist_npz, n_train=256, n_test=64, seed=1)
    else:
        write_mnist_npz(mnist_npz, n_train=320, n_test=64, seed=0)
    before = snapshot(run_dir)
    result = cli("run", config, "--run-dir", run_dir, "--resume", "--set", "train.epochs=3")
    assert result.exit_code == 2, result.output
    assert "--resume: data.path" in result.text and "is not the data" in result.text and str(mnist_npz) in result.unwrapped
    assert ("bytes when the run started" if change == "other-size" else "its content changed") in result.text
    assert "Traceback" not in result.output
    assert snapshot(run_dir) == before


@pytest.mark.slow
def test_resume_on_the_same_data_copied_back_goes_on(cli, two_epoch_run, mnist_npz):
    config, run_dir = two_epoch_run
    data = mnist_npz.read_bytes()
    mnist_npz.unlink()
    mnist_npz.write_bytes(data)  # a new file (new mtime) with the same bytes
    result = cli("run", config, "--run-dir", run_dir, "--resume", "--set", "train.epochs=3")
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / CHECKPOINT_FILE).read_text())["epoch"] == 3


def test_data_fingerprints_of_files_and_folders(tmp_path, monkeypatch):
    from trainer.run import data_fingerprint
    from trainer.run.data_fingerprint import data_changes, fingerprint_path

    folder = tmp_path / "images"
    for split, name in (("train", "a.png"), ("train", "b.png"), ("test", "c.png")):
        (folder / split / "cat").mkdir(parents=True, exist_ok=True)
        (folder / split / "cat" / name).write_bytes(name.encode() * 10)
    (folder / ".DS_Store").write_bytes(b"finder")
    first = fingerprint_path(folder)
    assert first["kind"] == "folder" and first["files"] == 3 and first["content"] == "full"
    (folder / ".DS_Store").write_bytes(b"changed")  # hidden entries are not data
    assert data_changes(first, fingerprint_path(folder)) == []
    (folder / "train" / "cat" / "b.png").write_bytes(b"B" * 50)  # same size, other content
    assert "its content changed" in data_changes(first, fingerprint_path(folder))[0]
    (folder / "train" / "cat" / "d.png").write_bytes(b"d")
    assert "3 files when the run started, 4 now" in data_changes(first, fingerprint_path(folder))
    (folder / "train" / "loop").symlink_to(folder)  # a link loop ends at the depth limit
    assert fingerprint_path(folder)["files"] >= 4  # it ends
    monkeypatch.setattr(data_fingerprint, "HASH_LIMIT", 10)  # big data: names, sizes and modification times
    big = fingerprint_path(folder / "test" / "cat" / "c.png")
    assert big["content"] == "listing" and data_changes(big, fingerprint_path(folder / "test" / "cat" / "c.png")) == []
    os.utime(folder / "test" / "cat" / "c.png", ns=(1, 1))
    assert "modification times changed" in data_changes(big, fingerprint_path(folder / "test" / "cat" / "c.png"))[0]


def test_a_checkpoint_with_a_malformed_data_record_is_refused(tmp_path):
    from trainer.readers.run_files import read_checkpoint_record

    run = tmp_path / "run"
    run.mkdir()
    record = {"version": 2, "epoch": 1, "weights_file": "checkpoint-epoch0001.weights.npz",
              "data": {"path": "x", "kind": "file", "files": 1, "bytes": -1, "content": "full", "digest": "0" * 64}}
    (run / CHECKPOINT_FILE).write_text(json.dumps(record))
    with pytest.raises(RunDirError, match="data.bytes is -1"):
        read_checkpoint_record(run)
