"""train.ema: the average of the weights by hand, what uses it (validation, test, model.h5), exact resume, refusals."""
from __future__ import annotations

import importlib.util
import json
import signal
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trainer
from tests.conftest import StopAfter, tiny_config
from tests.datagen import write_mnist_npz
from trainer.config.ema import EmaConfig
from trainer.errors import RunDirError
from trainer.readers.ema_state import check_average_state
from trainer.run.ema import decay_at

needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
EMA = {"decay": 0.9, "warmup": True}


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "ema, key, says",
    [
        ({"decay": 1.0}, "train.ema.decay", "less than 1"),
        ({"decay": 0}, "train.ema.decay", "greater than 0"),
        ({"decay": -0.5}, "train.ema.decay", "greater than 0"),
        ({"decay": ".nan"}, "train.ema.decay", ""),
        ({"decay": "high"}, "train.ema.decay", "number"),
        ({"every": 0}, "train.ema.every", "greater than 0"),
        ({"every": 1.5}, "train.ema.every", "integer"),
        ({"warmup": "yes"}, "train.ema.warmup", "boolean"),
        ({"warmup": "cubics"}, "train.ema.warmup", "cubic"),
        ({"lookahead": "yes"}, "train.ema.lookahead", "boolean"),
        ({"lookahead": 1}, "train.ema.lookahead", "boolean"),
        ({"decay": 0.99, "momentum": 0.9}, "train.ema.momentum", "unknown key"),
    ],
)
def test_bad_ema_settings_exit_2_naming_the_key(cli, write_config, ema, key, says):
    text = yaml.safe_dump(tiny_config(None, train={"epochs": 1, "ema": ema}), sort_keys=False).replace("'.nan'", ".nan")
    result = cli("validate", write_config(text))
    assert result.exit_code == 2, result.output
    assert key in result.text and says in result.text
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "extra, says",
    [
        ({"distribute": {"strategy": "mirrored"}}, "train.ema: not supported with distribute.strategy mirrored"),
        ({"train": {"epochs": 1, "ema": {}, "cache_features": True}}, "train.cache_features: true cannot be used with train.ema"),
    ],
)
def test_ema_with_what_it_cannot_follow_is_refused(cli, write_config, extra, says):
    config = tiny_config(None, train={"epochs": 1, "ema": {}})
    if "train" not in extra:
        config.update(extra)
    else:
        config["train"] = extra["train"]
        config["model"] = {"type": "vgg16_head", "weights": None}
    result = cli("validate", write_config(config))
    assert result.exit_code == 2 and says in result.text, result.output


def test_ema_defaults_and_an_absent_section_leave_the_stored_config_unchanged():
    from trainer.config import Config

    assert "ema" not in Config().to_dict()["train"]  # old run directories resume: their config.yaml has no train.ema
    assert Config.model_validate({"train": {"ema": {}}}).train.ema == EmaConfig(decay=0.999, warmup=False, every=1)


@pytest.mark.parametrize("updates, expected", [(0, 0.1), (1, 2 / 11), (8, 0.5), (80, 81 / 90), (10_000, 0.99)])
def test_warmup_decay_values(updates, expected):
    assert decay_at(EmaConfig(decay=0.99, warmup=True), updates) == pytest.approx(expected)
    assert decay_at(EmaConfig(decay=0.99), updates) == 0.99


@pytest.mark.parametrize(
    "ema, steps, warned",
    [({"decay": 0.99999}, 2, True), ({"decay": 0.99999, "warmup": True}, 2, False), ({"decay": 0.99}, 100, False),
     ({"decay": 0.99}, 99, True), ({"decay": 0.9, "every": 20}, 150, True)],
)
def test_an_average_longer_than_the_run_is_told(ema, steps, warned):
    from trainer.run.ema import short_run_notice

    notice = short_run_notice(EmaConfig(**ema), steps)
    assert (notice is not None) == warned
    if warned:
        assert "train.ema.warmup: true" in notice and f"trains {steps:,}" in notice


# --------------------------------------------------------------------------- arithmetic by hand


