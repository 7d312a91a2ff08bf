"""The backend-neutral data path: JAX (and PyTorch) train, evaluate and predict without TensorFlow.

``trainer.data.batches``: a ``keras.utils.PyDataset`` on the other backends, ``tf.data`` on
TensorFlow, one definition of epoch N's order. The subprocess tests run the CLI with
``KERAS_BACKEND=jax`` where ``import tensorflow`` fails (tests/no_tensorflow.py).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT, tiny_config
from tests.datagen import write_image_folders

needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
# The JAX runs: in CI they run in .ci/neutral-venv's environment, which has no TensorFlow at all
# (tests/test_neutral_venv.py); where TensorFlow is installed they run only with TRAINER_NEUTRAL_HERE=1
# (then tests/no_tensorflow.py blocks its import), so that the suite runs them once.
without_tensorflow = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is not None and os.environ.get("TRAINER_NEUTRAL_HERE") != "1",
    reason="runs in .ci/neutral-venv (no TensorFlow; tests/test_neutral_venv.py); TRAINER_NEUTRAL_HERE=1 runs it here",
)
# Comparisons with the tf.data path (skipped in .ci/neutral-venv's environment, which has no TensorFlow)
needs_tensorflow = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed")
AUGMENT = {"flip": "horizontal", "crop": 2, "rotation": 0.05, "contrast": 0.2}


def test_epoch_order_is_a_permutation_of_seed_and_epoch_only():
    from trainer.data.batches import epoch_order

    order = epoch_order(1000, 3, 7)
    assert sorted(order.tolist()) == list(range(1000))
    np.testing.assert_array_equal(order, epoch_order(1000, 3, 7))
    assert not np.array_equal(order, epoch_order(1000, 3, 8))
    assert not np.array_equal(order, epoch_order(1000, 4, 7))


def _tf_batches(x, y, epoch, **settings):
    import tensorflow as tf

    from trainer.data.batches import make_batches

    variable = tf.Variable(epoch, dtype=tf.int64)
    return [tuple(np.asarray(t) for t in batch) for batch in make_batches(x, y, epoch_variable=variable, **settings)]


def _neutral_batches(x, y, epoch, **settings):
    from trainer.data.batches import ArrayBatches, EpochCounter

    batches = ArrayBatches(x, y, epoch_variable=EpochCounter(epoch), **settings)
    return [batches[index] for index in range(len(batches))]


@needs_tensorflow
@pytest.mark.parametrize("weights", [False, True])
@pytest.mark.parametrize("augment", [False, True])
def test_the_pydataset_gives_the_tf_data_batches_of_each_epoch(weights, augment):
    """Same order, labels, weights and augmented pixels on both paths, so a run's batches do not depend on the backend."""
    from trainer.config.schema import AugmentConfig

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(23, 8, 8, 3)).astype(np.uint8)
    y = rng.integers(0, 4, size=23)
    settings = dict(
        batch_size=5, encoding="onehot", num_classes=4, shuffle=True, seed=3,
        weights=rng.random(23).astype(np.float32) if weights else None, augment=AugmentConfig(**AUGMENT) if augment else None,
    )
    for epoch in (0, 2):
        want, got = _tf_batches(x, y, epoch, **settings), _neutral_batches(x, y, epoch, **settings)
        assert len(got) == len(want) == 5
        for got_batch, want_batch in zip(got, want):
            assert len(got_batch) == len(want_batch) == (3 if weights else 2)
            for a, b in zip(got_batch, want_batch):
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


@needs_tensorflow
@pytest.mark.parametrize("initial_epoch", [0, 2])
@pytest.mark.parametrize("augment", [False, True])
def test_the_pydataset_gives_the_tf_data_batches_of_each_step_with_steps_per_epoch(augment, initial_epoch):
    """train.steps_per_epoch (4 steps, 5 batches a pass): step k of epoch N is the same batch on both paths, from a
    fresh start and from a resumed one (the tf.data stream starts at ``initial_epoch``; Keras's PyDataset index restarts)."""
    import tensorflow as tf

    from trainer.config.schema import AugmentConfig
    from trainer.data.batches import ArrayBatches, EpochCounter, make_batches

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(23, 8, 8, 3)).astype(np.uint8)
    y = rng.integers(0, 4, size=23)
    settings = dict(
        batch_size=5, encoding="onehot", num_classes=4, shuffle=True, seed=3, augment=AugmentConfig(**AUGMENT) if augment else None,
        repeat=True, steps_per_epoch=4,
    )
    variable, counter = tf.Variable(initial_epoch, dtype=tf.int64), EpochCounter(initial_epoch)
    iterator = iter(make_batches(x, y, epoch_variable=variable, initial_epoch=initial_epoch, **settings))
    neutral = ArrayBatches(x, y, epoch_variable=counter, **settings)
    for epoch in range(initial_epoch, 4):
        variable.assign(epoch)
        counter.assign(epoch)
        for step in range(4):
            want, got = next(iterator), neutral[(epoch - initial_epoch) * 4 + step]
            for a, b in zip(got, want, strict=True):
                np.testing.assert_allclose(a, np.asarray(b), rtol=0, atol=1e-4)


