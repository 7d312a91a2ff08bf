"""The Python API: train / evaluate / predict / load_run / load_config, run events, no leaked state."""
from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

import trainer
import trainer.api
from tests.conftest import REPO_ROOT, run_cli, tiny_config
from tests.datagen import write_image_folders
from trainer.run.events import RunEvents, StopRun
from trainer.run.rundir import read_history, reserve_run_dir


class Recorder(RunEvents):
    """Every main event, in order."""

    def __init__(self):
        self.calls: list[tuple] = []

    def on_run_start(self, info):
        self.calls.append(("start", info))

    def on_epoch_end(self, epoch, logs):
        self.calls.append(("epoch", epoch, dict(logs)))

    def on_run_end(self, result):
        self.calls.append(("end", result))

    @property
    def kinds(self) -> list[str]:
        return [call[0] for call in self.calls]


def write_yaml(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# --------------------------------------------------------------------------- fast: no training


def test_import_trainer_is_light_and_lists_the_api():
    code = "import sys, trainer; trainer.load_config; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True).stdout
    assert out.split() == ["False", "False"]
    assert {"train", "evaluate", "predict", "load_run", "load_config", "RunEvents", "StopRun"} <= set(dir(trainer))


def test_load_config_applies_overrides_like_set(tmp_path, mnist_npz):
    path = write_yaml(tmp_path / "c.yaml", tiny_config(mnist_npz))
    config = trainer.load_config(path, ["train.epochs=4", "optimizer.learning_rate=0.5"])
    assert config.train.epochs == 4 and config.optimizer.params["learning_rate"] == 0.5
    with pytest.raises(trainer.ConfigError) as error:
        trainer.load_config(path, ["train.epochs=zero"])
    assert "--set train.epochs=zero" in str(error.value) and error.value.exit_code == 2


@pytest.mark.parametrize("bad", [42, None, ["a.yaml"]])
def test_train_refuses_what_is_not_a_config(bad):
    with pytest.raises(trainer.BadInputError, match="expected a path to a YAML file or a Config"):
        trainer.train(bad)


def test_resume_without_run_dir_is_refused_before_any_work(tmp_path, mnist_npz):
    path = write_yaml(tmp_path / "c.yaml", tiny_config(mnist_npz))
    with pytest.raises(trainer.BadInputError, match="--resume needs --run-dir"):
        trainer.train(path, resume=True)


def test_reserved_run_dirs_never_collide(tmp_path):
    first = reserve_run_dir(tmp_path / "runs" / "tiny-20260101-000000")
    second = reserve_run_dir(tmp_path / "runs" / "tiny-20260101-000000")
    third = reserve_run_dir(tmp_path / "runs" / "tiny-20260101-000000")
    assert [p.name for p in (first, second, third)] == ["tiny-20260101-000000", "tiny-20260101-000000-2", "tiny-20260101-000000-3"]
    assert all(p.is_dir() for p in (first, second, third))


def test_a_failing_handler_is_reported_and_stop_run_propagates():
    from trainer.run.events import EventBus

    class Broken(RunEvents):
        def on_epoch_end(self, epoch, logs):
            raise ValueError("handler bug")

    seen = Recorder()
    bus = EventBus([Broken(), seen])
    with pytest.warns(RuntimeWarning, match="Broken.on_epoch_end raised ValueError: handler bug"):
        bus.on_epoch_end(1, {"loss": 1.0})
    assert seen.calls == [("epoch", 1, {"loss": 1.0})]  # the next handler still heard it

    class Pruner(RunEvents):
        def on_epoch_end(self, epoch, logs):
            raise StopRun("bad trial", status="pruned")

    with pytest.raises(StopRun) as stop:
        EventBus([Pruner(), seen]).on_epoch_end(2, {})
    assert stop.value.status == "pruned" and seen.calls[-1] == ("epoch", 2, {})


# Every public function, called with arguments of the wrong type: a BadInputError (exit 2) naming the
# argument and what was received, never a TypeError (issue 19).
def _config_path(tmp_path: Path, mnist_npz: Path) -> Path:
    return write_yaml(tmp_path / "c.yaml", tiny_config(mnist_npz))


WRONG_ARGUMENTS = {
    "train-int": (lambda c, r: trainer.train(42), "config", "int 42"),
    "train-overrides-str": (lambda c, r: trainer.train(c, overrides="train.epochs=2"), "overrides", "str 'train.epochs=2'"),
    "train-overrides-int": (lambda c, r: trainer.train(c, overrides=[3]), "overrides[0]", "int 3"),
    "train-events-object": (lambda c, r: trainer.train(c, events=[object()]), "events[0]", "object"),
    "train-events-class": (lambda c, r: trainer.train(c, events=[RunEvents]), "events[0]", "type"),
    "train-events-int": (lambda c, r: trainer.train(c, events=5), "events", "int 5"),
    "train-callbacks": (lambda c, r: trainer.train(c, callbacks=["early_stopping"]), "callbacks[0]", "str 'early_stopping'"),
    "train-run-dir": (lambda c, r: trainer.train(c, run_dir=7), "run_dir", "int 7"),
    "train-resume": (lambda c, r: trainer.train(c, resume="yes"), "resume", "str 'yes'"),
    "train-dry-run": (lambda c, r: trainer.train(c, dry_run=1), "dry_run", "int 1"),
    "train-feature-cache": (lambda c, r: trainer.train(c, feature_cache=1.5), "feature_cache", "float 1.5"),
    "load-config-int": (lambda c, r: trainer.load_config(123), "path", "int 123"),
    "load-config-overrides": (lambda c, r: trainer.load_config(c, "a=b"), "overrides", "str 'a=b'"),
    "evaluate-none": (lambda c, r: trainer.evaluate(None), "run_dir", "NoneType None"),
    "evaluate-split": (lambda c, r: trainer.evaluate(r, split=3), "split", "int 3"),
    "evaluate-code-dirs": (lambda c, r: trainer.evaluate(r, code_dirs="code"), "code_dirs", "str 'code'"),
    "load-run-int": (lambda c, r: trainer.load_run(3), "run_dir", "int 3"),
    "load-run-config": (lambda c, r: trainer.load_run(r, config=["c.yaml"]), "config", "list"),
    "predict-inputs-int": (lambda c, r: trainer.predict(r, 3), "inputs", "int 3"),
    "predict-inputs-mixed": (lambda c, r: trainer.predict(r, ["a.png", None]), "inputs[1]", "NoneType None"),
    "predict-top-k": (lambda c, r: trainer.predict(r, "a.png", top_k="3"), "top_k", "str '3'"),
    "predict-run-dir": (lambda c, r: trainer.predict(None, "a.png"), "run_dir", "NoneType None"),
    "export-none": (lambda c, r: trainer.export(None, "onnx"), "run_dir", "NoneType None"),
    "export-format": (lambda c, r: trainer.export(r, 3), "format", "int 3"),
    "export-output": (lambda c, r: trainer.export(r, "onnx", output=3), "output", "int 3"),
    # the door's additions (issue 29): each workflow's new parameters, checked the same way
    "evaluate-write": (lambda c, r: trainer.evaluate(r, write="yes"), "write", "str 'yes'"),
    "evaluate-output": (lambda c, r: trainer.evaluate(r, output=3), "output", "int 3"),
    "evaluate-overwrite": (lambda c, r: trainer.evaluate(r, overwrite=1), "overwrite", "int 1"),
    "evaluate-mlflow": (lambda c, r: trainer.evaluate(r, mlflow=3), "mlflow", "int 3"),
    "predict-top-k-zero": (lambda c, r: trainer.predict(r, "a.png", top_k=0), "top_k", "int 0"),
    "predict-output": (lambda c, r: trainer.predict(r, "a.png", output=[]), "output", "list"),
    "validate-int": (lambda c, r: trainer.api.validate(7), "config", "int 7"),
    "list-runs-int": (lambda c, r: trainer.api.list_runs(5), "folder", "int 5"),
    "sweep-workers-zero": (lambda c, r: trainer.api.sweep(c, workers=0), "workers", "int 0"),
    "sweep-workers-str": (lambda c, r: trainer.api.sweep(c, workers="2"), "workers", "str '2'"),
    "sweep-trial-events": (lambda c, r: trainer.api.sweep(c, trial_events=[object()]), "trial_events[0]", "object"),
    "sweep-events": (lambda c, r: trainer.api.sweep(c, events=[]), "events", "list"),
    "lr-find-events": (lambda c, r: trainer.api.lr_find(c, events=[object()]), "events[0]", "object"),
    "lr-find-output": (lambda c, r: trainer.api.lr_find(c, output=2.5), "output", "float 2.5"),
}


@pytest.mark.parametrize("case", sorted(WRONG_ARGUMENTS))
def test_wrong_argument_types_are_bad_input_naming_the_argument(case, tmp_path, mnist_npz):
    call, argument, received = WRONG_ARGUMENTS[case]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(trainer.BadInputError) as error:
        call(_config_path(tmp_path, mnist_npz), run_dir)
    assert error.value.exit_code == 2
    assert str(error.value).startswith(f"{argument}: ") and received in str(error.value), str(error.value)


# --------------------------------------------------------------------------- slow: real runs


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One completed API run (3 epochs) with its events, shared by the read-back tests."""
    from tests.datagen import write_mnist_npz

    root = tmp_path_factory.mktemp("api")
    data = write_mnist_npz(root / "mnist.npz", n_train=256, n_test=64, seed=0)
    config = write_yaml(root / "tiny.yaml", tiny_config(data, train={"epochs": 3}))
    events = Recorder()
    import keras  # noqa: F401 - importing TensorFlow sets variables of its own; what trainer does is the question

    handlers_before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    environ_before = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    result = trainer.train(config, run_dir=root / "run", events=[events])
    return {
        "config": config, "result": result, "events": events, "data": data, "root": root,
        "handlers_before": handlers_before, "environ_before": environ_before,
    }


@pytest.mark.slow
def test_train_returns_the_run_and_events_come_in_order(finished_run):
    result, events = finished_run["result"], finished_run["events"]
    run_dir = finished_run["root"] / "run"
    assert result.status == "completed" and result.run_dir == run_dir
    assert result.metrics == json.loads((run_dir / "metrics.json").read_text())
    assert result.history == read_history(run_dir / "history.csv") and len(result.history) == 3
    assert events.kinds == ["start", "epoch", "epoch", "epoch", "end"]
    info = events.calls[0][1]
    assert info.run_dir == run_dir and info.sizes == {"train": 256, "validation": 64, "test": 64}
    assert info.model_summary.startswith("mlp: ") and info.config.name == "tiny"
    assert [call[2] for call in events.calls[1:4]] == result.history  # on_epoch_end gets the history.csv rows
    assert events.calls[-1][1] is result
    assert (run_dir / "model.h5").is_file() and (run_dir / "curves.png").is_file()


@pytest.mark.slow
def test_train_leaves_the_process_as_it_found_it(finished_run, capfd):
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == finished_run["handlers_before"]
    assert {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"} == finished_run["environ_before"]
    assert gc.get_freeze_count() == 0  # the garbage-collector freeze of fit is undone
    import keras

    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.slow
def test_evaluate_predict_and_load_run_match_the_cli(finished_run, tmp_path):
    run_dir = finished_run["root"] / "run"
    report = trainer.evaluate(run_dir)
    assert run_cli("eval", run_dir, "--output", tmp_path / "eval.json").exit_code == 0
    written = json.loads((tmp_path / "eval.json").read_text())
    assert report.keys() == written.keys() and report["confusion_matrix"] == written["confusion_matrix"]
    assert report["accuracy"] == pytest.approx(written["accuracy"]) == pytest.approx(finished_run["result"].metrics["test"]["accuracy"], abs=1e-6)

    images = np.load(finished_run["data"])["x_test"][:5]
    np.save(tmp_path / "five.npy", images)
    assert run_cli("predict", run_dir, tmp_path / "five.npy", "--output", tmp_path / "p.json").exit_code == 0
    from_cli = json.loads((tmp_path / "p.json").read_text())
    from_paths = trainer.predict(run_dir, [tmp_path / "five.npy"])
    from_array = trainer.predict(run_dir, images, top_k=2)
    assert from_paths == from_cli
    assert [r["predicted"] for r in from_array] == [r["predicted"] for r in from_cli]
    assert all(len(r["top_k"]) == 2 for r in from_array) and from_array[0]["input"] == "<array>"

    run = trainer.load_run(run_dir)
    assert run.config.name == "tiny" and run.manifest.num_classes == 10 and run.manifest.input_shape == [28, 28, 1]
    assert run.model.predict(images, verbose=0).argmax(axis=1).tolist() == [r["predicted"] for r in from_cli]


@pytest.mark.slow
def test_nan_loss_raises_after_metrics_and_the_end_event(tmp_path, mnist_npz):
    config = tiny_config(mnist_npz, model={"type": "mlp", "hidden_units": [16], "output": "logits"},
                         optimizer={"name": "sgd", "learning_rate": 1.0e30}, train={"epochs": 3})
    events = Recorder()
    with pytest.raises(trainer.RunFailedError, match="the training loss became nan"):
        trainer.train(write_yaml(tmp_path / "nan.yaml", config), run_dir=tmp_path / "nan", events=[events])
    assert events.kinds[0] == "start" and events.kinds[-1] == "end"
    ended = events.calls[-1][1]
    assert ended.status == "failed" and "nan" in ended.reason
    assert json.loads((tmp_path / "nan" / "metrics.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_interrupt_raises_after_metrics_and_the_end_event(tmp_path, mnist_npz):
    import keras

    class CtrlC(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    events = Recorder()
    config = write_yaml(tmp_path / "c.yaml", tiny_config(mnist_npz, train={"epochs": 4}))
    with pytest.raises(trainer.RunInterrupted) as error:
        trainer.train(config, run_dir=tmp_path / "r", events=[events], callbacks=[CtrlC()])
    assert error.value.exit_code == 130
    assert events.kinds == ["start", "epoch", "epoch", "end"] and events.calls[-1][1].status == "interrupted"
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["epochs_completed"] == 2


@pytest.mark.slow
def test_an_error_that_follows_ctrl_c_is_the_interrupt(tmp_path, mnist_npz):
    """TensorFlow's C++ tensor conversion turns a KeyboardInterrupt raised inside it into a TypeError of its own."""
    import keras
    import typer

    from trainer.cli.common import handles_errors, interrupts_as_keyboard_interrupt
    from trainer.errors import interrupt_requested, request_interrupt

    class SignalInsideTensorFlow(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            request_interrupt()  # what the CLI's SIGINT/SIGTERM handler does before raising KeyboardInterrupt
            raise TypeError("Failed to convert elements of (None, 784) to Tensor.")

    config = write_yaml(tmp_path / "c.yaml", tiny_config(mnist_npz, train={"epochs": 3}))
    with interrupts_as_keyboard_interrupt(), pytest.raises(trainer.RunInterrupted):
        trainer.train(config, run_dir=tmp_path / "r", callbacks=[SignalInsideTensorFlow()])
    assert not interrupt_requested()  # cleared when the command ends
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["epochs_completed"] == 1  # the callback runs after the epoch is recorded

    @handles_errors
    def command():
        with interrupts_as_keyboard_interrupt():
            request_interrupt()
            raise TypeError("converted")

    with pytest.raises(typer.Exit) as exit_:
        command()
    assert exit_.value.exit_code == 130

    with pytest.raises(trainer.RunInterrupted, match="resume with"):  # trainer's own message (its resume command) passes unchanged
        with interrupts_as_keyboard_interrupt():
            request_interrupt()
            raise trainer.RunInterrupted("interrupted after 1 epoch; resume with: trainer run --resume r")

    @handles_errors
    def buggy():
        with interrupts_as_keyboard_interrupt():
            raise TypeError("a bug keeps its traceback")

    with pytest.raises(TypeError):
        buggy()


@pytest.mark.slow
def test_a_handler_may_stop_the_run_and_a_broken_one_does_not_lose_it(tmp_path, mnist_npz):
    class Prune(RunEvents):
        def on_epoch_end(self, epoch, logs):
            if epoch == 2:
                raise StopRun("val_accuracy too low", status="pruned")

    class Broken(RunEvents):
        def on_epoch_end(self, epoch, logs):
            raise RuntimeError("logger down")

    events = Recorder()
    config = write_yaml(tmp_path / "c.yaml", tiny_config(mnist_npz, train={"epochs": 5}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = trainer.train(config, run_dir=tmp_path / "r", events=[Broken(), Prune(), events])
    assert result.status == "pruned" and result.reason == "val_accuracy too low" and len(result.history) == 2
    assert events.kinds == ["start", "epoch", "epoch", "end"]
    assert len(result.event_errors) == 2 and "logger down" in result.event_errors[0]
    assert any("logger down" in str(w.message) for w in caught)
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["status"] == "pruned"


@pytest.mark.slow
def test_two_runs_in_one_process_match_a_run_in_a_fresh_process(tmp_path, mnist_npz, subprocess_env):
    config = write_yaml(tmp_path / "c.yaml", tiny_config(mnist_npz, train={"epochs": 2}, model={"type": "mlp", "hidden_units": [16], "dropout": 0.2}))
    script = "import sys, json, trainer; r = trainer.train(sys.argv[1], run_dir=sys.argv[2]); print(json.dumps(r.history))"
    alone = subprocess.run([sys.executable, "-c", script, str(config), str(tmp_path / "alone")], env=subprocess_env,
                           capture_output=True, text=True, check=True, cwd=tmp_path)
    expected = json.loads(alone.stdout.strip().splitlines()[-1])
    first = trainer.train(config, run_dir=tmp_path / "first").history
    second = trainer.train(config, run_dir=tmp_path / "second").history
    for history in (first, second):
        for row, want in zip(history, expected):
            for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
                assert row[key] == pytest.approx(want[key], rel=1e-5), (key, row, want)


@pytest.mark.slow
def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path, mnist_npz, monkeypatch):
    from datetime import datetime

    import trainer.run.rundir as rundir

    frozen = datetime(2026, 1, 2, 3, 4, 5)
    monkeypatch.setattr(rundir, "default_run_dir", lambda out, name, now=None: Path(out) / f"{name}-{frozen:%Y%m%d-%H%M%S}")
    config = trainer.load_config(write_yaml(tmp_path / "c.yaml", tiny_config(mnist_npz, output={"dir": str(tmp_path / "out")})))
    dirs = [trainer.train(config).run_dir for _ in range(2)]
    assert [d.name for d in dirs] == ["tiny-20260102-030405", "tiny-20260102-030405-2"]
    assert all((d / "metrics.json").is_file() for d in dirs)


@pytest.mark.slow
def test_class_weight_mapping_on_a_folder_dataset(tmp_path):
    """Was a KeyError: 'folder' traceback: the class count of a folder dataset comes from its folders."""
    images = write_image_folders(tmp_path / "images", n_per_class=4, size=(12, 12))
    config = tiny_config(None, data={"dataset": "folder", "path": str(images), "validation": "none", "image_size": [12, 12]},
                         train={"epochs": 1, "batch_size": 4, "class_weight": {0: 2.0, 2: 0.5}})
    result = run_cli("run", write_yaml(tmp_path / "c.yaml", config), "--run-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    bad = run_cli("run", write_yaml(tmp_path / "bad.yaml", {**config, "train": {"class_weight": {7: 1.0}}}), "--run-dir", tmp_path / "b")
    assert bad.exit_code == 2 and "class ids [7] are outside 0..2" in bad.text


class EndsTheProcess(RunEvents):
    """A handler that calls sys.exit (or raises another BaseException) at one hook."""

    def __init__(self, hook: str, error: BaseException):
        self.hook, self.error = hook, error

    def on_run_start(self, info):
        if self.hook == "on_run_start":
            raise self.error

    def on_epoch_end(self, epoch, logs):
        if self.hook == "on_epoch_end" and epoch == 2:
            raise self.error


class Fatal(BaseException):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("hook, error, status, epochs", [
    ("on_epoch_end", SystemExit(3), "interrupted", 2),
    ("on_run_start", SystemExit(0), "interrupted", 0),
    ("on_epoch_end", Fatal("stop now"), "interrupted", 2),
])
def test_a_handler_raising_system_exit_still_leaves_metrics_json(hook, error, status, epochs, tmp_path, mnist_npz):
    events = Recorder()
    config = write_yaml(tmp_path / "c.yaml", tiny_config(mnist_npz, train={"epochs": 4}))
    with pytest.raises(type(error)):
        trainer.train(config, run_dir=tmp_path / "r", events=[EndsTheProcess(hook, error), events])
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["status"] == status and metrics["epochs_completed"] == epochs
    assert type(error).__name__ in metrics["reason"]
    assert events.kinds[-1] == "end" and events.calls[-1][1].status == status
    if epochs:  # the run can be continued from its last checkpoint (the epoch whose handler raised is trained again)
        assert json.loads((tmp_path / "r" / "checkpoint.json").read_text())["epoch"] == epochs - 1