def hand_average(settings: EmaConfig, steps: int, rate: float = 0.1, total_steps: int = 1) -> tuple[float, float]:
    """A Dense(1) layer on inputs (1, 1), target 1, SGD on the squared error: every weight follows w -= rate * 2 (3w - 1).

    With ``lookahead`` the weight is set to the average at each update (airbench94's ``LookaheadState``)."""
    weight, average, updates = 0.0, 0.0, 0
    for step in range(1, steps + 1):
        weight -= rate * 2 * (3 * weight - 1)
        if step % settings.every == 0:
            decay = decay_at(settings, updates, step=step, total_steps=total_steps)
            average, updates = decay * average + (1 - decay) * weight, updates + 1
            if settings.lookahead:
                weight = average
    return weight, average


@pytest.mark.parametrize("step, total, expected", [(0, 10, 0.0), (5, 10, 0.9 * 0.125), (10, 10, 0.9), (20, 10, 0.9)])
def test_cubic_decay_values(step, total, expected):
    assert decay_at(EmaConfig(decay=0.9, warmup="cubic"), 3, step=step, total_steps=total) == pytest.approx(expected)


def test_lookahead_by_hand_small_case():
    """decay 0.5, every 2 steps, cubic over 4 steps, rate 0.1 (w -= 0.2 (3w - 1)):
    step 1: w 0.2; step 2: w 0.28, decay 0.5 x (2/4)^3 = 1/16, average 15/16 x 0.28 = 0.2625, w = 0.2625;
    step 3: w 0.3050; step 4: w 0.3220, decay 0.5, average 0.5 x 0.2625 + 0.5 x 0.3220 = 0.29225, w = 0.29225."""
    settings_ = EmaConfig(decay=0.5, warmup="cubic", every=2, lookahead=True)
    weight, average = hand_average(settings_, 4, total_steps=4)
    assert average == pytest.approx(0.29225) and weight == average


