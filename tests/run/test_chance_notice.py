"""The notice when validation accuracy stays at chance while training accuracy climbs (trainer/run/chance.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tiny_config
from tests.datagen import make_images
from trainer.run.chance import ChanceWatch
from trainer.run.events import RunStartInfo

AT_CHANCE = "is at chance"


def watch(num_classes: int = 10, validation: int = 1000) -> tuple[ChanceWatch, list[str]]:
    told: list[str] = []
    handler = ChanceWatch(num_classes, told.append)
    handler.on_run_start(RunStartInfo(None, None, {"train": 5000, "validation": validation, "test": 1000}, ""))
    return handler, told


@pytest.mark.parametrize(
    "rows, expected",
    [
        # the small CIFAR cnn: training 0.35, validation exactly 0.1000
        ([(0.2, 0.1), (0.3, 0.1), (0.35, 0.1)], 1),
        ([(0.2, 0.1), (0.35, 0.1)], 1),
        # a normal run: validation follows training
        ([(0.3, 0.28), (0.5, 0.45), (0.6, 0.55)], 0),
        # nothing learnt yet: training at chance too
        ([(0.11, 0.1), (0.12, 0.1)], 0),
        # validation just above chance by more than three standard errors of guessing (0.0285 at 1,000 examples)
        ([(0.6, 0.14), (0.7, 0.15)], 0),
    ],
)
def test_chance_watch_tells_once_when_validation_stays_at_chance(rows, expected):
    handler, told = watch()
    for epoch, (train, validation) in enumerate(rows, start=1):
        handler.on_epoch_end(epoch, {"epoch": epoch, "accuracy": train, "val_accuracy": validation})
    assert len(told) == expected
    if expected:
        assert "validation accuracy 0.1000 is at chance (1/10 = 0.1000)" in told[0]
        assert "BatchNormalization" in told[0] and "batch_norm_momentum" in told[0]
        assert "preprocessed differently" in told[0] and "labels" in told[0]


@pytest.mark.parametrize("logs", [{"loss": 1.0, "val_loss": 2.3}, {"accuracy": 0.9}, {"accuracy": float("nan"), "val_accuracy": 0.1}])
def test_chance_watch_is_quiet_without_both_accuracies(logs):
    handler, told = watch()
    handler.on_epoch_end(1, logs)
    assert told == []


def test_a_small_validation_set_widens_what_counts_as_chance():
    handler, told = watch(validation=64)  # three standard errors of guessing: 0.1125
    handler.on_epoch_end(1, {"accuracy": 0.9, "val_accuracy": 0.19})
    assert len(told) == 1


def random_label_npz(path: Path) -> Path:
    """Learnable training images; test images with labels drawn at random (what validation: test then measures)."""
    x_train, y_train = make_images(512, 10, (28, 28), 0)
    x_test, _ = make_images(600, 10, (28, 28), 1)
    y_test = np.random.default_rng(7).integers(0, 10, size=600)
    np.savez(path, x_train=x_train, y_train=y_train.astype(np.uint8), x_test=x_test, y_test=y_test.astype(np.uint8))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("labels, told", [("random", True), ("real", False)])
def test_the_run_prints_the_notice_only_when_validation_is_at_chance(labels, told, cli, tmp_path, write_config):
    from tests.datagen import write_mnist_npz

    data = random_label_npz(tmp_path / "random.npz") if labels == "random" else write_mnist_npz(tmp_path / "real.npz", n_train=512, n_test=600)
    config = write_config(tiny_config(data, train={"epochs": 3}, optimizer={"name": "adam", "learning_rate": 0.01}))
    result = cli("run", config, "--run-dir", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert (AT_CHANCE in result.unwrapped) == told, result.output
    if told:
        assert "Likely causes: BatchNormalization" in result.unwrapped