@needs_tensorflow
@pytest.mark.parametrize("cache", ["memory", "disk", "none"])
def test_folder_splits_stream_the_same_batches_without_tensorflow(tmp_path, cache):
    from trainer.data.folder import load_folder

    folder = write_image_folders(tmp_path / "images", n_per_class=6, size=(12, 10))
    splits = load_folder(folder, image_size=(12, 10), color_mode="rgb", cache=cache)
    settings = dict(batch_size=4, encoding="sparse", num_classes=len(splits.class_names), shuffle=True, seed=1, cache_dir=tmp_path / "cache")
    want = _tf_batches(np.asarray(splits.x_train), splits.y_train, 1, **settings)
    got = _neutral_batches(splits.x_train, splits.y_train, 1, **settings)
    for got_batch, want_batch in zip(got, want, strict=True):
        for a, b in zip(got_batch, want_batch):
            np.testing.assert_array_equal(a, b)


def test_a_streamed_image_gone_bad_is_a_streamed_data_error(tmp_path):
    from trainer.data.batches import ArrayBatches
    from trainer.data.folder import load_folder
    from trainer.data.streaming import StreamedDataError

    folder = write_image_folders(tmp_path / "images", n_per_class=3, size=(12, 10))
    splits = load_folder(folder, image_size=(12, 10), color_mode="rgb", cache="none")
    Path(splits.x_train.paths[0]).write_bytes(b"not an image")
    batches = ArrayBatches(splits.x_train, splits.y_train, batch_size=64, encoding="sparse", num_classes=len(splits.class_names))
    with pytest.raises(StreamedDataError, match=Path(splits.x_train.paths[0]).name):
        batches[0]


def test_the_pydataset_alone_gives_each_epoch_its_own_order_and_repeats_it():
    """Without TensorFlow: epoch N's batches are a function of (seed, N); all examples once per epoch; augmentation per epoch."""
    from trainer.config.schema import AugmentConfig

    x = np.arange(23 * 4 * 4 * 3, dtype=np.int64).reshape(23, 4, 4, 3) % 256
    settings = dict(batch_size=5, encoding="sparse", num_classes=23, shuffle=True, seed=2, augment=AugmentConfig(**AUGMENT))
    epoch2 = _neutral_batches(x.astype(np.uint8), np.arange(23), 2, **settings)
    again = _neutral_batches(x.astype(np.uint8), np.arange(23), 2, **settings)
    epoch3 = _neutral_batches(x.astype(np.uint8), np.arange(23), 3, **settings)
    assert sorted(np.concatenate([labels for _, labels in epoch2]).tolist()) == list(range(23))
    for (xa, ya), (xb, yb) in zip(epoch2, again, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(np.concatenate([labels for _, labels in epoch2]), np.concatenate([labels for _, labels in epoch3]))


def _trainer(args, tmp_path, backend="jax"):
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", "KERAS_BACKEND": backend, "HOME": str(tmp_path),
           "PYTHONUNBUFFERED": "1", "TRAINER_CONFIG_HOME": str(tmp_path / "config-home"), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "no_tensorflow.py"), *map(str, args)],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )


@needs_jax
@without_tensorflow
@pytest.mark.slow
def test_jax_runs_resumes_evaluates_and_predicts_without_tensorflow(tmp_path, mnist_npz, write_config):
    """run, --dry-run, --resume, eval, predict, runs, validate, list on JAX where `import tensorflow` fails; TensorFlow never loaded."""
    config = tiny_config(mnist_npz, train={"epochs": 2, "batch_size": 32}, callbacks=["csv_logger"])
    config["data"]["augment"] = AUGMENT
    path = write_config(config)
    run_dir = tmp_path / "run"
    np.save(tmp_path / "images.npy", np.zeros((2, 28, 28), np.uint8))
    steps = [
        ["validate", path], ["run", path, "--dry-run"], ["run", path, "--run-dir", run_dir],
        ["run", path, "--run-dir", run_dir, "--resume", "--set", "train.epochs=3"],
        ["eval", run_dir], ["predict", run_dir, tmp_path / "images.npy"], ["runs", run_dir.parent], ["list", "losses"],
    ]
    for args in steps:
        done = _trainer(args, tmp_path)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
        assert "TENSORFLOW_LOADED False" in done.stderr, args
        assert "Traceback" not in done.stdout + done.stderr, args
    assert (run_dir / "model.h5").is_file()
    assert len((run_dir / "history.csv").read_text().strip().splitlines()) == 4  # header + 3 epochs
    import json

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["device"]["backend"] == "jax" and "tensorflow" not in metrics["versions"]