def check_lookahead_in_keras(steps_per_execution: int) -> None:
    """The compiled step's lookahead equals ``hand_average`` (run on the current backend; the JAX case runs it in a subprocess)."""
    import keras

    from trainer.run.ema import WeightAverage

    settings_ = EmaConfig(decay=0.5, warmup="cubic", every=2, lookahead=True)
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1, kernel_initializer="zeros", bias_initializer="zeros")(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", steps_per_execution=steps_per_execution)
    average = WeightAverage(settings_, total_steps=6)
    average.attach(model)
    x, y = np.ones((5, 2), "float32"), np.ones((5, 1), "float32")  # 5 steps: the last one is not an update
    model.fit(x, y, batch_size=1, epochs=1, verbose=0, shuffle=False, callbacks=[average.callback()])
    raw, expected = hand_average(settings_, 5, total_steps=6)
    assert raw != expected  # step 5 moved the weights away from the average
    for weights in average.raw_weights(model):
        np.testing.assert_allclose(weights, raw, rtol=1e-5)
    for weights in model.get_weights():
        np.testing.assert_allclose(weights, expected, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_lookahead_equals_the_hand_computed_one(steps_per_execution):
    check_lookahead_in_keras(steps_per_execution)


@needs_jax
@pytest.mark.slow
def test_lookahead_equals_the_hand_computed_one_on_jax(subprocess_env):
    import subprocess
    import sys

    script = "from tests.run.test_ema import check_lookahead_in_keras as c; c(1); c(2); print('LOOKAHEAD OK')"
    done = subprocess.run([sys.executable, "-c", script], env={**subprocess_env, "KERAS_BACKEND": "jax"}, capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0 and "LOOKAHEAD OK" in done.stdout, done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("ema", [{"decay": 0.9}, {"decay": 0.9, "warmup": True}, {"decay": 0.5, "warmup": True, "every": 2}])
@pytest.mark.parametrize("steps_per_execution", [1, 3])
def test_the_average_equals_the_hand_computed_one(ema, steps_per_execution):
    import keras

    from trainer.run.ema import WeightAverage

    settings_ = EmaConfig(**ema)
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1, kernel_initializer="zeros", bias_initializer="zeros")(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", steps_per_execution=steps_per_execution)
    average = WeightAverage(settings_)
    average.attach(model)
    x, y = np.ones((6, 2), "float32"), np.ones((6, 1), "float32")
    model.fit(x, y, batch_size=1, epochs=1, verbose=0, shuffle=False, callbacks=[average.callback()])
    raw, expected = hand_average(settings_, 6)
    assert int(average.step.numpy()) == 6
    for weights in average.raw_weights(model):
        np.testing.assert_allclose(weights, raw, rtol=1e-5)
    for weights in model.get_weights():  # after the epoch the model holds the average
        np.testing.assert_allclose(weights, expected, rtol=1e-5)
    average.use_raw()
    for weights in model.get_weights():
        np.testing.assert_allclose(weights, raw, rtol=1e-5)


@pytest.mark.slow
def test_batch_norm_statistics_are_averaged_and_other_non_trainable_weights_follow_the_raw_model():
    import keras

    from trainer.run.ema import averaged_variables

    inputs = keras.Input((3,))
    frozen = keras.layers.Dense(2, name="frozen")
    frozen.trainable = False
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(frozen(inputs)))
    names = [v.path for v in averaged_variables(model)]
    assert names == ["bn/gamma", "bn/beta", "bn/moving_mean", "bn/moving_variance"]


# --------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def ema_config(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ema")
    data = write_mnist_npz(folder / "data.npz", n_train=1600, n_test=64, seed=0)
    with np.load(data) as arrays:  # a tenth of the labels shuffled: validation loss stays far from 0, so raw and average differ
        arrays = dict(arrays)
    noisy = np.random.default_rng(0).permutation(len(arrays["y_train"]))[:160]
    arrays["y_train"][noisy] = np.random.default_rng(1).integers(0, 10, len(noisy))
    np.savez(data, **arrays)
    config = tiny_config(
        data, train={"epochs": 3, "batch_size": 16, "ema": EMA}, compile={"steps_per_execution": 1},
        optimizer={"name": "adam", "learning_rate": 0.01},
    )
    path = folder / "ema.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def reference(ema_config):
    from tests.conftest import run_cli

    run_dir = ema_config.parent / "reference"
    result = run_cli("run", ema_config, "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    assert "decay 0.9, warmup, every step" in result.text  # the run header says so
    return run_dir


def checkpoint_arrays(run_dir: Path) -> dict[str, list[np.ndarray]]:
    from trainer.run.checkpoint import read_arrays

    state = json.loads((run_dir / "checkpoint.json").read_text())
    return read_arrays(run_dir / state["weights_file"], grouped=True)


@pytest.mark.slow
def test_model_h5_validation_and_test_use_the_average(reference, ema_config):
    from trainer.models import load_model
    from trainer.run.rundir import read_history

    metrics = json.loads((reference / "metrics.json").read_text())
    assert (reference / "checkpoint.json").is_file() and list(reference.glob("checkpoint-epoch*.weights.npz"))  # kept: the raw weights
    model = load_model(reference / metrics["best"]["last_weights"])  # the last epoch (model.h5 is the best one)
    saved = [np.asarray(w) for w in model.get_weights()]
    stored = checkpoint_arrays(reference)
    raw, optimizer = stored["model"], stored["optimizer"]
    averages = optimizer[-len(raw) - 1 : -1]  # one average per weight (an MLP: all trainable), then the step count
    assert int(optimizer[-1]) == 3 * 100  # 1,600 examples / 16 per batch, 3 epochs
    for got, average, trained in zip(saved, averages, raw, strict=True):
        np.testing.assert_allclose(got, average, rtol=1e-6)
        assert not np.allclose(got, trained)  # the raw weights differ: training continued on them
    data = np.load(yaml.safe_load(ema_config.read_text())["data"]["path"])
    evaluated = model.evaluate(data["x_test"], data["y_test"], verbose=0, return_dict=True, batch_size=16)  # models take raw pixels
    last = read_history(reference / "history.csv")[-1]
    assert last["val_loss"] == pytest.approx(evaluated["loss"], rel=1e-4, abs=1e-6)
    model.set_weights(raw)  # the raw weights measure something else: validation did use the average
    assert last["val_loss"] != pytest.approx(model.evaluate(data["x_test"], data["y_test"], verbose=0, return_dict=True)["loss"], rel=1e-2)
    best = load_model(reference / "model.h5")  # the best epoch by val_loss: its average is what the test split measured
    best_row = read_history(reference / "history.csv")[metrics["best"]["epoch"] - 1]
    best_loss = best.evaluate(data["x_test"], data["y_test"], verbose=0, return_dict=True, batch_size=16)["loss"]
    assert best_row["val_loss"] == pytest.approx(best_loss, rel=1e-4, abs=1e-6)
    assert metrics["test"]["loss"] == pytest.approx(best_loss, abs=1e-5)
    assert metrics["ema"] == {"decay": 0.9, "warmup": True, "every": 1, "lookahead": False}
    assert json.loads((reference / "manifest.json").read_text())["ema"] == metrics["ema"]


@pytest.mark.slow
def test_kill_after_an_epoch_and_resume_equal_the_uninterrupted_run(ema_config, reference, tmp_path, subprocess_env):
    from tests.run.test_resume_exact import signal_after_rows, start
    from trainer.models import load_model
    from trainer.run.rundir import read_history

    run_dir = tmp_path / "killed"
    process = start(["run", ema_config, "--run-dir", run_dir], subprocess_env)
    killed = signal_after_rows(process, run_dir / "history.csv", 2, signal.SIGKILL)  # the checkpoint is epoch 1's or 2's
    if killed.returncode != -signal.SIGKILL:
        pytest.skip("the run finished before the kill landed")
    from tests.conftest import run_cli

    result = run_cli("run", ema_config, "--run-dir", run_dir, "--resume")
    assert result.exit_code == 0, result.output
    got, want = read_history(run_dir / "history.csv"), read_history(reference / "history.csv")
    assert [r["epoch"] for r in got] == [1, 2, 3]
    for a, b in zip(got, want):
        assert (a["loss"], a["val_loss"]) == (pytest.approx(b["loss"], rel=1e-5), pytest.approx(b["val_loss"], rel=1e-5))
    for a, b in zip(load_model(run_dir / "model.h5").get_weights(), load_model(reference / "model.h5").get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    for a, b in zip(checkpoint_arrays(run_dir)["model"], checkpoint_arrays(reference)["model"]):  # the raw weights too
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)




@pytest.mark.slow
def test_a_stopped_run_resumed_equals_the_uninterrupted_run(ema_config, reference, tmp_path):
    """Stopped during epoch 2's end: the checkpoint is epoch 1's (raw weights, average, step count)."""
    from trainer.run.rundir import read_history

    run_dir = tmp_path / "stopped"
    assert trainer.train(ema_config, run_dir=run_dir, events=[StopAfter(2)]).status == "stopped"
    assert trainer.train(ema_config, run_dir=run_dir, resume=True).status == "completed"
    got, want = read_history(run_dir / "history.csv"), read_history(reference / "history.csv")
    assert [r["val_loss"] for r in got] == pytest.approx([r["val_loss"] for r in want], rel=1e-5)
    final, expected = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, reference))
    assert final["test"]["loss"] == pytest.approx(expected["test"]["loss"], rel=1e-5)


def rewrite_checkpoint(run_dir: Path, change) -> None:
    from trainer.run.checkpoint import write_arrays

    state = json.loads((run_dir / "checkpoint.json").read_text())
    groups = checkpoint_arrays(run_dir)
    change(groups)
    write_arrays(run_dir / state["weights_file"], groups)


def _nan_average(groups):
    groups["optimizer"][-2] = np.full_like(groups["optimizer"][-2], np.nan)


def _wrong_shape(groups):
    groups["optimizer"][-2] = np.zeros((3, 3), "float32")


def _missing(groups):
    del groups["optimizer"][-5:]


def _negative_count(groups):
    groups["optimizer"][-1] = np.array(-4, "int32")


def _float_count(groups):
    groups["optimizer"][-1] = np.array(2.5, "float32")


@pytest.mark.slow
@pytest.mark.parametrize(
    "change, says",
    [(_nan_average, "NaN or infinite"), (_wrong_shape, "but the weight is"), (_missing, "optimizer arrays"),
     (_negative_count, "step count"), (_float_count, "step count")],
)
def test_a_forged_ema_state_is_refused_on_resume(ema_config, tmp_path, change, says):
    from tests.conftest import run_cli

    run_dir = tmp_path / "forged"
    assert trainer.train(ema_config, run_dir=run_dir, events=[StopAfter(2)]).status == "stopped"
    rewrite_checkpoint(run_dir, change)
    result = run_cli("run", ema_config, "--run-dir", run_dir, "--resume")
    assert result.exit_code == 2, result.output
    assert says in result.text and "cannot be resumed" in result.text and "Traceback" not in result.output


@pytest.mark.slow
def test_a_run_without_ema_is_not_resumed_with_ema(ema_config, tmp_path):
    from tests.conftest import run_cli

    run_dir = tmp_path / "plain"
    assert trainer.train(ema_config, run_dir=run_dir, overrides=["train.ema=null"], events=[StopAfter(2)]).status == "stopped"
    result = run_cli("run", ema_config, "--run-dir", run_dir, "--resume")
    assert result.exit_code == 2 and "train.ema" in result.text, result.output


@pytest.mark.slow
def test_lr_find_does_not_average(cli, ema_config, tmp_path, monkeypatch):
    from trainer.run.ema import WeightAverage

    def refuse(self, model):
        raise AssertionError("lr-find attached the average")

    monkeypatch.setattr(WeightAverage, "attach", refuse)
    result = cli("lr-find", ema_config, "--steps", "20", "--output", tmp_path / "lr")
    assert result.exit_code == 0, result.output


@needs_jax
@pytest.mark.slow
def test_a_jax_run_with_ema_without_tensorflow(tmp_path, mnist_npz, write_config):
    from tests.project.test_backend_neutral import _trainer

    config = tiny_config(mnist_npz, train={"epochs": 2, "batch_size": 32, "ema": EMA})
    path = write_config(config)
    run_dir = tmp_path / "run"
    for args in (["run", path, "--run-dir", run_dir, "--set", "train.epochs=1"], ["run", path, "--run-dir", run_dir, "--resume"]):
        done = _trainer(args, tmp_path)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
        assert "TENSORFLOW_LOADED False" in done.stderr and "Traceback" not in done.stdout + done.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["device"]["backend"] == "jax" and metrics["ema"]["decay"] == 0.9 and metrics["epochs_completed"] == 2
    state = checkpoint_arrays(run_dir)
    assert int(state["optimizer"][-1]) == 2 * 8  # 256 examples / 32, 2 epochs: the count went on after the resume


# --------------------------------------------------------------------------- the reader, mutated


class _Weight:
    def __init__(self, shape, path):
        self.shape, self.path = shape, path


WEIGHTS = [_Weight((4, 3), "dense/kernel"), _Weight((3,), "dense/bias")]


def _valid_state() -> list[np.ndarray]:
    return [np.array(7, "int64"), np.zeros((4, 3), "float32"), np.ones(3, "float32"), np.array(12, "int32")]


def test_a_valid_ema_state_passes():
    stored = _valid_state()
    check_average_state("ckpt.npz", stored, [1, 2], WEIGHTS, 3)  # no refusal
    stored[3] = np.array(-1, "int32")  # the same state with one step count out of range: refused, so the check reads it
    with pytest.raises(RunDirError, match="optimizer/000003"):
        check_average_state("ckpt.npz", stored, [1, 2], WEIGHTS, 3)


_values = st.one_of(
    st.sampled_from([np.nan, np.inf, -np.inf]).map(lambda v: np.full((4, 3), v, "float32")),
    st.lists(st.integers(0, 5), max_size=3).map(lambda shape: np.zeros(shape, "float32")),
    st.sampled_from(["int32", "bool", "complex64", "U3", "int8"]).map(lambda dtype: np.zeros((4, 3), dtype)),
    st.integers(-(2**40), -1).map(lambda v: np.array(v, "int64")),
    st.integers(2**31, 2**62).map(lambda v: np.array(v, "int64")),
    st.floats(allow_nan=True).map(lambda v: np.array(v)),
    st.just(np.zeros((1,), "int32")),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(slot=st.sampled_from([1, 2, 3]), value=_values, cut=st.booleans())
def test_a_mutated_ema_state_is_a_run_dir_error(slot, value, cut):
    stored = _valid_state()
    stored[slot] = value
    if cut:
        stored = stored[: slot]
    valid = not cut and slot < 3 and value.dtype.kind == "f" and value.shape == WEIGHTS[slot - 1].shape and bool(np.all(np.isfinite(value)))
    if valid:  # a mutation may happen to be a sound state (zeros of the right shape)
        check_average_state("ckpt.npz", stored, [1, 2], WEIGHTS, 3)
        return
    with pytest.raises(RunDirError, match="ckpt.npz"):
        check_average_state("ckpt.npz", stored, [1, 2], WEIGHTS, 3)


@pytest.mark.parametrize("ema", [{"decay": 2}, {"decay": "x"}, "fast", {"every": -1}, {"other": 1}])
def test_a_malformed_ema_record_in_the_manifest_or_metrics_is_a_run_dir_error(tmp_path, ema):
    from trainer.readers.run_files import read_metrics_record
    from trainer.readers.records import Manifest

    (tmp_path / "manifest.json").write_text(json.dumps({"dataset": "mnist", "num_classes": 2, "ema": ema}))
    with pytest.raises(RunDirError, match="ema"):
        Manifest.read(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "completed", "ema": ema}))
    with pytest.raises(RunDirError, match="ema"):
        read_metrics_record(tmp_path)


