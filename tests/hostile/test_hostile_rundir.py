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
    from tests.hostile.test_hostile_config import BILLION_LAUGHS

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
    from tests.hostile.test_hostile_config import BILLION_LAUGHS

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

    def write(handle: h5py.File) -> None:  # an HDF5 file in memory: only the ordinary write of its bytes meets the full disk
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


# --------------------------------------------------------------------------- issue 19: the run directory's files are read as bounded typed records

import math  # noqa: E402
import random as _random  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from trainer.errors import RunDirError  # noqa: E402


def valid_checkpoint(epoch: int = 1) -> dict:
    """A checkpoint.json as trainer writes it (early_stopping with best weights, reduce_lr_on_plateau, random state)."""
    numpy_keys = list(range(624))
    python_internal = list(range(624)) + [624]
    return {
        "version": 2, "epoch": epoch, "weights_file": f"checkpoint-epoch{epoch:04d}.weights.npz",
        "callbacks": [
            {"wait": 0, "best": 0.25, "best_epoch": 0, "stopped_epoch": 0, "best_weights_file": f"checkpoint-best0-epoch{epoch:04d}.weights.npz"},
            {"wait": 1, "best": "inf", "cooldown_counter": 0},
        ],
        "random": {"seed_generators": [[1, 2]], "numpy": ["MT19937", numpy_keys, 624, 0, 0.0], "python": [3, python_internal, None]},
    }


