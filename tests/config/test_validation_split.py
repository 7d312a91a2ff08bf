"""The test split is for testing: data.validation fractions (stratified, seeded, recorded), validation: test's notice, the sweep's refusal."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import tiny_config
from trainer.config import load_config
from trainer.data.loaders import load_data
from trainer.data.selection import split_stratified
from trainer.errors import DataError

ON_TEST = "the model is selected on the test set"


def write_npz(path: Path, y_train, n_test: int = 20) -> Path:
    y_train = np.asarray(y_train, dtype=np.uint8)
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, size=(len(y_train), 8, 8), dtype=np.uint8)
    x_train[:, 0, 0] = np.arange(len(y_train)) % 256  # each row recognisable
    np.savez(path, x_train=x_train, y_train=y_train, x_test=rng.integers(0, 256, size=(n_test, 8, 8), dtype=np.uint8),
             y_test=(np.arange(n_test) % 10).astype(np.uint8))
    return path


def data_config(path: Path, validation, seed_unused=None):
    return load_config(None, [], base=tiny_config(path, data={"validation": validation})).data


# a file ordered by class: Keras's validation_split (the last examples) would validate on class 9 alone
ORDERED = np.repeat(np.arange(10), 20)


def test_a_fraction_is_stratified_by_class_on_an_array_file(tmp_path):
    data = load_data(data_config(write_npz(tmp_path / "m.npz", ORDERED), 0.2), seed=3)
    assert len(data.y_val) == 40 and len(data.y_train) == 160
    assert np.bincount(data.y_val, minlength=10).tolist() == [4] * 10
    assert any("stratified by class (seed 3)" in text for text in data.notices)
    assert not any(ON_TEST in text for text in data.notices)
    # train_rows: the rows of the file that train (sample weights follow them)
    assert sorted(data.train_rows.tolist() + [i for i in range(200) if i not in set(data.train_rows.tolist())]) == list(range(200))
    assert data.validation_split["validation"] == 40 and data.validation_split["seed"] == 3 and len(data.validation_split["digest"]) == 64


def test_the_same_seed_gives_the_same_split_and_another_seed_another(tmp_path):
    path = write_npz(tmp_path / "m.npz", ORDERED)
    first, again, other = (load_data(data_config(path, 0.2), seed=s) for s in (3, 3, 4))
    assert first.validation_split == again.validation_split
    assert np.array_equal(first.x_val, again.x_val)
    assert first.validation_split["digest"] != other.validation_split["digest"]


def test_a_class_of_one_example_stays_in_training(tmp_path):
    labels = [0] * 30 + [1] * 30 + [2]  # class 2 has one example
    data = load_data(data_config(write_npz(tmp_path / "m.npz", labels), 0.5), seed=0)
    assert 2 in data.y_train.tolist() and 2 not in data.y_val.tolist()


@pytest.mark.parametrize("labels, fraction", [([0, 1], 0.1), ([0, 0, 1, 1], 0.01), ([0, 1, 2, 3], 0.5)])
def test_a_fraction_that_leaves_a_side_empty_is_one_clear_error(labels, fraction, tmp_path):
    with pytest.raises(DataError, match="data.validation: a fraction of .* both need at least one"):
        load_data(data_config(write_npz(tmp_path / "m.npz", labels), fraction), seed=0)


def test_validation_test_says_the_model_is_selected_on_the_test_set(tmp_path):
    data = load_data(data_config(write_npz(tmp_path / "m.npz", ORDERED), "test"), seed=0)
    assert data.x_val is data.x_test
    assert any(ON_TEST in text and "data.validation: 0.1" in text for text in data.notices)


@pytest.mark.parametrize("value", ["0", "1", "1.0", ".nan", "-0.1", "Test", "true", "[0.1]"])
def test_bad_validation_values_are_refused_with_exit_2(value, cli, write_config):
    result = cli("validate", write_config(tiny_config(None)), "--set", f"data.validation={value}")
    assert result.exit_code == 2, result.output
    assert "data.validation" in result.unwrapped and "Traceback" not in result.output


def test_split_stratified_keeps_every_class_in_proportion():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    held = split_stratified(labels, 0.1, (1, 1))
    assert np.bincount(labels[held.chosen], minlength=3).tolist() == [5, 3, 2]
    assert len(np.intersect1d(held.chosen, held.rest)) == 0 and len(held.chosen) + len(held.rest) == 100


def test_sample_weights_follow_the_stratified_split(tmp_path):
    from trainer.run.fit_settings import load_sample_weights

    path = write_npz(tmp_path / "m.npz", ORDERED)
    np.save(tmp_path / "w.npy", np.arange(200, dtype=np.float32))
    config = load_config(None, [], base=tiny_config(path, data={"validation": 0.2}, train={"sample_weights": str(tmp_path / "w.npy")}))
    data = load_data(config.data, seed=0)
    weights = load_sample_weights(config, len(data.x_train), len(data.x_val), data.train_rows)
    assert weights.tolist() == data.train_rows.astype(np.float32).tolist()  # weight i belongs to row i of the file


def test_eval_refuses_a_validation_split_other_than_the_runs():
    from trainer.inference.evaluate import check_same_validation_split

    recorded = {"fraction": 0.1, "seed": 1, "validation": 20, "train": 180, "digest": "a" * 64}
    run = SimpleNamespace(manifest=SimpleNamespace(validation_split=recorded))
    check_same_validation_split(run, SimpleNamespace(validation_split=dict(recorded)), "validation")
    check_same_validation_split(run, SimpleNamespace(validation_split=None), "test")  # other splits are not compared
    with pytest.raises(DataError, match="the run held out data.validation 0.1 with seed 1"):
        check_same_validation_split(run, SimpleNamespace(validation_split={**recorded, "seed": 2, "digest": "b" * 64}), "validation")


# --------------------------------------------------------------------------- sweep


SPACE = {"optimizer.learning_rate": {"float": [0.001, 0.01]}}


@pytest.mark.parametrize(
    "validation, metric, code",
    [("test", None, 2), ("test", "val_loss", 2), (0.2, None, 0), ("test", "accuracy", 0), ("none", "loss", 0)],
)
def test_a_sweep_refuses_to_optimise_on_the_test_split(validation, metric, code, cli, write_config):
    sweep = {"space": SPACE, **({"metric": metric} if metric else {})}
    result = cli("validate", write_config(tiny_config(None, data={"validation": validation}, sweep=sweep)))
    assert result.exit_code == code, result.output
    if code:
        assert "is measured on the test split" in result.unwrapped and "data.validation: 0.1" in result.unwrapped
        assert len(result.output.strip().splitlines()) <= 3


def test_a_folder_with_a_validation_folder_may_sweep_on_it(cli, write_config, tmp_path):
    from tests.datagen import write_image_folders

    root = write_image_folders(tmp_path / "images", splits=("train", "validation", "test"))
    config = tiny_config(None, data={"dataset": "folder", "path": str(root), "validation": "test"}, sweep={"space": SPACE})
    result = cli("validate", write_config(config))
    assert result.exit_code == 0 and "is measured on the test split" not in result.unwrapped, result.output
