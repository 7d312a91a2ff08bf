"""Test-time augmentation: the views, the averaging (hand-computed), ``evaluate.tta``, ``--tta`` on eval and predict."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import run_cli, tiny_config
from tests.datagen import write_mnist_npz
from trainer.errors import ConfigError
from trainer.inference.probabilities import TRANSLATE_PIXELS, translate, tta_probabilities, tta_scores, view_count, views


# --------------------------------------------------------------------------- the views, by hand


def row_image(values) -> np.ndarray:
    """One image of one row: shape (1, 1, W, 1)."""
    return np.asarray(values, dtype=np.float32).reshape(1, 1, -1, 1)


def test_flip_is_the_identity_and_the_mirror():
    image = row_image([0, 1, 2, 3, 4])
    plain, mirrored = views(image, "flip")
    assert plain.ravel().tolist() == [0, 1, 2, 3, 4]
    assert mirrored.ravel().tolist() == [4, 3, 2, 1, 0]
    assert views(image, "none")[0].ravel().tolist() == [0, 1, 2, 3, 4]


def test_translation_fills_the_border_by_reflection():
    image = np.arange(25, dtype=np.float32).reshape(1, 5, 5, 1)  # rows 0-4, 5-9, ...
    right = translate(image, 0, 2)[0, :, :, 0]
    assert right[0].tolist() == [2, 1, 0, 1, 2]  # moved 2 right: the left border mirrors the first columns
    left = translate(image, 0, -2)[0, :, :, 0]
    assert left[0].tolist() == [2, 3, 4, 3, 2]
    down = translate(image, 2, 0)[0, :, :, 0]
    assert down[:, 0].tolist() == [10, 5, 0, 5, 10]
    assert translate(image, 0, 0) is image


def test_flip_translate_is_six_views_of_the_same_shape():
    image = np.random.default_rng(0).integers(0, 255, (3, 8, 8, 2)).astype(np.float32)
    shown = views(image, "flip_translate")
    assert len(shown) == view_count("flip_translate") == 6 and view_count("flip") == 2 and view_count("none") == 1
    assert all(v.shape == image.shape for v in shown)
    shift = TRANSLATE_PIXELS
    np.testing.assert_array_equal(shown[1][:, shift:, shift:], image[:, :-shift, :-shift])  # down-right
    np.testing.assert_array_equal(shown[2][:, :-shift, :-shift], image[:, shift:, shift:])  # up-left
    np.testing.assert_array_equal(shown[3], image[:, :, ::-1])


@pytest.mark.parametrize("mode", ["flipp", "", "FLIP", None, 1])
def test_an_unknown_mode_is_refused_with_the_choices(mode):
    with pytest.raises(ConfigError) as raised:
        views(row_image([1, 2]), mode)
    assert "none" in raised.value.message and "flip_translate" in raised.value.message


# --------------------------------------------------------------------------- the averaging, by hand


class LeftRightModel:
    """Knows one thing: whether the left pixel of a 1x2 image is brighter than the right one."""

    def __init__(self, outputs_if_left: list[float], outputs_if_right: list[float]):
        self.left, self.right = outputs_if_left, outputs_if_right
        self.calls = 0

    def predict(self, images, batch_size=256, verbose=0):
        self.calls += 1
        images = np.asarray(images)
        return np.asarray([self.left if image[0, 0, 0] > image[0, 1, 0] else self.right for image in images], dtype=np.float32)


def test_flip_averages_the_probabilities_of_the_image_and_its_mirror():
    model = LeftRightModel([0.9, 0.1], [0.2, 0.8])
    images = row_image([5, 1])  # left brighter; its mirror is right brighter
    probs = tta_probabilities(model, images, "softmax", "flip")
    np.testing.assert_allclose(probs, [[(0.9 + 0.2) / 2, (0.1 + 0.8) / 2]], atol=1e-7)
    np.testing.assert_allclose(tta_probabilities(model, images, "softmax", "none"), [[0.9, 0.1]], atol=1e-7)


def test_logits_are_turned_into_probabilities_before_they_are_averaged():
    model = LeftRightModel([2.0, 0.0], [0.0, 0.0])
    probs = tta_probabilities(model, row_image([5, 1]), "logits", "flip")
    softmax_of_left = np.exp([2.0, 0.0]) / np.exp([2.0, 0.0]).sum()  # [0.8808, 0.1192]
    expected = (softmax_of_left + np.array([0.5, 0.5])) / 2  # [0.6904, 0.3096]; averaging logits would give [0.731, 0.269]
    np.testing.assert_allclose(probs[0], expected, atol=1e-6)


def test_scores_are_the_accuracy_and_cross_entropy_of_the_averages():
    model = LeftRightModel([0.9, 0.1], [0.2, 0.8])
    images = np.concatenate([row_image([5, 1]), row_image([1, 5]), row_image([5, 1])])
    labels = np.array([0, 0, 1])
    # mirror pairs average to [0.55, 0.45] for every image (each is seen both ways)
    scores = tta_scores(model, images, labels, "softmax", "flip")
    assert scores["mode"] == "flip" and scores["views"] == 2 and scores["examples"] == 3
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert scores["loss"] == pytest.approx(-(2 * np.log(0.55) + np.log(0.45)) / 3, rel=1e-6)


def test_large_inputs_are_averaged_chunk_by_chunk(monkeypatch):
    import trainer.inference.probabilities as tta

    monkeypatch.setattr(tta, "CHUNK", 2)
    model = LeftRightModel([1.0, 0.0], [0.0, 1.0])
    images = np.concatenate([row_image([5, 1])] * 5)
    probs = tta_probabilities(model, images, "softmax", "flip")
    assert probs.shape == (5, 2) and model.calls == 3 * 2  # three chunks, two views each
    np.testing.assert_allclose(probs, 0.5)


# --------------------------------------------------------------------------- refusals (no TensorFlow needed)


def test_the_config_key_is_validated(write_config, mnist_npz, cli):
    result = cli("validate", write_config(tiny_config(mnist_npz, evaluate={"tta": "mirror"})))
    assert result.exit_code == 2 and "evaluate.tta" in result.text and "flip_translate" in result.text
    assert "Traceback" not in result.output
    assert cli("validate", write_config(tiny_config(mnist_npz, evaluate={"tta": "flip"}))).exit_code == 0
    result = cli("validate", write_config(tiny_config(mnist_npz, evaluate={"views": 4})))
    assert result.exit_code == 2 and "evaluate" in result.text


@pytest.mark.parametrize("command", [["eval", "some-run", "--tta", "mirror"], ["predict", "some-run", "image.png", "--tta", "mirror"]])
def test_an_unknown_tta_option_is_refused_first(cli, command, tmp_path):
    result = cli(*command)
    assert result.exit_code == 2, result.output
    assert "--tta: unknown value 'mirror'" in result.text and "flip_translate" in result.text
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- a trained run


@pytest.fixture(scope="module")
def flip_run(tmp_path_factory) -> tuple[Path, Path]:
    """A run trained with evaluate.tta: flip (and its data)."""
    root = tmp_path_factory.mktemp("tta")
    data = write_mnist_npz(root / "mnist.npz", n_train=256, n_test=64, seed=0)
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data, train={"epochs": 2}, evaluate={"tta": "flip"})))
    result = run_cli("run", config, "--run-dir", root / "run")
    assert result.exit_code == 0, result.unwrapped
    assert "test tta (flip) accuracy" in result.text
    return root / "run", data


def averaged_by_hand(run_dir: Path, x: np.ndarray, shifts: list[tuple[int, int]] = ((0, 0),)) -> np.ndarray:
    """Probabilities over the image and its mirror (and ``shifts`` of both), computed here with Keras and NumPy."""
    import keras

    model = keras.models.load_model(run_dir / "model.h5")
    images = x.astype("float32").reshape(-1, 28, 28, 1)
    outputs = []
    for base in (images, images[:, :, ::-1]):
        for dy, dx in shifts:
            padded = np.pad(base, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
            shifted = padded[:, 2 - dy: 30 - dy, 2 - dx: 30 - dx]
            outputs.append(model.predict(shifted, verbose=0).astype(np.float64))
    return np.mean(outputs, axis=0)


@pytest.mark.slow
def test_the_run_records_plain_and_tta_test_metrics(flip_run):
    run_dir, data = flip_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"loss", "accuracy"}  # the plain numbers stay
    tta = metrics["test_tta"]
    assert tta["mode"] == "flip" and tta["views"] == 2 and tta["examples"] == 64
    x, y = np.load(data)["x_test"], np.load(data)["y_test"]
    probs = averaged_by_hand(run_dir, x)
    assert tta["accuracy"] == pytest.approx(float(np.mean(probs.argmax(1) == y)), abs=1e-12)
    assert tta["loss"] == pytest.approx(float(-np.mean(np.log(np.clip(probs[np.arange(64), y], 1e-7, 1)))), rel=1e-4)
    predicted = probs.argmax(1)
    recalls = [float(np.mean(predicted[y == c] == c)) for c in np.unique(y)]
    assert tta["balanced_accuracy"] == pytest.approx(float(np.mean(recalls)), abs=1e-9)  # the averaged views' figures too
    assert {"macro_f1", "weighted_f1", "macro_precision", "macro_recall"} <= set(tta)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["evaluate"] == {"tta": "flip"}


@pytest.mark.slow
def test_eval_adds_tta_from_the_config_or_the_option(flip_run, tmp_path):
    run_dir, data = flip_run
    recorded = json.loads((run_dir / "metrics.json").read_text())["test_tta"]
    result = run_cli("eval", run_dir, "--output", tmp_path / "default.json")
    assert result.exit_code == 0, result.unwrapped
    assert "tta (flip, 2 views) accuracy" in result.text
    report = json.loads((tmp_path / "default.json").read_text())
    assert report["tta"]["accuracy"] == pytest.approx(recorded["accuracy"]) and report["tta"]["loss"] == pytest.approx(recorded["loss"], rel=1e-5)

    result = run_cli("eval", run_dir, "--tta", "flip_translate", "--output", tmp_path / "six.json")
    assert result.exit_code == 0, result.unwrapped
    six = json.loads((tmp_path / "six.json").read_text())["tta"]
    x, y = np.load(data)["x_test"], np.load(data)["y_test"]
    probs = averaged_by_hand(run_dir, x, [(0, 0), (2, 2), (-2, -2)])
    assert six["views"] == 6 and six["accuracy"] == pytest.approx(float(np.mean(probs.argmax(1) == y)), abs=1e-12)

    assert run_cli("eval", run_dir, "--tta", "none", "--output", tmp_path / "plain.json").exit_code == 0
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert "tta" not in plain and plain["accuracy"] == report["accuracy"]


@pytest.mark.slow
def test_predict_with_tta_averages_over_the_views(flip_run, tmp_path):
    import trainer

    run_dir, data = flip_run
    x = np.load(data)["x_test"][:5]
    np.save(tmp_path / "five.npy", x)
    result = run_cli("predict", run_dir, tmp_path / "five.npy", "--tta", "flip", "--output", tmp_path / "p.json", "--top-k", "10")
    assert result.exit_code == 0, result.unwrapped
    records = json.loads((tmp_path / "p.json").read_text())
    probs = averaged_by_hand(run_dir, x)
    for record, row in zip(records, probs):
        assert record["predicted"] == int(row.argmax())
        for entry in record["top_k"]:
            assert entry["probability"] == pytest.approx(row[entry["class"]], abs=1e-6)
    plain = trainer.api.predict(run_dir, x, top_k=1)  # predict's default is the plain model, even for a run with evaluate.tta
    assert [r["probability"] for r in plain] != pytest.approx([r["probability"] for r in records])
    same = trainer.api.predict(run_dir, x, top_k=1, tta="flip")
    assert [r["probability"] for r in same] == pytest.approx([r["top_k"][0]["probability"] for r in records], abs=1e-6)
    with pytest.raises(ConfigError):
        trainer.api.predict(run_dir, x, tta="sideways")


def test_large_images_are_averaged_in_smaller_chunks(monkeypatch):
    import trainer.inference.probabilities as tta

    monkeypatch.setattr(tta, "CHUNK_BYTES", 2 * 4 * 2)  # two 1x2x1 float32 images per chunk
    model = LeftRightModel([1.0, 0.0], [0.0, 1.0])
    probs = tta_probabilities(model, np.concatenate([row_image([5, 1])] * 5), "softmax", "flip")
    assert probs.shape == (5, 2) and model.calls == 3 * 2


@pytest.mark.slow
def test_a_run_compiled_with_many_steps_per_call_predicts_every_batch_before_and_after_the_one_batch_calls():
    """probabilities() predicts one batch per compiled call, then restores steps_per_execution and drops that predict
    function: a later plain ``predict`` (batches grouped by the restored setting) still returns every row, the same ones."""
    import keras

    from trainer.inference.probabilities import probabilities

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", steps_per_execution=4)
    images = np.random.default_rng(0).normal(size=(37, 4)).astype("float32")  # 10 batches of 4, the last one short
    plain = probabilities(model, images, "softmax", batch_size=4)
    assert plain.shape == (37, 3) and model.steps_per_execution == 4 and model.predict_function is None
    after = model.predict(images, batch_size=4, verbose=0)
    np.testing.assert_allclose(after, plain, rtol=1e-6, atol=1e-7)
    built = model.predict_function
    np.testing.assert_allclose(probabilities(model, images, "softmax", batch_size=4), plain, rtol=1e-6, atol=1e-7)
    assert model.predict_function is built  # a predict function already built is used as it is