@pytest.mark.slow
def test_fine_tune_phases_carry_the_average_and_resume_across_the_boundary(tmp_path):
    """The fine-tune phase's fresh optimizer gets the head phase's average; a run stopped at the boundary resumes exactly."""
    import keras

    from trainer.models import load_model
    from trainer.run.rundir import read_history

    keras.utils.set_random_seed(11)
    keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(tmp_path / "start.weights.h5")
    data = write_mnist_npz(tmp_path / "m.npz", n_train=16, n_test=8, num_classes=3)
    config = tiny_config(data, train={"epochs": 1, "batch_size": 8, "ema": {"decay": 0.5, "warmup": True}})
    config["model"] = {
        "type": "backbone_head", "backbone": "vgg16", "weights": str(tmp_path / "start.weights.h5"),  # few layers: quick to trace
        "head": {"hidden_units": [4], "dropout": 0.0}, "fine_tune": {"epochs": 1, "learning_rate": 0.01, "unfreeze": 4},
    }
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(config))
    assert trainer.train(path, run_dir=tmp_path / "reference").status == "completed"
    assert int(checkpoint_arrays(tmp_path / "reference")["optimizer"][-1]) == 2 * 2  # the step count went on in phase 2
    assert trainer.train(path, run_dir=tmp_path / "resumed", events=[StopAfter(2)]).status == "stopped"
    assert trainer.train(path, run_dir=tmp_path / "resumed", resume=True).status == "completed"
    got, want = (read_history(tmp_path / d / "history.csv") for d in ("resumed", "reference"))
    assert [(r["phase"], r["val_loss"]) for r in got] == [(r["phase"], pytest.approx(r["val_loss"], rel=1e-4)) for r in want]
    for a, b in zip(load_model(tmp_path / "resumed" / "model.h5").weights, load_model(tmp_path / "reference" / "model.h5").weights):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_early_stopping_restores_the_best_average(ema_config, tmp_path):
    """The best weights early stopping keeps are taken at the epoch's end, when the model holds the average."""
    from trainer.run.rundir import read_history

    best_first = "callbacks=[{name: early_stopping, monitor: val_loss, mode: max, patience: 5, restore_best_weights: true}]"
    run_dir = tmp_path / "es"
    # model.h5 is the best by train.monitor: the same value and direction as early stopping's here
    assert trainer.train(ema_config, run_dir=run_dir, overrides=[best_first, "train.monitor_mode=max"]).status == "completed"
    rows = read_history(run_dir / "history.csv")
    best = max(rows, key=lambda row: row["val_loss"])
    assert best["epoch"] != rows[-1]["epoch"]  # restoring changes something
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert test["loss"] == pytest.approx(best["val_loss"], rel=1e-5)  # validation is the test split: the same average
