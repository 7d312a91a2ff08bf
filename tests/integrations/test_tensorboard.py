"""The tensorboard callback: event files under RUN_DIR/tensorboard/ whose scalars match history.csv."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import tiny_config
from trainer.run.rundir import read_history


def read_epoch_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """The ``epoch_*`` scalars of the event files in ``folder`` as (step, value), read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    scalars = {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in tags["scalars"] if tag.startswith("epoch_")}
    for tag in tags.get("tensors", []):  # TensorFlow 2 writes scalar summaries as tensor events
        if tag.startswith("epoch_"):
            scalars[tag] = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)]
    return scalars


EVENT_CHECKS = [("train", "epoch_loss", "loss"), ("validation", "epoch_accuracy", "val_accuracy")]


def assert_event_scalars_match_history(run_dir: Path, epochs: int, checks=EVENT_CHECKS) -> None:
    """RUN_DIR/tensorboard/<side>'s ``tag`` has one scalar an epoch (steps 0..epochs-1), equal to history.csv's ``column``.

    The one check of the event files: here on TensorFlow and on JAX with TensorFlow installed, and in
    tests/project/test_backend_neutral.py where TensorFlow is absent (.ci/neutral-venv, .ci/torch-venv)."""
    history = read_history(run_dir / "history.csv")
    assert len(history) == epochs
    for side, tag, column in checks:
        scalars = read_epoch_scalars(run_dir / "tensorboard" / side)
        assert [step for step, _ in scalars[tag]] == list(range(epochs)), (side, tag, scalars.keys())
        assert [value for _, value in scalars[tag]] == pytest.approx([row[column] for row in history], rel=1e-6), (side, tag)


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory) -> Path:
    """One 3-epoch run with callbacks: [tensorboard]: its run directory."""
    import yaml

    import trainer
    from tests.datagen import write_mnist_npz

    root = tmp_path_factory.mktemp("tensorboard")
    data = write_mnist_npz(root / "mnist.npz", n_train=256, n_test=64, seed=0)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(data, train={"epochs": 3}, callbacks=["tensorboard"], output={"dir": str(root / "outputs")})))
    return trainer.train(path).run_dir


@pytest.mark.slow
@pytest.mark.parametrize(
    "side, tag, column",
    [
        ("train", "epoch_loss", "loss"), ("train", "epoch_accuracy", "accuracy"), ("train", "epoch_learning_rate", "learning_rate"),
        ("validation", "epoch_loss", "val_loss"), ("validation", "epoch_accuracy", "val_accuracy"),
    ],
)
def test_tensorboard_event_scalars_match_history_csv(tensorboard_run, side, tag, column):
    assert_event_scalars_match_history(tensorboard_run, 3, [(side, tag, column)])


# Runs the CLI and reports on stderr whether TensorFlow was imported, *without* hiding it
# (tests/no_tensorflow.py makes `import tensorflow` fail, which would hide an import that happens).
REPORTS_TENSORFLOW = (
    "import sys; from trainer.cli import app\n"
    "sys.argv[0] = 'trainer'\n"
    "try:\n    app(); code = 0\nexcept SystemExit as done:\n    code = done.code\n"
    "print('TENSORFLOW_LOADED', any(m == 'tensorflow' or m.startswith('tensorflow.') for m in sys.modules), file=sys.stderr)\n"
    "raise SystemExit(code)\n"
)


@pytest.mark.slow
@pytest.mark.skipif(
    __import__("importlib").util.find_spec("jax") is None or __import__("importlib").util.find_spec("tensorflow") is None,
    reason="needs JAX and TensorFlow both installed (the case: TensorFlow present but not to be used)",
)
def test_the_tensorboard_callback_on_jax_never_imports_an_installed_tensorflow(tmp_path, mnist_npz, write_config, subprocess_env):
    """docs/backends.md: on JAX trainer never imports TensorFlow, even where it is installed; the event files still read back."""
    import subprocess
    import sys

    path = write_config(tiny_config(mnist_npz, train={"epochs": 2}, callbacks=["tensorboard"]))
    run_dir = tmp_path / "run"
    env = {**subprocess_env, "KERAS_BACKEND": "jax", "TRAINER_CONFIG_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", REPORTS_TENSORFLOW, "run", str(path), "--run-dir", str(run_dir)],
                          env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "TENSORFLOW_LOADED False" in done.stderr
    assert_event_scalars_match_history(run_dir, 2)
