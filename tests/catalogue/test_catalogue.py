"""The catalogue: documented Keras loss values, every loss through the CLI, custom code round trips,
callbacks, compile/fit settings, regularizers on saved layers, and helpful refusals."""
from __future__ import annotations

import csv
import inspect
import json
import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from tests.conftest import REPO_ROOT, tiny_config
from tests.datagen import write_mnist_npz
from trainer.catalogue.losses import LOSSES, build_loss

CONFIGS = REPO_ROOT / "configs"


@pytest.fixture
def small_npz(tmp_path: Path) -> Path:
    return write_mnist_npz(tmp_path / "small.npz", n_train=64, n_test=16, seed=0)


def flat(text: str) -> str:
    """Output with Rich's line wrapping undone."""
    return " ".join(text.replace("│", " ").split())


def history(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "history.csv") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------- documented values


def test_documented_keras_values():
    y_pred = np.array([[0.9, 0.05, 0.05], [0.5, 0.89, 0.6], [0.05, 0.01, 0.94]], "float32")
    # by hand: rows are normalized to sum to 1, then -log of the true class's probability, averaged
    expected = np.mean([-math.log(0.9), -math.log(0.89 / 1.99), -math.log(0.94)])
    assert expected == pytest.approx(0.3239, abs=1e-4)
    scce = build_loss("sparse_categorical_crossentropy", {})
    assert float(scce(np.array([0, 1, 2]), y_pred)) == pytest.approx(0.3239, abs=1e-4)

    onehot = np.eye(3, dtype="float32")
    y_pred2 = np.array([[0.9, 0.05, 0.05], [0.05, 0.89, 0.06], [0.05, 0.01, 0.94]], "float32")
    assert np.mean([-math.log(0.9), -math.log(0.89), -math.log(0.94)]) == pytest.approx(0.0945, abs=1e-4)
    assert float(build_loss("cce", {})(onehot, y_pred2)) == pytest.approx(0.0945, abs=1e-4)

    y_true, y_hat = np.array([[0.0, 0.0, 1.0, 1.0]]), np.array([[1.0, 1.0, 1.0, 0.0]])
    assert float(build_loss("mse", {})(y_true, y_hat)) == pytest.approx(0.75)
    assert float(build_loss("mae", {})(y_true, y_hat)) == pytest.approx(0.75)


def test_loss_parameters_match_keras_signatures():
    for name, info in LOSSES.items():
        signature = inspect.signature(getattr(keras.losses, info.keras_class).__init__)
        keras_params = {p.name: p.default for p in signature.parameters.values() if p.name not in ("self", "dtype")}
        assert info.params == keras_params, name


def test_hand_written_focal_loss_matches_keras():
    sys.path.insert(0, str(CONFIGS))
    try:
        import my_losses
    finally:
        sys.path.remove(str(CONFIGS))
    rng = np.random.default_rng(0)
    y_true = np.eye(5, dtype="float32")[rng.integers(0, 5, 32)]
    y_pred = keras.ops.convert_to_numpy(keras.ops.softmax(rng.normal(size=(32, 5)).astype("float32")))
    for gamma, alpha in ((2.0, 0.25), (0.5, 1.0)):
        ours = float(my_losses.FocalLoss(gamma=gamma, alpha=alpha)(y_true, y_pred))
        theirs = float(keras.losses.CategoricalFocalCrossentropy(gamma=gamma, alpha=alpha)(y_true, y_pred))
        assert ours == pytest.approx(theirs, rel=1e-5)
    built = build_loss("categorical_focal_crossentropy", {"gamma": 2.0})
    assert float(built(y_true, y_pred)) == pytest.approx(float(my_losses.FocalLoss()(y_true, y_pred)), rel=1e-5)


# --------------------------------------------------------------------------- every loss trains


