"""Crafted run directories: they are data, never code, and every path they name stays inside them.

Fast: the run directories are written by hand (no training); the model file is never reached
because each refusal comes first.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_config

MANIFEST = {
    "dataset": "mnist", "num_classes": 10, "class_names": [str(i) for i in range(10)], "input_shape": [28, 28, 1],
    "label_encoding": "sparse", "loss": {"name": "sparse_categorical_crossentropy"}, "model_output": "softmax",
    "custom_objects": [], "model_type": "mlp",
}
EVIL = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\nclass Evil:\n    pass\n"


def make_run(path: Path, data_path: Path | None = None, **manifest) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump(tiny_config(data_path)))
    (path / "manifest.json").write_text(json.dumps({**MANIFEST, **manifest}))
    (path / "model.h5").write_bytes(b"not really a model")
    return path


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "code-ran.txt"


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_code_beside_the_manifest_is_never_imported(command, cli, tmp_path, marker, monkeypatch):
    run = make_run(tmp_path / "run", custom_objects=[{"ref": "helpers:Evil", "path": str(tmp_path / "run")}])
    (run / "helpers.py").write_text(EVIL.format(marker=str(marker)))
    monkeypatch.chdir(tmp_path)
    args = [command, run] + ([tmp_path / "x.npy"] if command == "predict" else [])
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert not marker.exists(), "a run directory made trainer import its code"
    text = " ".join(result.output.split())
    assert "module 'helpers'" in text and "--code DIR" in text


def test_code_in_a_folder_the_manifest_names_is_never_imported(cli, tmp_path, marker, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "sneaky.py").write_text(EVIL.format(marker=str(marker)))
    run = make_run(tmp_path / "run", custom_objects=[{"ref": "sneaky:Evil", "path": str(elsewhere)}])
    monkeypatch.chdir(tmp_path)
    result = cli("eval", run)
    assert result.exit_code == 2
    assert not marker.exists()


def test_installed_modules_named_by_a_manifest_are_never_called(cli, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    run = make_run(
        tmp_path / "run",
        custom_objects=[{"ref": "subprocess:run", "path": "/", "factory_params": {"args": ["touch", str(marker)]}}],
    )
    monkeypatch.chdir(tmp_path)
    result = cli("eval", run)
    assert result.exit_code == 2
    assert not marker.exists()
    assert "module 'subprocess'" in " ".join(result.output.split())


def test_code_is_imported_from_the_folder_named_with_code(cli, tmp_path, marker, monkeypatch):
    code = tmp_path / "mycode"
    code.mkdir()
    (code / "helpers.py").write_text(EVIL.format(marker=str(marker)))
    run = make_run(tmp_path / "run", custom_objects=[{"ref": "helpers:Evil", "path": str(code)}])
    monkeypatch.chdir(tmp_path)
    result = cli("eval", run, "--code", code)
    assert marker.exists()  # allowed: the user named the folder
    assert result.exit_code == 2 and "cannot load the model" in result.output  # the fake model.h5 comes next


def test_api_code_dirs(tmp_path, marker, monkeypatch):
    import trainer
    from trainer.errors import BadInputError

    code = tmp_path / "mycode"
    code.mkdir()
    (code / "helpers.py").write_text(EVIL.format(marker=str(marker)))
    run = make_run(tmp_path / "run", custom_objects=[{"ref": "helpers:Evil", "path": str(code)}])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInputError, match="module 'helpers'"):
        trainer.load_run(run)
    assert not marker.exists()
    with pytest.raises(BadInputError, match="cannot load the model"):
        trainer.load_run(run, code_dirs=[code])
    assert marker.exists()


MALFORMED = {
    "num_classes-text": {"num_classes": "ten"},
    "num_classes-huge": {"num_classes": 10**30},
    "class_names-numbers": {"class_names": [1, 2]},
    "input_shape-negative": {"input_shape": [28, -28, 1]},
    "input_shape-zero": {"input_shape": [0, 28, 1]},
    "label_encoding": {"label_encoding": "weird"},
    "model_output": {"model_output": "sigmoid"},
    "custom_objects-not-entries": {"custom_objects": [{"ref": 5}]},
    "custom_objects-not-list": {"custom_objects": "helpers:Evil"},
    "custom_objects-bad-ref": {"custom_objects": [{"ref": "not a ref"}]},
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("command", ["eval", "predict"])
def test_a_malformed_manifest_is_refused(case, command, cli, tmp_path):
    run = make_run(tmp_path / "run", **MALFORMED[case])
    args = [command, run] + ([tmp_path / "x.npy"] if command == "predict" else [])
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert "manifest.json is malformed" in " ".join(result.output.split())  # (the test's folder name says 'malformed' too)
    assert "Traceback" not in result.output


@pytest.mark.parametrize("content", ["[" * 100_000, "{not json", "[1, 2]", "\x00\x01"], ids=["deep", "broken", "list", "nul"])
def test_an_unreadable_manifest_is_refused(content, cli, tmp_path):
    run = make_run(tmp_path / "run")
    (run / "manifest.json").write_text(content)
    result = cli("eval", run)
    assert result.exit_code == 2, result.output
    assert re.search(r"manifest\.json:? (is not valid JSON|holds a JSON list|holds a NUL byte)", " ".join(result.output.split()))


@pytest.mark.parametrize("name", ["manifest.json", "model.h5", "config.yaml"])
def test_run_files_linking_outside_the_run_directory_are_refused(name, cli, tmp_path):
    run = make_run(tmp_path / "run")
    outside = tmp_path / f"outside-{name}"
    (run / name).rename(outside)
    (run / name).symlink_to(outside)
    result = cli("eval", run)
    assert result.exit_code == 2, result.output
    assert re.search(r"points outside (the run directory )?\S*run", " ".join(result.output.split()))


def test_a_yaml_bomb_as_the_run_config_is_refused(cli, tmp_path):
    from tests.test_hostile_config import BILLION_LAUGHS

    run = make_run(tmp_path / "run")
    (run / "config.yaml").write_text(BILLION_LAUGHS)
    result = cli("eval", run)
    assert result.exit_code == 2
    assert "refused: more than 10000 values once aliases are expanded" in " ".join(result.output.split())


def write_checkpoint(run: Path, weights_file: str) -> None:
    (run / "checkpoint.json").write_text(json.dumps({"version": 1, "epoch": 1, "weights_file": weights_file, "callbacks": [], "random": {}}))


@pytest.mark.parametrize("weights_file", ["../victim.weights.h5", "{victim}", ".", "sub/../../victim.weights.h5"])
def test_a_checkpoint_naming_a_file_outside_the_run_is_refused(weights_file, cli, tmp_path, write_config, mnist_npz):
    victim = tmp_path / "victim.weights.h5"
    victim.write_text("precious")
    config = write_config(tiny_config(mnist_npz, train={"epochs": 2}))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(config.read_text())
    (run / "history.csv").write_text("epoch,loss\n1,0.5\n")
    write_checkpoint(run, weights_file.format(victim=victim))
    result = cli("run", config, "--run-dir", run, "--resume")
    assert result.exit_code == 2, result.output
    assert victim.read_text() == "precious"
    from trainer.run.checkpoint import read_checkpoint_quiet

    assert read_checkpoint_quiet(run) is None  # so the checkpointer never deletes it either


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size: str, read_only: bool = False):
    """A small tmpfs at ``path`` (tests run as root here); skips with the reason where mounting is refused."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); run as root to test a full or read-only disk")
    try:
        yield path
        if read_only:
            pass
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount_read_only(path: Path) -> None:
    done = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only ({done.stderr.strip()})")


