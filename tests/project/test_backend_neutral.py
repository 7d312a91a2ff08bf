"""The backend-neutral path: JAX and PyTorch train, evaluate and predict without TensorFlow.

``trainer.data.batches``: a ``keras.utils.PyDataset`` on the other backends, ``tf.data`` on
TensorFlow, one definition of epoch N's order. The run tests drive the CLI on ``BACKEND``
(``KERAS_BACKEND``: jax in .ci/neutral-venv, torch in .ci/torch-venv) where ``import tensorflow``
fails (tests/no_tensorflow.py, or an environment without it); the PyTorch section below runs in
.ci/torch-venv only (tests/project/test_neutral_venv.py).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT, tiny_config
from tests.datagen import write_image_folders

# The backend the run tests train on: KERAS_BACKEND where it names jax or torch (the neutral environments set it), else jax.
BACKEND = os.environ.get("KERAS_BACKEND", "") if os.environ.get("KERAS_BACKEND", "") in ("jax", "torch") else "jax"
needs_backend = pytest.mark.skipif(importlib.util.find_spec(BACKEND) is None, reason=f"{BACKEND} is not installed")
needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
# The runs: in CI they run in .ci/neutral-venv's and .ci/torch-venv's environments, which have no TensorFlow at
# all (tests/project/test_neutral_venv.py); where TensorFlow is installed they run only with TRAINER_NEUTRAL_HERE=1
# (then tests/no_tensorflow.py blocks its import), so that the suite runs them once.
without_tensorflow = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is not None and os.environ.get("TRAINER_NEUTRAL_HERE") != "1",
    reason="runs in .ci/neutral-venv (no TensorFlow; tests/project/test_neutral_venv.py); TRAINER_NEUTRAL_HERE=1 runs it here",
)
# Comparisons with the tf.data path (skipped in .ci/neutral-venv's environment, which has no TensorFlow)
needs_tensorflow = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed")
AUGMENT = {"flip": "horizontal", "crop": 2, "rotation": 0.05, "contrast": 0.2}


def test_epoch_order_is_a_permutation_of_seed_and_epoch_only():
    from trainer.data.order import epoch_order

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


def _leaves(batch):
    """A batch's arrays in order: ``((images, params), targets)`` (data.augment on the device) -> images, params, targets."""
    return [leaf for part in batch for leaf in (_leaves(part) if isinstance(part, tuple) else [part])]


# data.augment on the device: everything that runs in the step, mixing included (tests/data/test_augment_device.py's "everything")
DEVICE_AUGMENT = {"mixup": 0.2, "cutmix": 1.0, "crop": 4, "crop_padding": "reflect", "flip": "alternating", "random_erasing": 0.5, "contrast": 0.1}


@needs_tensorflow
@pytest.mark.parametrize("initial_epoch", [0, 2])
@pytest.mark.parametrize("augment", ["none", "host", "device"])
def test_the_pydataset_gives_the_tf_data_batches_of_each_step_with_steps_per_epoch(augment, initial_epoch):
    """train.steps_per_epoch (4 steps, 5 batches a pass): step k of epoch N is the same batch on both paths, from a
    fresh start and from a resumed one (the tf.data stream starts at ``initial_epoch``; Keras's PyDataset index restarts).
    With data.augment on the device both hand over the same uint8 images and the same per-example params."""
    import tensorflow as tf

    from trainer.config.schema import AugmentConfig
    from trainer.data.batches import ArrayBatches, EpochCounter, make_batches

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(23, 8, 8, 3)).astype(np.uint8)
    y = rng.integers(0, 4, size=23)
    config = {"none": None, "host": AugmentConfig(**AUGMENT), "device": AugmentConfig(**DEVICE_AUGMENT)}[augment]
    settings = dict(batch_size=5, encoding="onehot", num_classes=4, shuffle=True, seed=3, augment=config, repeat=True, steps_per_epoch=4)
    if augment == "device":
        settings["augment_on_device"] = True
    variable, counter = tf.Variable(initial_epoch, dtype=tf.int64), EpochCounter(initial_epoch)
    iterator = iter(make_batches(x, y, epoch_variable=variable, initial_epoch=initial_epoch, **settings))
    neutral = ArrayBatches(x, y, epoch_variable=counter, **settings)
    for epoch in range(initial_epoch, 4):
        variable.assign(epoch)
        counter.assign(epoch)
        for step in range(4):
            want, got = _leaves(next(iterator)), _leaves(neutral[(epoch - initial_epoch) * 4 + step])
            assert len(got) == len(want) == (3 if augment == "device" else 2)
            if augment == "device":  # uint8 images to the step, which augments; the same params and targets, exactly
                assert want[0].dtype == tf.uint8 and got[0].dtype == np.uint8
                for a, b in zip(got, want, strict=True):
                    np.testing.assert_array_equal(a, b.numpy())
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