@pytest.mark.slow
@pytest.mark.parametrize("loss", [name for name, _ in LOSSES.items()])
def test_every_loss_trains_an_epoch(cli, write_config, small_npz, tmp_path, loss):
    config = tiny_config(small_npz, loss=loss, model={"type": "mlp", "hidden_units": [8]})
    result = cli("run", write_config(config), "--run-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    (row,) = history(tmp_path / "r")
    assert math.isfinite(float(row["loss"]))
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["loss"]["name"] == loss


# --------------------------------------------------------------------------- custom code

CUSTOM_MODULE = '''
import json
import keras
from keras import ops


class CrossEntropy(keras.losses.Loss):
    def call(self, y_true, y_pred):
        y_pred = y_pred / ops.sum(y_pred, axis=-1, keepdims=True)
        y_pred = ops.clip(y_pred, keras.backend.epsilon(), 1.0 - keras.backend.epsilon())
        return -ops.sum(y_true * ops.log(y_pred), axis=-1)


def scaled_mse(scale=1.0):
    def scaled_mse_loss(y_true, y_pred):
        return scale * ops.mean(ops.square(y_true - y_pred), axis=-1)
    return scaled_mse_loss


class MeanTopProbability(keras.metrics.Mean):
    def __init__(self, name="mean_top_probability", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(ops.max(y_pred, axis=-1), sample_weight)


class EpochCounter(keras.callbacks.Callback):
    def __init__(self, filename="epochs-seen.json"):
        super().__init__()
        self.filename = filename
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch + 1)
        with open(self.filename, "w") as handle:
            json.dump(self.epochs, handle)
'''


def write_custom(tmp_path: Path, config: dict, module_name: str = "my_custom") -> Path:
    folder = tmp_path / "project"
    folder.mkdir(exist_ok=True)
    (folder / f"{module_name}.py").write_text(CUSTOM_MODULE)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.slow
def test_custom_loss_metric_callback_round_trip(cli, mnist_npz, tmp_path, subprocess_env, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the module is found beside the config, not in the working directory
    seen = tmp_path / "seen.json"
    config = tiny_config(
        mnist_npz,
        labels={"encoding": "onehot"},
        loss={"name": "my_custom:scaled_mse", "scale": 10.0},
        metrics=["accuracy", "my_custom:MeanTopProbability"],
        callbacks=[{"name": "my_custom:EpochCounter", "filename": str(seen)}],
        train={"epochs": 2, "batch_size": 32},
    )
    path = write_custom(tmp_path, config)
    result = cli("run", path, "--run-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert json.loads(seen.read_text()) == [1, 2]
    rows = history(tmp_path / "r")
    assert 0 < float(rows[-1]["mean_top_probability"]) <= 1
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    folder = str((tmp_path / "project").resolve())
    assert manifest["custom_objects"] == [
        {"ref": "my_custom:scaled_mse", "path": folder, "factory_params": {"scale": 10.0}},
        {"ref": "my_custom:MeanTopProbability", "path": folder},
    ]

    # Another process, another working directory, the run directory and the code folder the user names.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = textwrap.dedent(
        f"""
        import json, sys
        import keras, numpy as np
        from trainer.models.keras_objects import load_custom_objects
        run = {str(tmp_path / "r")!r}
        manifest = json.load(open(run + "/manifest.json"))
        model = keras.models.load_model(run + "/model.h5", custom_objects=load_custom_objects(manifest, [{folder!r}]))
        x = np.load({str(mnist_npz)!r})["x_test"][:16].astype("float32")[..., None]
        y = keras.ops.one_hot(np.load({str(mnist_npz)!r})["y_test"][:16], 10)
        print(json.dumps({{"loss": type(model.loss).__name__ if not callable(model.loss) else getattr(model.loss, "__name__", ""),
                          "metrics": model.evaluate(x, y, verbose=0, return_dict=True),
                          "sum": float(model.predict(x, verbose=0).sum())}}))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["sum"] == pytest.approx(16.0, rel=1e-4)  # softmax rows
    assert "mean_top_probability" in json.dumps(loaded["metrics"])


@pytest.mark.slow
def test_hand_written_cross_entropy_trains_to_builtin_weights(cli, mnist_npz, tmp_path):
    base = dict(labels={"encoding": "onehot"}, train={"epochs": 2, "batch_size": 32})
    builtin = write_custom(tmp_path, tiny_config(mnist_npz, loss="categorical_crossentropy", **base))
    assert cli("run", builtin, "--run-dir", tmp_path / "builtin").exit_code == 0
    custom = write_custom(tmp_path, tiny_config(mnist_npz, loss="my_custom:CrossEntropy", **base))
    result = cli("run", custom, "--run-dir", tmp_path / "custom")
    assert result.exit_code == 0, result.output
    from trainer.models.keras_objects import load_custom_objects

    manifest = json.loads((tmp_path / "custom" / "manifest.json").read_text())
    first = keras.models.load_model(tmp_path / "builtin" / "model.h5")
    second = keras.models.load_model(tmp_path / "custom" / "model.h5", custom_objects=load_custom_objects(manifest, [tmp_path / "project"]))
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert float(history(tmp_path / "custom")[-1]["loss"]) == pytest.approx(float(history(tmp_path / "builtin")[-1]["loss"]), rel=1e-4)


@pytest.mark.parametrize(
    "ref, expected",
    [
        ("nope_module:Thing", "module 'nope_module' not found"),
        ("my_custom:Missing", "has no attribute 'Missing'"),
        ("my_custom:json", "not a loss"),
    ],
)
def test_custom_reference_errors_say_which_part_failed(cli, small_npz, tmp_path, ref, expected):
    path = write_custom(tmp_path, tiny_config(small_npz, loss=ref, labels={"encoding": "onehot"}))
    result = cli("run", path, "--run-dir", tmp_path / "r")
    assert result.exit_code == 2 and expected in flat(result.output), (ref, result.output)
    assert not (tmp_path / "r").exists()


def test_a_custom_loss_needs_an_explicit_label_encoding(cli, small_npz, tmp_path):
    path = write_custom(tmp_path, tiny_config(small_npz, loss="my_custom:CrossEntropy"))
    result = cli("validate", path)
    assert result.exit_code == 2 and "explicit" in result.output and "labels.encoding" in result.output


# --------------------------------------------------------------------------- callbacks and fit settings


@pytest.mark.slow
def test_early_stopping_stops_and_history_shows_it(cli, small_npz, write_config, tmp_path):
    config = tiny_config(
        small_npz,
        train={"epochs": 10, "batch_size": 32},
        callbacks=[{"name": "early_stopping", "monitor": "loss", "min_delta": 100.0, "patience": 1, "restore_best_weights": True}],
    )
    result = cli("run", write_config(config), "--run-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert [int(r["epoch"]) for r in history(tmp_path / "r")] == [1, 2]  # no epoch improves the loss by 100
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["epochs_completed"] == 2


@pytest.mark.slow
def test_file_callbacks_write_inside_run_dir_and_schedule(cli, small_npz, write_config, tmp_path):
    config = tiny_config(
        small_npz,
        optimizer={"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True, "clipnorm": 1.0},
        train={"epochs": 3, "batch_size": 32, "class_weight": "balanced"},
        callbacks=[
            {"name": "learning_rate_scheduler", "schedule": "step", "factor": 0.5, "every": 1},
            {"name": "model_checkpoint", "monitor": "val_accuracy", "mode": "max"},
            "csv_logger", "json_log", "terminate_on_nan",
            {"name": "reduce_lr_on_plateau", "patience": 5},
        ],
    )
    result = cli("run", write_config(config), "--run-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    run = tmp_path / "r"
    assert [round(float(r["learning_rate"]), 6) for r in history(run)] == [0.1, 0.05, 0.025]
    assert keras.models.load_model(run / "best_model.h5").count_params() > 0
    assert len(list(csv.DictReader(open(run / "epochs.csv")))) == 3
    lines = [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3] and "val_loss" in lines[0]


def test_tensorboard_without_its_package_is_refused_before_any_data_is_read(cli, small_npz, write_config, tmp_path, monkeypatch):
    """Where tensorboard is not installed: exit 2 with the fix, no run directory. (Installed, the event files and their
    scalars are tests/integrations/test_tensorboard.py's.)"""
    monkeypatch.setattr("trainer.catalogue.callbacks.tensorboard_installed", lambda: False)
    result = cli("run", write_config(tiny_config(small_npz, callbacks=["tensorboard"])), "--run-dir", tmp_path / "r")
    assert result.exit_code == 2, result.output
    assert "callbacks.0: the tensorboard callback needs the 'tensorboard' package" in flat(result.output)
    assert "pip install tensorboard" in flat(result.output)
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_compile_and_fit_settings(cli, small_npz, write_config, tmp_path):
    weights = np.where(np.load(small_npz)["y_train"] == 0, 0.0, 1.0)
    np.save(tmp_path / "w.npy", weights)
    config = tiny_config(
        small_npz,
        optimizer={"name": "adam", "learning_rate": {"name": "exponential_decay", "initial_learning_rate": 0.01, "decay_steps": 2, "decay_rate": 0.5}},
        metrics=["accuracy", {"name": "top_k_accuracy", "k": 3}, "precision", "recall", "auc", "f1_score", "mae", "mse"],
        compile={"loss_weights": 0.5, "weighted_metrics": ["accuracy"], "steps_per_execution": 2, "jit_compile": False, "run_eagerly": False},
        train={"epochs": 3, "batch_size": 16, "sample_weights": str(tmp_path / "w.npy"), "steps_per_epoch": 2,
               "validation_steps": 1, "initial_epoch": 1},
    )
    result = cli("run", write_config(config), "--run-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    rows = history(tmp_path / "r")
    assert [int(r["epoch"]) for r in rows] == [2, 3]  # initial_epoch: 1
    assert {"top_3_accuracy", "precision", "recall", "auc", "f1_score", "mean_absolute_error", "weighted_accuracy"} <= set(rows[0])
    assert float(rows[-1]["learning_rate"]) == pytest.approx(0.01 * 0.5 ** (4 / 2), rel=1e-4)  # 4 steps taken

    bad = write_mnist_npz(tmp_path / "x.npz", n_train=8, n_test=4)
    np.save(tmp_path / "short.npy", np.ones(3))
    short = tiny_config(bad, train={"epochs": 1, "sample_weights": str(tmp_path / "short.npy")})
    result = cli("run", write_config(short, "short.yaml"), "--run-dir", tmp_path / "s")
    assert result.exit_code == 2 and "shape (8,)" in result.output


def test_keras2_fit_settings_get_a_clear_message(cli, small_npz, write_config):
    config = tiny_config(small_npz, train={"epochs": 1, "workers": 4, "use_multiprocessing": True})
    result = cli("validate", write_config(config))
    assert result.exit_code == 2
    assert "Keras 3 removed" in result.output and "workers" in result.output and "unknown key" not in result.output


# --------------------------------------------------------------------------- regularization


@pytest.mark.slow
def test_regularizers_and_constraints_are_on_saved_layers(cli, small_npz, write_config, tmp_path):
    model = {
        "type": "mlp", "hidden_units": [8],
        "kernel_regularizer": {"l2": 0.01}, "bias_regularizer": {"l1": 0.001},
        "activity_regularizer": {"l1_l2": [0.001, 0.002]},
        "kernel_constraint": {"name": "max_norm", "max_value": 2.0},
    }
    result = cli("run", write_config(tiny_config(small_npz, model=model)), "--run-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    saved = keras.models.load_model(tmp_path / "r" / "model.h5")
    for name in ("dense_1", "classes"):
        config = saved.get_layer(name).get_config()
        assert config["kernel_regularizer"]["config"]["l2"] == pytest.approx(0.01)
        assert config["bias_regularizer"]["config"]["l1"] == pytest.approx(0.001)
        assert config["activity_regularizer"]["config"] == pytest.approx({"l1": 0.001, "l2": 0.002})
        assert config["kernel_constraint"]["class_name"] == "MaxNorm"
        assert config["kernel_constraint"]["config"]["max_value"] == pytest.approx(2.0)
        kernel = saved.get_layer(name).get_weights()[0]
        assert np.sqrt((kernel ** 2).sum(axis=0)).max() <= 2.0 + 1e-5


def test_dense_kwargs_of_a_config_without_the_keys():
    from trainer.catalogue.regularizers import dense_kwargs

    assert dense_kwargs(object()) == {
        "kernel_regularizer": None, "bias_regularizer": None, "activity_regularizer": None, "kernel_constraint": None,
    }


# --------------------------------------------------------------------------- refusals and discoverability


@pytest.mark.parametrize(
    "section, expected",
    [
        ({"loss": "categorical_crossentropyy"}, "did you mean 'categorical_crossentropy'"),
        ({"loss": {"name": "huber", "delt": 1.0}, "labels": {"encoding": "onehot"}}, "did you mean 'delta'"),
        ({"metrics": ["acuracy"]}, "did you mean 'accuracy'"),
        ({"metrics": [{"name": "top_k_accuracy", "kk": 3}]}, "it takes: k, dtype"),
        ({"optimizer": "adamm"}, "did you mean 'adam'"),
        ({"optimizer": {"name": "sgd", "momentun": 0.9}}, "did you mean 'momentum'"),
        ({"optimizer": {"name": "adam", "learning_rate": {"name": "cosine_decai", "initial_learning_rate": 0.1, "decay_steps": 5}}}, "did you mean 'cosine_decay'"),
        ({"callbacks": ["early_stoping"]}, "did you mean 'early_stopping'"),
        ({"callbacks": [{"name": "early_stopping", "patiense": 2}]}, "did you mean 'patience'"),
        ({"callbacks": [{"name": "learning_rate_scheduler", "schedule": "stepp"}]}, "did you mean 'step'"),
    ],
)
def test_unknown_names_and_parameters_are_refused_before_data(cli, write_config, tmp_path, section, expected):
    config = tiny_config(str(tmp_path / "no-such-data.npz"), **section)  # data is never read
    result = cli("run", write_config(config), "--run-dir", tmp_path / "r")
    assert result.exit_code == 2, result.output
    assert expected in flat(result.output), result.output
    assert "no-such-data" not in result.output and not (tmp_path / "r").exists()


def test_unknown_loss_parameter_lists_the_valid_ones_without_tensorflow(write_config, subprocess_env):
    config = write_config(tiny_config(None, loss={"name": "huber", "gama": 2}, labels={"encoding": "onehot"}))
    script = (
        "import sys\nfrom trainer.cli import app\n"
        f"try:\n    app([\"validate\", {str(config)!r}])\nexcept SystemExit as e:\n    code = e.code\n"
        "print('TF', 'tensorflow' in sys.modules, 'CODE', code)"
    )
    done = subprocess.run([sys.executable, "-c", script], env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert "TF False CODE 2" in done.stdout, done.stdout + done.stderr
    assert "it takes: delta, reduction, name" in flat(done.stderr)


@pytest.mark.parametrize("catalogue, names", [
    ("losses", ["kl_divergence", "kld", "from_logits=False", "delta=1.0"]),
    ("metrics", ["top_k_accuracy", "f1_score", "average='macro'"]),
    ("optimizers", ["nadam", "exponential_decay", "clipnorm=None"]),
    ("callbacks", ["model_checkpoint", "best_model.h5", "json_log"]),
])
def test_list_catalogues(cli, catalogue, names):
    result = cli("list", catalogue)
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    for name in names:
        assert name in text, name


def test_list_unknown_catalogue(cli):
    result = cli("list", "lossses")
    assert result.exit_code == 2 and "did you mean 'losses'" in result.output


def test_the_example_configs_are_there():
    assert {"mnist_focal.yaml", "mnist_early_stopping.yaml", "mnist_custom_loss.yaml"} <= {f.name for f in CONFIGS.glob("*.yaml")}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_validates(cli, path):
    result = cli("validate", path)
    assert result.exit_code == 0, (path, result.output)


@pytest.mark.slow
def test_custom_loss_example_config_runs(cli, small_npz, tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    shutil.copy(CONFIGS / "my_losses.py", folder)
    config = yaml.safe_load((CONFIGS / "mnist_custom_loss.yaml").read_text())
    config["data"]["path"] = str(small_npz)
    config["train"]["epochs"] = 1
    config["model"]["hidden_units"] = [8]
    (folder / "mnist_custom_loss.yaml").write_text(yaml.safe_dump(config))
    result = cli("run", folder / "mnist_custom_loss.yaml", "--run-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["custom_objects"][0]["ref"] == "my_losses:FocalLoss"