def test_eval_in_a_read_only_run_directory_is_refused_before_tensorflow(cli, tmp_path):
    with mounted_tmpfs(tmp_path / "ro", "1m") as mount:
        run = make_run(mount / "run")
        remount_read_only(mount)
        result = cli("eval", run)
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.split())
        assert "cannot write in" in text and "--output" in text


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_an_unwritable_output_is_refused_before_tensorflow(command, cli, tmp_path):
    run = make_run(tmp_path / "run")
    with mounted_tmpfs(tmp_path / "ro", "1m") as mount:
        remount_read_only(mount)
        args = [command, run] + ([tmp_path / "x.npy"] if command == "predict" else []) + ["--output", mount / "out.json"]
        result = cli(*args)
        assert result.exit_code == 2, result.output
        assert "cannot write in" in " ".join(result.output.split())


@pytest.mark.parametrize("api", ["evaluate", "load_run", "predict"])
def test_nul_bytes_in_run_paths_are_refused(api, tmp_path):
    import trainer
    from trainer.errors import BadInputError

    args = (str(tmp_path / "r\x00un"),) + ((["x.png"],) if api == "predict" else ())
    with pytest.raises(BadInputError, match="NUL byte"):
        getattr(trainer, api)(*args)


def test_eval_config_whose_label_encoding_disagrees_with_the_model(cli, tmp_path, write_config):
    run = make_run(tmp_path / "run")
    other = write_config(tiny_config(None, loss="categorical_crossentropy"), name="other.yaml")
    result = cli("eval", run, "--config", other)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "labels.encoding resolves to onehot" in text and "trained with sparse labels" in text
    result = cli("eval", run, "--set", "loss=categorical_crossentropy")
    assert result.exit_code == 2 and "trained with sparse labels" in " ".join(result.output.split())