def _trainer(args, tmp_path, backend=BACKEND):
    """The CLI on ``backend`` as a user runs it, TensorFlow unimportable; stderr ends with ``TENSORFLOW_LOADED True|False``.

    Where TensorFlow is not installed at all and Keras already runs on ``backend`` in this process (the
    neutral environments), the command runs here, with the same environment, rather than in a new process:
    starting Keras on PyTorch costs ~10 s of CPU a process.
    """
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", "KERAS_BACKEND": backend, "HOME": str(tmp_path),
           "PYTHONUNBUFFERED": "1", "TRAINER_CONFIG_HOME": str(tmp_path / "config-home"), "COLUMNS": "200"}
    if importlib.util.find_spec("tensorflow") is None and _keras_backend() == backend:
        return _trainer_here(args, tmp_path, env)
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "no_tensorflow.py"), *map(str, args)],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )


def _keras_backend() -> str | None:
    """The backend Keras runs on in this process (imported for it where it is not yet), None where it cannot load."""
    try:
        import keras
    except ImportError:
        return None
    return keras.backend.backend()


def _trainer_here(args, tmp_path, env) -> subprocess.CompletedProcess:
    import contextlib

    from typer.testing import CliRunner

    from trainer.cli import app

    saved = {key: os.environ.get(key) for key in env}
    try:
        os.environ.update({key: value for key, value in env.items() if key not in ("PATH", "PYTHONPATH")})
        with contextlib.chdir(tmp_path):
            result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    loaded = any(name == "tensorflow" or name.startswith("tensorflow.") for name in sys.modules)
    return subprocess.CompletedProcess(args, result.exit_code, result.output, f"TENSORFLOW_LOADED {loaded}\n")


@needs_backend
@without_tensorflow
@pytest.mark.slow
def test_runs_resumes_evaluates_and_predicts_without_tensorflow(tmp_path, mnist_npz, write_config):
    """run, --dry-run, --resume, eval, predict, runs, validate, list on BACKEND where `import tensorflow` fails; TensorFlow never loaded."""
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
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["device"]["backend"] == BACKEND and BACKEND in metrics["versions"] and "tensorflow" not in metrics["versions"]


@needs_backend
@without_tensorflow
@pytest.mark.slow
def test_report_compare_and_serve_without_tensorflow(tmp_path, mnist_npz, write_config):
    """report.html at the run's end, trainer report, runs --compare and trainer serve on BACKEND; TensorFlow never loaded."""
    for package in ("fastapi", "uvicorn", "multipart"):
        pytest.importorskip(package, reason="the [serve] extra is not installed")
    import re
    import time

    from PIL import Image

    from benchmarks import serve_load

    path = write_config(tiny_config(mnist_npz, train={"epochs": 1, "batch_size": 32}))
    run_dir = tmp_path / "runs" / "one"
    image = tmp_path / "digit.png"
    Image.fromarray(np.load(mnist_npz)["x_test"][0].astype(np.uint8)).save(image)
    for args in (["run", path, "--run-dir", run_dir], ["report", run_dir, "--output", tmp_path / "again.html"],
                 ["runs", run_dir.parent, "--compare"], ["predict", run_dir, image, "--output", tmp_path / "predicted.json"]):
        done = _trainer(args, tmp_path)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
        assert "TENSORFLOW_LOADED False" in done.stderr, args
        assert "Traceback" not in done.stdout + done.stderr, args
    for page in (run_dir / "report.html", tmp_path / "again.html"):
        text = page.read_text()
        assert text.startswith("<!DOCTYPE html>") and "<h2>Confusion matrix (test split)</h2>" in text, page
        assert "<h2>Worst-misclassified test images</h2>" in text and "backend" in text and BACKEND in text, page
    expected = json.loads((tmp_path / "predicted.json").read_text())[0]
    log = tmp_path / "serve.log"
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KERAS_BACKEND": BACKEND, "HOME": str(tmp_path),
           "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    # where TensorFlow is installed, tests/no_tensorflow.py makes it unimportable; where it is not (the venvs), the plain CLI
    blocked = importlib.util.find_spec("tensorflow") is not None
    launcher = [str(REPO_ROOT / "tests" / "no_tensorflow.py")] if blocked else ["-m", "trainer"]
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, *launcher, "serve", str(run_dir), "--port", "0"],
                                   stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        url = None
        for _ in range(900):
            found = re.search(r"listening on (http://\S+?/)", log.read_text(errors="replace"))
            if found or process.poll() is not None:
                url = found.group(1) if found else None
                break
            time.sleep(0.2)
        assert url is not None, log.read_text(errors="replace")[-3000:]
        status, answer = serve_load.post_image(url, image)
        assert status == 200, answer
        assert answer["predicted"] == expected["predicted"]
        assert answer["probability"] == pytest.approx(expected["probability"], abs=1e-5)
    finally:
        serve_load.stop_server(process)
    if blocked:  # (the venvs have no TensorFlow to load)
        assert "TENSORFLOW_LOADED False" in log.read_text(errors="replace")


