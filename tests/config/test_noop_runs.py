"""Settings that would make a run train nothing (and still say ``completed``) are refused before training.

Each case: exit 2, one message naming the key (and the file), what was found and what is
allowed, no traceback, and no run directory left behind. The config-only cases are refused by
``trainer validate`` too (no TensorFlow).
"""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import tiny_config


def refused(result, *expected: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for part in expected:
        assert part in result.text, (part, result.text)


def _weights(tmp_path, values) -> str:
    path = tmp_path / "w.npy"
    np.save(path, np.asarray(values))
    return str(path)


# --------------------------------------------------------------------------- train.sample_weights (the case)


def _weight_only_on_held_out(npz, fraction: float, seed: int) -> np.ndarray:
    """Weights 1 on the examples data.validation: FRACTION holds out (stratified, as the run splits) and 0 on the rest."""
    from trainer.data.loaders import VALIDATION_STREAM
    from trainer.data.selection import split_stratified

    labels = np.load(npz)["y_train"]
    weights = np.zeros(len(labels))
    weights[split_stratified(labels, fraction, (seed, VALIDATION_STREAM)).chosen] = 1.0
    return weights


@pytest.mark.parametrize(
    "case, expected",
    [
        ("zeros", ["train.sample_weights:", "w.npy", "all 256 training examples weight 0", "at least one > 0"]),
        ("negative", ["train.sample_weights:", "w.npy", "1 negative (the smallest -1)", "finite number >= 0"]),
        ("nan", ["train.sample_weights:", "w.npy", "1 NaN", "finite number >= 0"]),
        ("inf", ["train.sample_weights:", "w.npy", "1 infinite", "finite number >= 0"]),
        ("complex", ["train.sample_weights:", "w.npy", "complex128 weights", "real number >= 0"]),
        # weight only on the examples data.validation: 0.25 takes away: the 192 that train weigh 0
        ("zero_where_trained", ["train.sample_weights:", "all 192 training examples weight 0"]),
    ],
)
def test_sample_weights_that_train_nothing_or_are_not_numbers_are_refused(cli, write_config, mnist_npz, tmp_path, case, expected):
    values = {
        "zeros": np.zeros(256),
        "negative": np.r_[np.ones(255), -1.0],
        "nan": np.r_[np.ones(255), np.nan],
        "inf": np.r_[np.ones(255), np.inf],
        "complex": np.ones(256, dtype=complex),
        "zero_where_trained": _weight_only_on_held_out(mnist_npz, 0.25, seed=1),
    }[case]
    data = {"validation": 0.25} if case == "zero_where_trained" else {}
    config = tiny_config(mnist_npz, data=data, train={"sample_weights": _weights(tmp_path, values)})
    refused(cli("run", write_config(config), "--run-dir", tmp_path / "never"), *expected)
    assert not (tmp_path / "never").exists()


def test_sample_weights_zero_only_on_validation_examples_are_fine():
    from trainer.config.checks import check_sample_weights

    check_sample_weights(np.r_[np.ones(3), np.zeros(5)], "w.npy")  # some weight somewhere: trains
    with pytest.raises(Exception, match="all 8 training examples weight 0"):  # the same check, nothing weighted: refused
        check_sample_weights(np.zeros(8), "w.npy")


def test_class_weights_that_zero_every_training_class_are_refused(cli, write_config, mnist_npz, tmp_path):
    config = tiny_config(mnist_npz, train={"class_weight": {c: 0.0 for c in range(10)}})
    refused(cli("run", write_config(config), "--run-dir", tmp_path / "never"), "train.class_weight:", "has weight 0", "weight > 0")
    assert not (tmp_path / "never").exists()


def test_class_weights_zero_on_a_class_the_data_lacks_only_still_train():
    from trainer.config.checks import check_class_weights

    check_class_weights({0: 0.0, 1: 1.0}, np.array([0, 0, 1]))  # class 1 weighs 1: trains
    with pytest.raises(Exception, match="every class of the training data"):
        check_class_weights({0: 0.0, 1: 0.0, 2: 5.0}, np.array([0, 1, 1]))  # class 2 has no example


# --------------------------------------------------------------------------- config-only: validate refuses them too


NO_OP_CONFIGS = {
    "loss_weights_zero": ({"compile": {"loss_weights": 0.0}}, ["compile.loss_weights: 0", "number > 0"]),
    "label_smoothing_one": (
        {"loss": {"name": "categorical_crossentropy", "label_smoothing": 1.0}, "labels": {"encoding": "onehot"}},
        ["loss.label_smoothing: 1.0", "below 1"],
    ),
    "exponential_decay_from_zero": (
        {"optimizer": {"name": "sgd", "learning_rate": {"name": "exponential_decay", "initial_learning_rate": 0.0, "decay_steps": 10, "decay_rate": 0.9}}},
        ["optimizer.learning_rate: exponential_decay with initial_learning_rate 0 is zero at every step"],
    ),
    "cosine_decay_from_zero": (
        {"optimizer": {"name": "sgd", "learning_rate": {"name": "cosine_decay", "initial_learning_rate": 0, "decay_steps": 10}}},
        ["optimizer.learning_rate: cosine_decay with initial_learning_rate 0"],
    ),
    "polynomial_decay_zero_to_zero": (
        {"optimizer": {"name": "sgd", "learning_rate": {"name": "polynomial_decay", "initial_learning_rate": 0, "decay_steps": 10, "end_learning_rate": 0}}},
        ["optimizer.learning_rate: polynomial_decay from initial_learning_rate 0 to end_learning_rate 0"],
    ),
    "piecewise_all_zero": (
        {"optimizer": {"name": "sgd", "learning_rate": {"name": "piecewise_constant_decay", "boundaries": [5], "values": [0.0, 0]}}},
        ["optimizer.learning_rate: piecewise_constant_decay with every value 0"],
    ),
    "mixup_batch_of_one": (
        {"train": {"epochs": 1, "batch_size": 1}, "data": {"augment": {"mixup": 0.2}}},
        ["train.batch_size: 1 with data.augment mixup", "never applies", "batch size of 2 or more"],
    ),
    # already refused by the schema or the parameter checks: kept here so the class stays closed
    "learning_rate_zero": ({"optimizer": {"name": "sgd", "learning_rate": 0.0}}, ["optimizer.learning_rate", "> 0"]),
    "initial_epoch_at_epochs": ({"train": {"epochs": 2, "initial_epoch": 2}}, ["initial_epoch (2) must be smaller than epochs (2)"]),
    "run_length_peak_zero": (
        {"optimizer": {"name": "sgd", "learning_rate": {"name": "one_cycle", "peak": 0.0}}}, ["optimizer.learning_rate", "peak"],
    ),
}


@pytest.mark.parametrize("case", list(NO_OP_CONFIGS))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_settings_that_train_nothing_are_refused_before_anything_runs(cli, write_config, mnist_npz, tmp_path, case, command):
    sections, expected = NO_OP_CONFIGS[case]
    config = tiny_config(mnist_npz, **sections)
    extra = ["--run-dir", tmp_path / "never"] if command == "run" else []
    refused(cli(command, write_config(config), *extra), *expected)
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize(
    "rate",
    [
        {"name": "cosine_decay", "initial_learning_rate": 0.0, "decay_steps": 10, "warmup_target": 0.1, "warmup_steps": 5},
        {"name": "polynomial_decay", "initial_learning_rate": 0.0, "decay_steps": 10},  # Keras's end_learning_rate: 1e-4
        {"name": "piecewise_constant_decay", "boundaries": [5], "values": [0.0, 0.1]},
        {"name": "exponential_decay", "initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.0},
        0.01,
    ],
)
def test_schedules_that_rise_from_zero_are_accepted(rate):
    from trainer.config.checks import zero_learning_rate

    assert zero_learning_rate(rate) is None


def test_several_no_op_settings_are_listed_at_once(cli, write_config, mnist_npz):
    config = tiny_config(mnist_npz, compile={"loss_weights": 0.0}, train={"epochs": 1, "batch_size": 1}, data={"augment": {"cutmix": 1.0}})
    refused(cli("validate", write_config(config)), "would train nothing", "compile.loss_weights: 0", "train.batch_size: 1 with data.augment cutmix")


def test_eval_of_a_finished_run_does_not_apply_the_training_checks():
    """A run directory's config is history: eval and predict plan it with ``training=False``."""
    from trainer.config.checks import plan_run
    from trainer.config.loading import load_config

    config = load_config(None, ["compile.loss_weights=0.0"])
    plan_run(config, training=False)
    with pytest.raises(Exception, match="compile.loss_weights"):
        plan_run(config)


# --------------------------------------------------------------------------- what needs the built model or the step count


def test_gradient_accumulation_beyond_the_run_never_updates_and_is_refused(cli, write_config, mnist_npz, tmp_path):
    # 256 examples / 32 = 8 steps per epoch, 1 epoch: 8 steps; accumulating 9 batches never reaches an update
    config = tiny_config(mnist_npz, optimizer={"name": "adam", "learning_rate": 0.01, "gradient_accumulation_steps": 9})
    refused(
        cli("run", write_config(config), "--run-dir", tmp_path / "never"),
        "optimizer.gradient_accumulation_steps: 9", "8 steps in all", "never be updated", "at most 8",
    )
    assert not (tmp_path / "never").exists()


def test_a_model_with_nothing_trainable_is_refused():
    import keras

    from trainer.config.checks import check_updates
    from trainer.config.loading import load_config
    from trainer.errors import ConfigError

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.trainable = False
    with pytest.raises(ConfigError, match="no trainable weights"):
        check_updates(model, load_config(None, []), 10)
    model.trainable = True
    check_updates(model, load_config(None, []), 10)


def test_a_validation_fraction_that_leaves_no_training_data_is_refused(cli, write_config, tmp_path):
    from tests.datagen import write_mnist_npz

    data = write_mnist_npz(tmp_path / "two.npz", n_train=2, n_test=4)
    refused(
        cli("run", write_config(tiny_config(data, data={"validation": 0.9})), "--run-dir", tmp_path / "never"),
        "data.validation: a fraction of 0.9 of 2 training examples", "both need at least one",
    )
    assert not (tmp_path / "never").exists()


# --------------------------------------------------------------------------- accepted, but never acting in this run: noticed


@pytest.mark.parametrize(
    "sections, expected",
    [
        ({"callbacks": [{"name": "early_stopping", "patience": 3}], "train": {"epochs": 3}}, "early_stopping patience 3"),
        ({"callbacks": [{"name": "reduce_lr_on_plateau", "patience": 5}], "train": {"epochs": 2}}, "can never lower the learning rate"),
        ({"callbacks": [{"name": "early_stopping", "start_from_epoch": 4}], "train": {"epochs": 4}}, "start_from_epoch 4"),
        ({"data": {"augment": {"flip": "none", "mixup": 0.0}}}, "data.augment: nothing is switched on"),
    ],
)
def test_settings_that_cannot_act_in_this_run_are_noticed(cli, write_config, mnist_npz, sections, expected):
    result = cli("validate", write_config(tiny_config(mnist_npz, **sections)))
    assert result.exit_code == 0, result.output
    assert expected in result.text


@pytest.mark.parametrize(
    "sections",
    [
        {"callbacks": [{"name": "early_stopping", "patience": 2}], "train": {"epochs": 3}},
        {"callbacks": [{"name": "early_stopping", "start_from_epoch": 2}], "train": {"epochs": 3}},
        {"data": {"augment": {"flip": "horizontal"}}},
    ],
)
def test_settings_that_can_act_get_no_notice(cli, write_config, mnist_npz, sections):
    result = cli("validate", write_config(tiny_config(mnist_npz, **sections)))
    assert result.exit_code == 0, result.output
    assert "never" not in result.text and "nothing is switched on" not in result.text