def resumable_run(tmp_path: Path, mnist_npz: Path, checkpoint: dict | str | bytes, history: str | bytes = "epoch,loss\n1,0.5\n") -> tuple[Path, Path]:
    """A run directory with its config, history and the weights files ``checkpoint`` names; returns (config, run)."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(mnist_npz, train={"epochs": 3})))
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    from trainer.config import load_config

    (run / "config.yaml").write_text(load_config(config).to_yaml())  # as trainer run writes it: resolved
    (run / "history.csv").write_bytes(history if isinstance(history, bytes) else history.encode())
    for epoch in range(1, 4):
        (run / f"checkpoint-epoch{epoch:04d}.weights.npz").write_bytes(b"weights")
        (run / f"checkpoint-best0-epoch{epoch:04d}.weights.npz").write_bytes(b"weights")
    content = checkpoint if isinstance(checkpoint, (str, bytes)) else json.dumps(checkpoint)
    (run / "checkpoint.json").write_bytes(content if isinstance(content, bytes) else content.encode())
    return config, run


BAD_EPOCHS = {"negative": "-1", "zero": "0", "infinity": "Infinity", "nan": "NaN", "huge-float": "1e308", "float": "2.0",
              "bool": "true", "string": '"2"', "beyond-int32": str(2**40), "null": "null"}


@pytest.mark.parametrize("case", sorted(BAD_EPOCHS))
def test_checkpoint_epochs_out_of_range_are_refused(case, cli, tmp_path, mnist_npz):
    text = json.dumps(valid_checkpoint()).replace('"epoch": 1,', f'"epoch": {BAD_EPOCHS[case]},')
    config, run = resumable_run(tmp_path, mnist_npz, text)
    result = cli("run", config, "--run-dir", run, "--resume")
    assert result.exit_code == 2, result.output
    assert "checkpoint.json is malformed: epoch is" in result.text and "cannot be resumed" in result.text
    assert "Traceback" not in result.output


CHECKPOINT_FIELDS = {
    "weights-file-elsewhere": ("weights_file", "model.h5", "weights_file is 'model.h5'"),
    "weights-file-of-another-epoch": ("weights_file", "checkpoint-epoch0002.weights.npz", "holds epoch 2 but epoch is 1"),
    "version-from-the-future": ("version", 99, "version is 99"),
    "callbacks-not-a-list": ("callbacks", {"wait": 1}, "callbacks is"),
    "callback-sets-another-attribute": ("callbacks", [{"filepath": "/etc/passwd"}], "callbacks.0.filepath"),
    "callback-wait-negative": ("callbacks", [{"wait": -3}], "callbacks.0.wait"),
    "callback-best-infinite": ("callbacks", [{"best": 1e999}], "callbacks.0.best"),
    "best-weights-outside": ("callbacks", [{"best_weights_file": "../victim.weights.npz"}], "callbacks.0.best_weights_file"),
    "numpy-state-short": ("random", {"numpy": ["MT19937", [1, 2], 0, 0, 0.0]}, "random.numpy"),
    "python-state-index": ("random", {"python": [3, [0] * 624 + [10**6], None]}, "random.python"),
    "seed-generator-huge": ("random", {"seed_generators": [[2**70]]}, "random.seed_generators"),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_FIELDS))
def test_checkpoint_fields_are_bounded(case, cli, tmp_path, mnist_npz):
    field, value, named = CHECKPOINT_FIELDS[case]
    config, run = resumable_run(tmp_path, mnist_npz, {**valid_checkpoint(), field: value})
    result = cli("run", config, "--run-dir", run, "--resume")
    assert result.exit_code == 2, result.output
    assert "checkpoint.json is malformed" in result.text and named in result.text, result.text
    assert "Traceback" not in result.output


def test_a_valid_checkpoint_reads_back_as_written(tmp_path, mnist_npz):
    from trainer.run.checkpoint import read_checkpoint

    _, run = resumable_run(tmp_path, mnist_npz, valid_checkpoint(2), "epoch,loss\n1,0.5\n2,0.4\n")
    state = read_checkpoint(run)
    assert state.epoch == 2 and state.weights_file == "checkpoint-epoch0002.weights.npz"
    assert state.callbacks[1] == {"wait": 1, "best": "inf", "cooldown_counter": 0}
    assert state.random["python"][0] == 3 and len(state.random["numpy"][1]) == 624


def _mutate_json(value, draw_index: int, replacement):
    """``value`` with its ``draw_index``-th node (in depth-first order) replaced by ``replacement``."""
    counter = [draw_index]

    def walk(node):
        if counter[0] == 0:
            counter[0] -= 1
            return replacement
        counter[0] -= 1
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(value)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)


def checkpoint_only_run(tmp_path: Path, checkpoint: dict | bytes) -> Path:
    """A run directory holding the weights files of epochs 1..3 and ``checkpoint`` (reused across examples)."""
    run = tmp_path / "checkpoint-only"
    if not run.is_dir():
        run.mkdir()
        for epoch in range(1, 4):
            (run / f"checkpoint-epoch{epoch:04d}.weights.npz").write_bytes(b"weights")
            (run / f"checkpoint-best0-epoch{epoch:04d}.weights.npz").write_bytes(b"weights")
    (run / "checkpoint.json").write_bytes(checkpoint if isinstance(checkpoint, bytes) else json.dumps(checkpoint).encode())
    return run


def _checkpoint_outcome(run: Path) -> None:
    """read_checkpoint returns a bounded state or raises RunDirError; anything else fails the test."""
    from trainer.run.checkpoint import read_checkpoint

    try:
        state = read_checkpoint(run)
    except RunDirError as error:
        assert "checkpoint.json" in error.message
        return
    assert state is not None and 1 <= state.epoch <= 2**31 - 1 and state.weights_file.startswith("checkpoint-epoch")
    assert all(set(entry) <= {"wait", "best", "best_epoch", "stopped_epoch", "cooldown_counter", "best_weights_file"} for entry in state.callbacks)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(index=st.integers(min_value=0, max_value=40), replacement=JSON_VALUES)
def test_property_mutated_checkpoint_json_nodes_are_refused_or_bounded(index, replacement, tmp_path):
    _checkpoint_outcome(checkpoint_only_run(tmp_path, _mutate_json(valid_checkpoint(), index, replacement)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_property_mutated_checkpoint_json_bytes_are_refused_or_bounded(data, tmp_path):
    raw = bytearray(json.dumps(valid_checkpoint()).encode())
    for _ in range(data.draw(st.integers(min_value=1, max_value=6))):
        position = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip":
            raw[position] = data.draw(st.integers(min_value=0, max_value=255))
        elif action == "insert":
            raw[position:position] = data.draw(st.binary(min_size=1, max_size=8))
        elif action == "delete" and len(raw) > 1:
            del raw[position]
        elif action == "truncate":
            del raw[max(position, 1):]
    _checkpoint_outcome(checkpoint_only_run(tmp_path, bytes(raw)))


# history.csv: `trainer runs` lists a run whose history.csv is damaged (exit 0, the status says so);
# --resume refuses it (exit 2 naming the file), before TensorFlow.
DAMAGED_HISTORY = {
    "nul-bytes": b"epoch,loss\n1,0.5\x00\x00\n",
    "not-utf8": b"epoch,loss\n1,\xff\xfe0.5\n",
    "random-bytes": bytes(_random.Random(19).randrange(256) for _ in range(4096)),
    "huge-field": b"epoch,loss\n1," + b"9" * (70 * 1024) + b"\n",
    "no-epoch-column": b"loss,accuracy\n0.5,0.9\n",
    "row-too-long": b"epoch,loss\n1,0.5,7\n2,0.4\n",
    "epoch-not-a-number": b"epoch,loss\none,0.5\n2,0.4\n",
    "duplicate-column": b"epoch,loss,loss\n1,0.5,0.5\n",
}


def _special_history(run: Path, kind: str, tmp_path: Path) -> None:
    history = run / "history.csv"
    history.unlink(missing_ok=True)
    if kind == "dev-zero":
        history.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(history)
    elif kind == "link-outside":
        outside = tmp_path / "elsewhere.csv"
        outside.write_text("epoch,loss\n1,0.5\n")
        history.symlink_to(outside)
    elif kind == "folder":
        history.mkdir()
    else:
        history.write_bytes(DAMAGED_HISTORY[kind])


HISTORY_CASES = sorted(DAMAGED_HISTORY) + ["dev-zero", "fifo", "link-outside", "folder"]


@pytest.mark.parametrize("kind", HISTORY_CASES)
def test_trainer_runs_lists_a_run_with_a_damaged_history(kind, cli, tmp_path):
    runs = tmp_path / "outputs"
    good, bad = make_run(runs / "good"), make_run(runs / "bad")
    (good / "history.csv").write_text("epoch,loss,val_accuracy\n1,0.5,0.75\n")
    _special_history(bad, kind, tmp_path)
    result = cli("runs", runs)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    from trainer.run.listing import list_runs

    rows = {row["name"]: row for row in list_runs(runs)}
    assert rows["bad"]["status"] == "unfinished (damaged history.csv)" and rows["bad"]["epochs"] == 0
    assert rows["good"]["status"] == "unfinished" and rows["good"]["validation_accuracy"] == 0.75


@pytest.mark.parametrize("kind", HISTORY_CASES)
def test_resume_refuses_a_damaged_history_naming_it(kind, cli, tmp_path, mnist_npz):
    config, run = resumable_run(tmp_path, mnist_npz, valid_checkpoint())
    _special_history(run, kind, tmp_path)
    result = cli("run", config, "--run-dir", run, "--resume")
    assert result.exit_code == 2, result.output
    assert "history.csv" in result.text and "cannot be resumed" in result.text, result.text
    assert "Traceback" not in result.output


def test_resume_drops_a_row_cut_short_by_a_kill(tmp_path, mnist_npz):
    from trainer.run.checkpoint import truncate_history

    _, run = resumable_run(tmp_path, mnist_npz, valid_checkpoint(1), "epoch,loss,accuracy\n1,0.5,0.9\n2,0.4\n")
    assert truncate_history(run / "history.csv", 1) == [{"epoch": 1, "loss": 0.5, "accuracy": 0.9}]
    assert (run / "history.csv").read_bytes() == b"epoch,loss,accuracy\r\n1,0.5,0.9\r\n"


def test_the_history_writer_reads_the_header_with_the_bounds(tmp_path):
    from trainer.run.rundir import HistoryWriter

    path = tmp_path / "history.csv"
    path.write_bytes(b"epoch,\xff\xfeloss\n")
    with pytest.raises(RunDirError, match="history.csv: byte 6 is not UTF-8"):
        HistoryWriter(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_property_mutated_history_csv_is_listed_or_refused(data, tmp_path):
    from trainer.run.listing import describe_run
    from trainer.run.rundir import read_history

    raw = bytearray(b"epoch,accuracy,loss,val_accuracy,val_loss,learning_rate\n1,0.5,1.4,0.9,0.4,0.01\n2,1.0,0.2,1.0,0.03,0.01\n")
    for _ in range(data.draw(st.integers(min_value=1, max_value=6))):
        position = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "quote", "comma", "newline"]))
        if action == "flip":
            raw[position] = data.draw(st.integers(min_value=0, max_value=255))
        elif action == "insert":
            raw[position:position] = data.draw(st.binary(min_size=1, max_size=8))
        elif action == "delete" and len(raw) > 1:
            del raw[position]
        else:
            raw[position:position] = {"quote": b'"', "comma": b",", "newline": b"\n"}[action]
    run = tmp_path / "runs" / "run"
    if not run.is_dir():
        make_run(run)
    (run / "history.csv").write_bytes(bytes(raw))
    try:
        rows = read_history(run / "history.csv")
    except RunDirError as error:
        assert "history.csv" in error.message
        rows = None
    if rows is not None:
        assert all(isinstance(row["epoch"], int) and 0 <= row["epoch"] <= 2**31 - 1 for row in rows)
    row = describe_run(run)
    assert row["status"] == ("unfinished" if rows is not None else "unfinished (damaged history.csv)")


# metrics.json / manifest.json through the one run-directory reader
BAD_METRICS = {
    "fifo": None,
    "epochs-negative": {"status": "completed", "epochs_completed": -5},
    "epochs-string": {"status": "completed", "epochs_completed": "many"},
    "wall-seconds-text": {"status": "completed", "wall_seconds": "slow"},
    "accuracy-list": {"status": "completed", "test": {"accuracy": [1, 2]}},
    "status-number": {"status": 3},
}


@pytest.mark.parametrize("case", sorted(BAD_METRICS))
def test_trainer_runs_marks_a_malformed_metrics_json(case, cli, tmp_path):
    runs = tmp_path / "outputs"
    run = make_run(runs / "run")
    if BAD_METRICS[case] is None:
        os.mkfifo(run / "metrics.json")
    else:
        (run / "metrics.json").write_text(json.dumps(BAD_METRICS[case]))
    result = cli("runs", runs)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    from trainer.run.listing import list_runs

    assert list_runs(runs)[0]["status"] == "unreadable metrics.json"


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_manifest_that_is_not_a_regular_file_is_refused(kind, cli, tmp_path):
    run = make_run(tmp_path / "run")
    (run / "manifest.json").unlink()
    os.mkfifo(run / "manifest.json") if kind == "fifo" else (run / "manifest.json").mkdir()
    result = cli("eval", run)
    assert result.exit_code == 2, result.output
    assert "manifest.json is not a regular file" in result.text


def test_trainer_runs_shows_markup_in_names_and_statuses_as_text(cli, tmp_path):
    runs = tmp_path / "outputs"
    run = make_run(runs / "[bold]x")
    (run / "metrics.json").write_text(json.dumps({"status": "ok[/nope]"}))
    result = cli("runs", runs)
    assert result.exit_code == 0, result.output
    assert "[bold]x" in result.unwrapped and "ok[/nope]" in result.unwrapped


def test_run_files_are_read_under_a_relative_run_directory(cli, tmp_path, monkeypatch, mnist_npz):
    from trainer.run.checkpoint import read_checkpoint
    from trainer.run.listing import list_runs

    monkeypatch.chdir(tmp_path)
    run = make_run(Path("outputs") / "run")
    (run / "metrics.json").write_text(json.dumps({"status": "completed", "epochs_completed": 2}))
    (run / "history.csv").write_text("epoch,loss,val_accuracy\n1,0.5,0.5\n2,0.4,0.75\n")
    assert list_runs(Path("outputs"))[0]["status"] == "completed"
    resumable_run(Path("."), mnist_npz, valid_checkpoint())
    assert read_checkpoint(Path("run")).epoch == 1


@pytest.mark.parametrize("which", ["weights", "best"])
def test_checkpoint_weights_linking_out_of_the_run_are_refused(which, cli, tmp_path, mnist_npz):
    config, run = resumable_run(tmp_path, mnist_npz, valid_checkpoint())
    outside = tmp_path / "outside.weights.npz"
    outside.write_bytes(b"weights")
    name = "checkpoint-epoch0001.weights.npz" if which == "weights" else "checkpoint-best0-epoch0001.weights.npz"
    (run / name).unlink()
    (run / name).symlink_to(outside)
    result = cli("run", config, "--run-dir", run, "--resume")
    assert result.exit_code == 2, result.output
    assert "points outside" in result.text and "Traceback" not in result.output


def _npz_member(name: str, header_shape: tuple, payload: bytes, compressed: bool = False) -> bytes:
    import io
    import zipfile

    import numpy as np

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": header_shape})
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w", compression=zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED) as archive:
        archive.writestr(name, header.getvalue() + payload)
    return data.getvalue()


@pytest.mark.parametrize("case", ["declares-terabytes", "compressed-bomb", "not-a-zip"])
def test_checkpoint_weights_are_bounded_before_numpy_allocates(case, tmp_path):
    from trainer.run.checkpoint import read_arrays

    path = tmp_path / "checkpoint-epoch0001.weights.npz"
    if case == "declares-terabytes":
        path.write_bytes(_npz_member("model/000000.npy", (10**12,), b"x" * 64))
    elif case == "compressed-bomb":
        path.write_bytes(_npz_member("model/000000.npy", (2**22,), bytes(2**24), compressed=True))
    else:
        path.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(RunDirError, match="is not a weights file trainer writes"):
        read_arrays(path)


def test_csv_files_people_open_in_spreadsheets_hold_no_formulas(tmp_path):
    """trials.csv and predict's CSV: a cell from an untrusted name starting with = + - @ is text, numbers stay numbers."""
    import csv

    from trainer.inference.predict import write_predictions
    from trainer.sweep.events import TrialRecord
    from trainer.sweep.outputs import trials_csv

    text = trials_csv([TrialRecord(0, "failed", -0.5, {"model.dropout": "=1+1"}, run_dir="@SUM(A1)", host="+cmd", reason="=HYPERLINK(\"x\")")],
                      ["model.dropout"])
    (row,) = list(csv.DictReader(text.splitlines()))
    assert row["value"] == "-0.5" and row["model.dropout"] == "'=1+1" and row["run_dir"] == "'@SUM(A1)"
    assert row["host"] == "'+cmd" and row["reason"].startswith("'=HYPERLINK")
    record = {"input": "=cmd|' /C calc'!A0.png", "index": 0, "predicted": 1, "name": "-2+3", "probability": 0.25}
    write_predictions([record], tmp_path / "p.csv")
    (row,) = list(csv.DictReader((tmp_path / "p.csv").read_text().splitlines()))
    assert row["input"].startswith("'=cmd") and row["name"] == "'-2+3" and row["probability"] == "0.25" and row["predicted"] == "1"


def test_metrics_json_keeps_test_tta_when_read_back_and_refuses_a_forged_one(tmp_path):
    import json

    from trainer.errors import RunDirError
    from trainer.readers.run_files import read_metrics_record

    record = {"status": "completed", "test": {"loss": 0.5, "accuracy": 0.9}, "test_tta": {"mode": "flip", "loss": 0.4, "accuracy": 0.92}}
    (tmp_path / "metrics.json").write_text(json.dumps(record))
    assert read_metrics_record(tmp_path).test_tta == {"mode": "flip", "loss": 0.4, "accuracy": 0.92}
    (tmp_path / "metrics.json").write_text(json.dumps({**record, "test_tta": {"accuracy": [1] * 10}}))
    with pytest.raises(RunDirError, match="metrics.json"):
        read_metrics_record(tmp_path)