@needs_backend
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


@needs_backend
@without_tensorflow
@pytest.mark.slow
def test_the_tensorboard_callback_writes_event_files_without_tensorflow(tmp_path, mnist_npz, write_config):
    """Read back with TensorBoard's own reader: epoch scalars equal history.csv, train and validation sides."""
    from tests.integrations.test_tensorboard import assert_event_scalars_match_history

    path = write_config(tiny_config(mnist_npz, train={"epochs": 2}, callbacks=["tensorboard"]))
    run_dir = tmp_path / "run"
    done = _trainer(["run", path, "--run-dir", run_dir], tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "TENSORFLOW_LOADED False" in done.stderr
    assert_event_scalars_match_history(run_dir, 2)


@needs_backend
@without_tensorflow
@pytest.mark.slow
def test_tensorboard_settings_that_need_tensorflow_are_refused_without_it(tmp_path, mnist_npz, write_config):
    path = write_config(tiny_config(mnist_npz, callbacks=[{"name": "tensorboard", "histogram_freq": 1}]))
    done = _trainer(["run", path, "--run-dir", tmp_path / "run"], tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "callbacks.0.histogram_freq" in " ".join((done.stdout + done.stderr).split())
    assert "Traceback" not in done.stdout + done.stderr


@needs_backend
@without_tensorflow
@pytest.mark.slow
def test_an_augmented_run_resumed_equals_the_uninterrupted_one(tmp_path, mnist_npz, write_config):
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


@needs_backend
@without_tensorflow
@pytest.mark.skipif(importlib.util.find_spec("optuna") is None, reason="optuna (the sweep extra) is not installed")
@pytest.mark.slow
def test_a_sweep_runs_without_tensorflow(tmp_path, mnist_npz, write_config):
    config = tiny_config(mnist_npz, output={"dir": str(tmp_path / "outputs")}, data={"validation": 0.25})  # a sweep never selects on test
    config["sweep"] = {"trials": 1, "space": {"optimizer.learning_rate": {"float": [1.0e-3, 1.0e-2], "log": True}}}
    done = _trainer(["sweep", write_config(config)], tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "TENSORFLOW_LOADED False" in done.stderr
    assert (tmp_path / "outputs" / "tiny-sweep" / "trials.csv").is_file()


# --------------------------------------------------------------------------- compile.steps_per_execution per backend


def _loaded(write_config, **sections):
    from trainer.config import load_config

    return load_config(write_config(tiny_config(None, **sections)))


@pytest.mark.parametrize(
    "backend, steps, setting, expected",
    [
        ("torch", 1875, "auto", 1), ("jax", 1875, "auto", 93), ("tensorflow", 1875, "auto", 93), ("torch", 10, "auto", 1),
        ("torch", 1875, 7, 1),  # a run trained on another backend, evaluated on torch: evaluation does not depend on it
        ("jax", 1875, 7, 7),
    ],
)
def test_steps_per_execution_auto_resolves_within_what_each_backend_runs(write_config, backend, steps, setting, expected):
    from trainer.models.compile import resolve_steps_per_execution

    assert resolve_steps_per_execution(_loaded(write_config, compile={"steps_per_execution": setting}), steps, backend) == expected


def test_the_header_says_what_auto_chose(write_config):
    from trainer.models.compile import describe_steps_per_execution

    auto, seven = _loaded(write_config, compile={"steps_per_execution": "auto"}), _loaded(write_config, compile={"steps_per_execution": 7})
    assert describe_steps_per_execution(auto, 1, "torch") == "1 (auto: the PyTorch backend runs at most 1 per call)"
    assert describe_steps_per_execution(auto, 93, "jax") == "93 (auto)"
    assert describe_steps_per_execution(seven, 7, "tensorflow") == "7"


@pytest.mark.parametrize("setting, refused", [(2, True), (10**9, True), (1, False), ("auto", False)])
def test_an_explicit_steps_per_execution_above_one_is_refused_on_torch_only(write_config, setting, refused):
    """Before anything is computed: ``trainer run`` (prepare_runtime) and ``trainer validate`` (check_backend) both check it."""
    from trainer.errors import ConfigError
    from trainer.runtime.distribute import check_backend, check_backend_settings

    config = _loaded(write_config, compile={"steps_per_execution": setting})
    for backend in ("jax", "tensorflow"):
        check_backend_settings(config, backend)
    if not refused:
        check_backend_settings(config, "torch")
        return
    with pytest.raises(ConfigError) as raised:
        check_backend(config, {"KERAS_BACKEND": "torch"}, find_spec=lambda name: object())
    assert str(raised.value) == (
        f"compile.steps_per_execution: {setting} is more than the PyTorch backend runs per call "
        "(at most 1: Keras's PyTorch trainer runs one step per call); set it to 1 or auto."
    )
    assert raised.value.exit_code == 2


# --------------------------------------------------------------------------- PyTorch (.ci/torch-venv)

on_torch = pytest.mark.skipif(
    BACKEND != "torch" or importlib.util.find_spec("torch") is None,
    reason="runs in .ci/torch-venv (KERAS_BACKEND=torch; tests/project/test_neutral_venv.py)",
)


def _cifar_config(tmp_path, model, **sections):
    from tests.datagen import write_cifar10_dir

    folder = tmp_path / "cifar"
    if not (folder / "cifar-10-batches-py").is_dir():
        write_cifar10_dir(folder, n_per_batch=16, n_test=32, seed=0)
    config = {
        "name": "torch", "seed": 0, "data": {"dataset": "cifar10", "path": str(folder / "cifar-10-batches-py"), "validation": "test"},
        "model": model, "loss": "sparse_categorical_crossentropy", "optimizer": {"name": "adam", "learning_rate": 0.001},
        "train": {"epochs": 1, "batch_size": 32},
    }
    for key, value in sections.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and isinstance(config.get(key), dict) else value
    return config


@on_torch
@pytest.mark.parametrize(
    "setting, says",
    [
        ("2", "compile.steps_per_execution: 2 is more than the PyTorch backend runs per call"),
        ("1000000000", "compile.steps_per_execution: 1000000000 is more than the PyTorch backend"),
        ("0", "compile.steps_per_execution: Input should be 'auto' or greater than 0; got 0"),
        ("-1", "compile.steps_per_execution: Input should be 'auto' or greater than 0; got -1"),
        ("two", "compile.steps_per_execution"),
    ],
)
def test_torch_refuses_what_it_cannot_run_before_computing(cli, write_config, mnist_npz, tmp_path, setting, says):
    path = write_config(tiny_config(mnist_npz))
    for command in (["validate", path], ["run", path, "--run-dir", tmp_path / "run"]):
        result = cli(*command, "--set", f"compile.steps_per_execution={setting}")
        assert result.exit_code == 2, result.output
        assert says in result.text and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


@on_torch
@pytest.mark.slow
def test_the_airbench_recipe_trains_on_torch_in_bfloat16_and_evaluates_on_jax(cli, tmp_path, write_config):
    """cifar10_94 shrunk: whitening from a sample (bfloat16 tensors), norm_bias_lr_scale, EMA, label smoothing, TTA; header
    and metrics say PyTorch, mixed bfloat16, one step per call; JAX evaluates the saved model to the same test metrics."""
    import yaml

    config = yaml.safe_load((REPO_ROOT / "configs" / "cifar10_94.yaml").read_text())
    config = _cifar_config(tmp_path, {**config["model"], "widths": [8, 16, 16], "whitening": {"eps": 0.0005, "sample": 40}},
                           **{k: config[k] for k in ("loss", "optimizer", "evaluate")},
                           train={**config["train"], "epochs": 2, "batch_size": 32})
    config["data"]["augment"] = {"flip": "horizontal", "crop": 2, "crop_padding": "reflect"}
    run_dir = tmp_path / "run"
    result = cli("run", write_config(config), "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    header = " ".join(result.text.replace("│", " ").split())  # the header is drawn in a box
    assert "device CPU (PyTorch, mixed bfloat16)" in header and "steps per call 1 (auto: the PyTorch backend" in header
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["device"]["backend"] == "torch" and metrics["test_tta"]["views"] > 1 and metrics["ema"]["decay"] == config["train"]["ema"]["decay"]
    from trainer.models import load_model

    whiten = load_model(run_dir / "model.h5").get_layer("whiten")
    kernel = np.asarray(whiten.kernel.numpy())
    assert float(whiten.initialised.numpy()) == 1.0 and np.isfinite(kernel).all() and np.abs(kernel).max() > 0
    evaluated = _trainer(["eval", run_dir], tmp_path, backend="jax")
    assert evaluated.returncode == 0, evaluated.stdout[-2000:] + evaluated.stderr[-2000:]
    report = json.loads((run_dir / "eval-test.json").read_text())
    assert report["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1 / 32 + 1e-6)  # bfloat16 sums differ per backend
    assert report["loss"] == pytest.approx(metrics["test"]["loss"], rel=2e-2)


@on_torch
@needs_jax
@pytest.mark.slow
def test_a_model_trained_on_jax_evaluates_and_predicts_on_torch_and_back(cli, tmp_path, write_config):
    """float32, batch normalization: JAX trains, PyTorch evaluates to the same test metrics and predicts the same top classes."""
    config = _cifar_config(tmp_path, {"type": "cnn", "blocks": [8], "batch_norm": True, "head": {"hidden_units": [16]}})
    path, run_dir = write_config(config), tmp_path / "jax-run"
    trained = _trainer(["run", path, "--run-dir", run_dir], tmp_path, backend="jax")
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["device"]["backend"] == "jax"
    evaluated = cli("eval", run_dir)
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((run_dir / "eval-test.json").read_text())
    assert report["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    assert report["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-4)
    images = np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 3)).astype(np.uint8)
    np.save(tmp_path / "images.npy", images)
    on_torch_, on_jax = tmp_path / "torch.json", tmp_path / "jax.json"
    assert cli("predict", run_dir, tmp_path / "images.npy", "--output", on_torch_).exit_code == 0
    predicted = _trainer(["predict", run_dir, tmp_path / "images.npy", "--output", on_jax], tmp_path, backend="jax")
    assert predicted.returncode == 0, predicted.stdout[-2000:] + predicted.stderr[-2000:]
    torch_records, jax_records = (json.loads(p.read_text()) for p in (on_torch_, on_jax))
    assert [r["index"] for r in torch_records] == [r["index"] for r in jax_records]
    for a, b in zip(torch_records, jax_records):
        assert a["top_k"][0]["probability"] == pytest.approx(b["top_k"][0]["probability"], abs=1e-4)


@on_torch
@pytest.mark.slow
@pytest.mark.parametrize(
    "model",
    [
        {"type": "cnn", "blocks": [8, 8], "batch_norm": True, "head": {"hidden_units": [16], "dropout": 0.3}},
        {"type": "resnet", "variant": "resnet9", "widths": [8, 8, 8, 8]},
        {"type": "resnet", "variant": "resnet20"},  # widths [4, 8, 8]: a segmentation fault in torch 2.13 (CPU) backward
        {"type": "vgg16_head", "weights": "none", "head": {"hidden_units": [16]}},
        {"type": "backbone_head", "backbone": "vgg16", "weights": "none", "head": {"hidden_units": [16]}},
    ],
    ids=["cnn", "resnet9", "resnet20", "vgg16_head", "backbone_head"],
)
def test_each_model_type_trains_on_torch(cli, tmp_path, write_config, model):
    run_dir = tmp_path / "run"
    result = cli("run", write_config(_cifar_config(tmp_path, model)), "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["device"]["backend"] == "torch" and 0 <= metrics["test"]["accuracy"] <= 1


@on_torch
@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["vgg19", "resnet50", "resnet50_v2", "mobilenet_v2", "efficientnet_b0", "densenet121", "convnext_tiny"])
def test_the_other_backbones_build_and_predict_on_torch(backbone):
    from trainer.config import load_config
    from trainer.models import build_model

    config = load_config(None, ["model.type=backbone_head", f"model.backbone={backbone}", "model.weights=none"])
    probabilities = build_model(config.model, (32, 32, 3), 3).predict(np.full((2, 32, 32, 3), 120, np.float32), verbose=0)
    assert probabilities.shape == (2, 3) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


@needs_tensorflow
def test_export_on_torch_is_refused_naming_the_backend_that_exports():
    """Keras exports a PyTorch model through torch.export, which fails on these models with a traceback (torch 2.13)."""
    from trainer.errors import BadInputError
    from trainer.inference.export import check_can_export

    with pytest.raises(BadInputError) as raised:
        check_can_export("savedmodel", backend="torch")
    assert raised.value.exit_code == 2 and "run it with KERAS_BACKEND=tensorflow" in str(raised.value)
    assert check_can_export("savedmodel", backend="tensorflow").name == "savedmodel"
