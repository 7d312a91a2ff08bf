"""Shared fixtures: tiny datasets in real formats, config files, and a CLI runner."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_HOME", str(Path(__file__).parent / ".keras-home-unused"))
# trainer export signs exports with a per-user key (trainer.inference.provenance); tests never touch ~/.config
os.environ.setdefault("TRAINER_CONFIG_HOME", __import__("tempfile").mkdtemp(prefix="trainer-config-"))
# JAX's compiled programs (trainer.runtime.compile_cache) go to one folder per test session, never ~/.cache
os.environ.setdefault("TRAINER_CACHE", __import__("tempfile").mkdtemp(prefix="trainer-cache-"))

from tests.datagen import write_mnist_npz  # noqa: E402

# CI replays hypothesis's examples from a fixed seed, so a green run stays green; runs on a
# developer's machine keep exploring new inputs (and the failures they find become tests).
from hypothesis import settings as _hypothesis_settings  # noqa: E402

# No per-example deadline: these tests check behaviour, never time, and the machines are shared (a
# 200 ms deadline failed a property on a loaded 2-core machine as "flaky").
_hypothesis_settings.register_profile("ci", derandomize=True, database=None, deadline=None)
_hypothesis_settings.register_profile("dev", deadline=None)
_hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")


def tiny_config(data_path: Path | str | None, **sections: Any) -> dict[str, Any]:
    """A config that trains in about a second: a small MLP on a tiny dataset, one epoch."""
    config: dict[str, Any] = {
        "name": "tiny",
        "seed": 1,
        "data": {"dataset": "mnist", "path": str(data_path) if data_path else None, "validation": "test"},
        "model": {"type": "mlp", "hidden_units": [16]},
        "loss": "sparse_categorical_crossentropy",
        "optimizer": {"name": "adam", "learning_rate": 0.01},
        "train": {"epochs": 1, "batch_size": 32},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


@pytest.fixture
def mnist_npz(tmp_path: Path) -> Path:
    """A learnable 10-class, 28x28 dataset in Keras's mnist.npz layout (256 train, 64 test)."""
    return write_mnist_npz(tmp_path / "mnist.npz", n_train=256, n_test=64, seed=0)


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a dict (as YAML) or raw text to a config file and return its path."""

    def write(content: dict[str, Any] | str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write


class CliResult:
    """A finished CLI call: ``exit_code``, ``output`` as printed, and the same text with Rich's line wrapping undone.

    ``text`` joins every run of whitespace into one space (for sentences); ``unwrapped`` only
    removes the line breaks (for long paths Rich folds across lines).
    """

    def __init__(self, result):
        self.exit_code = result.exit_code
        self.output = result.output
        self.text = " ".join(result.output.split())
        self.unwrapped = result.output.replace("\n", "")


def run_cli(*args: Any) -> CliResult:
    """Invoke the trainer CLI in-process, as a user would type it (also usable from module-scoped fixtures)."""
    from trainer.cli import app

    return CliResult(CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False))


@pytest.fixture
def cli():
    """The one way tests run the CLI: ``cli("run", config, "--run-dir", d)`` -> ``CliResult``."""
    return run_cli


REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for real ``python -m trainer`` subprocesses: this checkout's package, quiet TensorFlow."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.hookimpl(trylast=True)  # after pytest-randomly's shuffle
def pytest_collection_modifyitems(config, items):
    """Tests marked ``first`` go to the front (``first(order=0)`` before the others): pytest-xdist hands the first tests out first."""

    def rank(item) -> int:
        marker = item.get_closest_marker("first")
        return 2 if marker is None else marker.kwargs.get("order", 1)

    items.sort(key=rank)


import trainer  # noqa: E402 - light: Keras and TensorFlow load on first use


class StopAfter(trainer.RunEvents):
    """Ends the run during epoch ``epoch``'s end (status ``stopped``): the checkpoint then holds the epoch before it."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs):
        if epoch == self.epoch:
            raise trainer.StopRun("test stop", status="stopped")
