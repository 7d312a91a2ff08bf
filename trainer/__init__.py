"""trainer: train, evaluate and use Keras image classifiers from one YAML config.

The Python API (``docs/api.md``)::

    import trainer

    config = trainer.load_config("configs/mnist_sparse.yaml", ["train.epochs=3"])
    result = trainer.train(config, events=[MyHandler()])
    report = trainer.evaluate(result.run_dir)
    records = trainer.predict(result.run_dir, ["digit.png"])
    run = trainer.load_run(result.run_dir)  # run.model, run.config, run.manifest

Names are imported on first use, so ``import trainer`` (and ``trainer --help``) stay fast.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "load_config": "trainer.api",
    "train": "trainer.api",
    "evaluate": "trainer.api",
    "predict": "trainer.api",
    "export": "trainer.api",
    "load_run": "trainer.api",
    "report": "trainer.api",
    "compare": "trainer.api",
    "RunEvents": "trainer.run.events",
    "RunResult": "trainer.run.events",
    "RunStartInfo": "trainer.run.events",
    "StopRun": "trainer.run.events",
    "TrainerError": "trainer.errors",
    "BadInputError": "trainer.errors",
    "ConfigError": "trainer.errors",
    "DataError": "trainer.errors",
    "RunDirError": "trainer.errors",
    "RunFailedError": "trainer.errors",
    "RunInterrupted": "trainer.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'trainer' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
