"""Inputs converted on the way say so: predict's colour/size conversions, one-hot labels read as class indices."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from trainer.inference.predict import load_inputs


@pytest.fixture
def pictures(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 48, 3), dtype=np.uint8)).save(folder / "cat.png")
    Image.fromarray(np.full((28, 28), 100, np.uint8)).save(folder / "digit.png")
    Image.fromarray(np.full((28, 28, 3), 100, np.uint8)).save(folder / "grey-as-rgb.png")  # colour mode, grey pixels
    return folder


def test_a_colour_photo_given_to_a_greyscale_model_is_named_once(pictures):
    notices = load_inputs([pictures], (28, 28, 1)).notices
    assert len(notices) == 1
    assert "1 of 3 images colour to greyscale" in notices[0] and "1 of 3 images resized to 28x28" in notices[0]


def test_inputs_that_already_fit_get_no_notice(pictures):
    assert load_inputs([pictures / "digit.png", pictures / "grey-as-rgb.png"], (28, 28, 1)).notices == []


def test_greyscale_inputs_to_a_colour_model_are_named(pictures):
    (notice,) = load_inputs([pictures], (32, 32, 3)).notices
    assert "2 of 3 images greyscale to colour" in notice and "3 of 3 images resized to 32x32" in notice


def test_one_hot_labels_in_an_npz_are_read_as_class_indices_with_a_notice(tmp_path):
    from trainer.config.schema import DataConfig
    from trainer.data.loaders import load_data

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 40)
    np.savez(tmp_path / "mnist.npz", x_train=rng.integers(0, 255, (40, 28, 28), dtype=np.uint8), y_train=np.eye(10)[labels],
             x_test=rng.integers(0, 255, (10, 28, 28), dtype=np.uint8), y_test=np.eye(10)[labels[:10]])
    data = load_data(DataConfig(dataset="mnist", path=str(tmp_path / "mnist.npz"), validation="test"))
    assert np.array_equal(data.y_train, labels)
    assert any("one-hot rows (40 x 10)" in text and "class indices 0..9" in text for text in data.notices)


@pytest.mark.slow
def test_the_predict_command_prints_the_conversion_notice(cli, pictures, tmp_path):
    """Through the CLI, with a model file: the notice reaches the user once."""
    pytest.importorskip("keras")
    import keras

    inputs = keras.Input((28, 28, 1))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs)))
    model.save(tmp_path / "model.h5")
    import yaml

    from tests.conftest import tiny_config

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tiny_config(None)))
    result = cli("predict", tmp_path / "model.h5", pictures, "--config", tmp_path / "config.yaml")
    assert result.exit_code == 0, result.output
    assert result.text.count("converted to what the model takes") == 1