def test_resume_reads_the_run_config_with_the_yaml_limits(cli, tmp_path, write_config, mnist_npz):
    from tests.test_hostile_config import BILLION_LAUGHS

    config = write_config(tiny_config(mnist_npz, train={"epochs": 2}))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(BILLION_LAUGHS)
    (run / "checkpoint-epoch0001.weights.h5").write_text("")
    write_checkpoint(run, "checkpoint-epoch0001.weights.h5")
    result = cli("run", config, "--run-dir", run, "--resume")
    assert result.exit_code == 2
    assert "refused: more than 10000 values once aliases are expanded" in " ".join(result.output.split())
    assert os.path.exists(run / "checkpoint-epoch0001.weights.h5")


def _disk_filler(folder: Path, when: str, epoch: int = 0):
    """A Keras callback that fills the disk holding ``folder`` (at an epoch's end, or when fit ends)."""
    import keras

    def fill() -> None:  # then give back 32 KiB: room for metrics.json, not for an HDF5 file
        path = folder / "filler"
        with open(path, "wb", buffering=0) as handle:
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * 4096)
        os.truncate(path, max(0, path.stat().st_size - 32768))

    class Filler(keras.callbacks.Callback):
        def on_epoch_end(self, index, logs=None):
            if when == "checkpoint" and index + 1 == epoch:
                fill()

        def on_train_end(self, logs=None):
            if when == "model":
                fill()

    return Filler()


@pytest.mark.slow
@pytest.mark.parametrize("when, expected", [("checkpoint", "cannot write the checkpoint of epoch 2"), ("model", "cannot write")])
def test_a_full_disk_gives_one_message_and_a_failed_metrics_json(when, expected, tmp_path, mnist_npz, capfd):
    import trainer
    from trainer.errors import RunFailedError

    with mounted_tmpfs(tmp_path / "small", "4m") as mount:
        run = mount / "run"
        config = trainer.load_config(_write(tmp_path / "c.yaml", tiny_config(mnist_npz, train={"epochs": 2})))
        with pytest.raises(RunFailedError) as info:
            trainer.train(config, run_dir=run, callbacks=[_disk_filler(mount, when, epoch=2)])
        assert expected in info.value.message and "No space left on device" in info.value.message
        (mount / "filler").unlink()
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["status"] == "failed" and "No space left on device" in metrics["reason"]
        leftovers = sorted(p.name for p in run.iterdir())
        assert not [name for name in leftovers if ".tmp" in name], leftovers
        assert "model.h5" not in leftovers
        if when == "checkpoint":
            assert json.loads((run / "checkpoint.json").read_text())["epoch"] == 1
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception ignored" not in err, err


def _write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def test_nul_byte_in_run_dir_is_refused(tmp_path, mnist_npz):
    import trainer
    from trainer.errors import BadInputError

    with pytest.raises(BadInputError, match="NUL byte"):
        trainer.train(_write(tmp_path / "c.yaml", tiny_config(mnist_npz)), run_dir=str(tmp_path / "r\x00"))


def test_an_hdf5_write_that_fills_the_disk_is_one_oserror(tmp_path, capfd):
    """Without the free-space estimate, a mid-write ENOSPC from h5py is still one OSError, nothing left behind."""
    import gc

    import h5py
    import numpy as np

    from trainer.run.rundir import write_h5_atomically

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as handle:
            handle.create_dataset("w", data=np.ones(400_000, np.float32))

    with mounted_tmpfs(tmp_path / "small", "256k") as mount:
        with pytest.raises(OSError) as info:
            write_h5_atomically(mount / "model.h5", write)
        assert "No space left on device" in str(info.value)
        assert list(mount.iterdir()) == []
        gc.collect()
        with pytest.raises(OSError, match="bytes free, about"):
            write_h5_atomically(mount / "model.h5", write, needed=10**9)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception ignored" not in err, err


@pytest.mark.parametrize("target", ["/dev/zero", "folder"])
def test_a_checkpoint_json_that_is_not_a_regular_file_is_refused(target, cli, tmp_path, write_config, mnist_npz):
    config = write_config(tiny_config(mnist_npz, train={"epochs": 2}))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(config.read_text())
    if target == "folder":
        (run / "checkpoint.json").mkdir()
    else:
        (run / "checkpoint.json").symlink_to(target)
    result = cli("run", config, "--run-dir", run, "--resume")
    assert result.exit_code == 2, result.output
    assert re.search("not a regular file|points outside", " ".join(result.output.split()))