@needs_jax
@without_tensorflow
@pytest.mark.slow
def test_export_without_tensorflow_is_refused_with_the_install_command(tmp_path, mnist_npz, write_config):
    path = write_config(tiny_config(mnist_npz))
    run_dir = tmp_path / "run"
    assert _trainer(["run", path, "--run-dir", run_dir], tmp_path).returncode == 0
    done = _trainer(["export", run_dir, "--format", "savedmodel"], tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "pip install tensorflow" in " ".join((done.stdout + done.stderr).split())
    assert "Traceback" not in done.stdout + done.stderr
    assert not (run_dir / "savedmodel").exists()


@needs_jax
@without_tensorflow
@pytest.mark.slow
def test_the_tensorboard_callback_writes_event_files_on_jax_without_tensorflow(tmp_path, mnist_npz, write_config):
    """Read back with TensorBoard's own reader: epoch scalars equal history.csv, train and validation sides."""
    from tests.test_tensorboard import read_epoch_scalars
    from trainer.run.rundir import read_history

    path = write_config(tiny_config(mnist_npz, train={"epochs": 2}, callbacks=["tensorboard"]))
    run_dir = tmp_path / "run"
    done = _trainer(["run", path, "--run-dir", run_dir], tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "TENSORFLOW_LOADED False" in done.stderr
    history = read_history(run_dir / "history.csv")
    for side, tag, column in [("train", "epoch_loss", "loss"), ("validation", "epoch_accuracy", "val_accuracy")]:
        scalars = read_epoch_scalars(run_dir / "tensorboard" / side)
        assert [step for step, _ in scalars[tag]] == [0, 1]
        assert [value for _, value in scalars[tag]] == pytest.approx([row[column] for row in history], rel=1e-6)


@needs_jax
@without_tensorflow
@pytest.mark.slow
def test_tensorboard_settings_that_need_tensorflow_are_refused_on_jax(tmp_path, mnist_npz, write_config):
    path = write_config(tiny_config(mnist_npz, callbacks=[{"name": "tensorboard", "histogram_freq": 1}]))
    done = _trainer(["run", path, "--run-dir", tmp_path / "run"], tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "callbacks.0.histogram_freq" in " ".join((done.stdout + done.stderr).split())
    assert "Traceback" not in done.stdout + done.stderr


@needs_jax
@without_tensorflow
@pytest.mark.slow
def test_an_augmented_jax_run_resumed_equals_the_uninterrupted_one(tmp_path, mnist_npz, write_config):
    """3 epochs at once vs 2 then --resume to 3, augmentation on, steps_per_epoch past the data's end: the same history.csv."""
    from trainer.run.rundir import read_history

    config = tiny_config(mnist_npz, train={"epochs": 3, "batch_size": 32, "steps_per_epoch": 10})
    config["data"]["augment"] = AUGMENT
    path = write_config(config)
    histories = []
    for run_dir, first_epochs in ((tmp_path / "whole", 3), (tmp_path / "resumed", 2)):
        done = _trainer(["run", path, "--run-dir", run_dir, "--set", f"train.epochs={first_epochs}"], tmp_path)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        if first_epochs < 3:
            done = _trainer(["run", path, "--run-dir", run_dir, "--resume"], tmp_path)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        histories.append([{k: v for k, v in row.items() if k not in ("epoch_seconds", "examples_per_second")} for row in read_history(run_dir / "history.csv")])
    assert len(histories[0]) == 3
    assert histories[0] == histories[1]


@needs_jax
@without_tensorflow
@pytest.mark.skipif(importlib.util.find_spec("optuna") is None, reason="optuna (the sweep extra) is not installed")
@pytest.mark.slow
def test_a_sweep_on_jax_runs_without_tensorflow(tmp_path, mnist_npz, write_config):
    config = tiny_config(mnist_npz, output={"dir": str(tmp_path / "outputs")}, data={"validation": 0.25})  # a sweep never selects on test
    config["sweep"] = {"trials": 1, "space": {"optimizer.learning_rate": {"float": [1.0e-3, 1.0e-2], "log": True}}}
    done = _trainer(["sweep", write_config(config)], tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "TENSORFLOW_LOADED False" in done.stderr
    assert (tmp_path / "outputs" / "tiny-sweep" / "trials.csv").is_file()
