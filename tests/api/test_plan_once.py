"""One plan: each workflow reads its config file once and resolves its plan (``plan_run``) once.

``plan_run`` and the YAML reader are wrapped with counters; the TensorFlow parts of each
workflow (training, the ramp, the model file, the evaluation) are replaced by stand-ins, so
these tests count the planning of ``trainer run``, ``lr-find``, ``eval``, ``predict``,
``export``, ``validate`` and one sweep trial in well under a second each.
"""
from __future__ import annotations

import importlib
import json
import os
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

import trainer.api as api
from tests.conftest import tiny_config
from trainer.run.events import RunResult


@pytest.fixture
def counts(monkeypatch):
    """``counts["plan_run"]``: plans made; ``counts[path]``: times that YAML file was read."""
    import trainer.config.checks as checks
    import trainer.config.loading as loading

    seen: Counter = Counter()
    plan_run, read_yaml = checks.plan_run, loading.read_yaml

    def counting_plan_run(*args, **kwargs):
        seen["plan_run"] += 1
        return plan_run(*args, **kwargs)

    def counting_read_yaml(path, *args, **kwargs):
        seen[str(Path(path).resolve())] += 1
        return read_yaml(path, *args, **kwargs)

    monkeypatch.setattr(checks, "plan_run", counting_plan_run)
    monkeypatch.setattr(loading, "read_yaml", counting_read_yaml)
    monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "tensorflow"))  # the CLI sets it; restored after
    return seen


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path / "mnist.npz"), sort_keys=False))
    return path


def read_once(counts, path: Path) -> bool:
    return counts[str(path.resolve())] == 1


def test_trainer_run_plans_once(cli, counts, config_file, tmp_path, monkeypatch):
    command = importlib.import_module("trainer.cli.run")  # trainer.cli.run is also the command's function
    from trainer.run.training import Training

    planned = []
    monkeypatch.setattr(command, "quiet_tensorflow", lambda: None)
    monkeypatch.setattr(Training, "run", lambda self: planned.append(self.planned) or RunResult("dry-run", None, model_summary="stand-in"))
    result = cli("run", config_file, "--dry-run", "--run-dir", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert counts["plan_run"] == 1 and read_once(counts, config_file)
    plan = planned[0]  # one frozen plan, handed to the Training
    assert plan.run_dir == tmp_path / "run" and plan.dry_run and plan.labels.encoding == "sparse" and plan.setup is not None
    with pytest.raises(AttributeError):
        plan.dry_run = False


def test_lr_find_plans_once(cli, counts, config_file, tmp_path, monkeypatch):
    command = importlib.import_module("trainer.cli.lr_find")
    import trainer.run.lr_find as lr_find

    record = SimpleNamespace(steps_run=3, steps=3, stopped="completed", rates=[1e-3, 1e-2, 1e-1], suggested_learning_rate=None)
    monkeypatch.setattr(command, "quiet_tensorflow", lambda: None)
    monkeypatch.setattr(lr_find, "find_learning_rate", lambda *a, **k: SimpleNamespace(record=record, output_dir=tmp_path, set=None))
    result = cli("lr-find", config_file, "--steps", "3")
    assert result.exit_code == 0, result.output
    assert counts["plan_run"] == 1 and read_once(counts, config_file)


def test_validate_plans_once(counts, config_file):
    checked = api.validate(config_file)
    assert checked.labels.encoding == "sparse" and counts["plan_run"] == 1 and read_once(counts, config_file)


@pytest.fixture
def run_dir(tmp_path, config_file, monkeypatch):
    """A run directory whose model file is a stand-in (the workflows' TensorFlow parts are replaced)."""
    import trainer.models.keras_objects as user_code
    import trainer.inference.load as load

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text(config_file.read_text())
    (folder / "model.h5").write_bytes(b"stand-in")
    (folder / "manifest.json").write_text(json.dumps({
        "dataset": "mnist", "num_classes": 10, "class_names": [str(i) for i in range(10)], "input_shape": [28, 28, 1],
        "label_encoding": "sparse", "loss": {"name": "sparse_categorical_crossentropy"}, "model_output": "softmax",
    }))
    model = SimpleNamespace(loss="sparse_categorical_crossentropy", output_shape=(None, 10), input_shape=(None, 28, 28, 1))
    monkeypatch.setattr(load, "load_model_file", lambda *a, **k: model)
    monkeypatch.setattr(user_code, "load_custom_objects", lambda *a, **k: {})  # Keras's own objects: none needed by the stand-in
    return folder


@pytest.mark.parametrize("workflow", ["evaluate", "predict", "export"])
def test_eval_predict_and_export_plan_once(workflow, counts, run_dir, monkeypatch):
    import trainer.inference.evaluate as evaluate
    import trainer.inference.export as export
    import trainer.inference.predict as predict

    loaded = []
    monkeypatch.setattr(evaluate, "evaluate_run", lambda run, split, tta: loaded.append(run) or evaluate.EvalResult(split, 1, 0.5, 1.0, {}, [], [[1]]))
    monkeypatch.setattr(predict, "predict_records", lambda run, images, top_k, tta: loaded.append(run) or [])
    monkeypatch.setattr(export, "export_run", lambda run, fmt, output: loaded.append(run) or SimpleNamespace(to_dict=dict))
    if workflow == "evaluate":
        assert api.evaluate(run_dir)["split"] == "test"
    elif workflow == "predict":
        assert api.predict(run_dir, np.zeros((2, 28, 28, 1), dtype=np.uint8)) == []
    else:
        assert api.export(run_dir, "savedmodel", run_dir / "savedmodel") == {}
    assert len(loaded) == 1 and loaded[0].label_encoding == "sparse"
    assert counts["plan_run"] == 1 and read_once(counts, run_dir / "config.yaml")


def test_a_sweep_trial_plans_once(counts, tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    from trainer.config import load_config
    from trainer.run.training import Training
    from trainer.sweep import SweepEvents, plan_sweep, run_trials

    config = tiny_config(tmp_path / "mnist.npz", train={"epochs": 2})
    config["data"]["validation"] = 0.1
    config["sweep"] = {"trials": 2, "space": {"optimizer.learning_rate": {"float": [1.0e-3, 1.0e-1], "log": True}}}
    plan = plan_sweep(load_config(None, [], base=config), sweep_dir=tmp_path / "sweep")
    per_trial = []

    class Trials(SweepEvents):
        def on_trial_start(self, record):
            counts["plan_run"] = 0

    def trained(self):
        per_trial.append(counts["plan_run"])
        return RunResult("completed", self.run_dir, {"test": {}}, [{"epoch": 1, "val_loss": 0.5, "val_accuracy": 0.5}])

    import trainer.sweep.driver as driver

    monkeypatch.setattr(driver, "preflight", lambda plan: None)  # builds every candidate's loss and optimizer with Keras
    monkeypatch.setattr(Training, "run", trained)
    run_trials(plan, Trials(), train=api.train)
    assert per_trial == [1, 1]
