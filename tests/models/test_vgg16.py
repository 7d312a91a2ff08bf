"""The vgg16_head model: weights files, frozen backbone, feature caching, folder datasets, refusals."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from PIL import Image

from tests.conftest import tiny_config
from tests.datagen import write_image_folders, write_mnist_npz
from trainer.config import load_config
from trainer.errors import ConfigError
from trainer.models import build_model, load_model
from trainer.models.vgg16_head import WEIGHTS_FILE, load_backbone_weights

REPO_ROOT = Path(__file__).resolve().parents[2]


def vgg_config(data_path, **sections):
    """A vgg16_head run small enough for a CPU test: random backbone, an 8-unit head, one epoch."""
    model = {"type": "vgg16_head", "weights": "none", "head": {"hidden_units": [8], "dropout": 0.0}}
    model.update(sections.pop("model", {}))
    config = tiny_config(data_path, **sections)
    config["model"] = model  # replace, not merge: tiny_config's model is an MLP
    return config


def folder_data(tmp_path, **kwargs):
    return write_image_folders(tmp_path / "images", **kwargs)


# --------------------------------------------------------------------------- weights files


def _reference_backbone(seed: int = 3):
    keras.utils.set_random_seed(seed)
    return keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))


def write_legacy_h5(model, path: Path) -> Path:
    """The Keras 2 / published no-top layout: ``layer_names`` at the top, a group per layer with ``weight_names``."""
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        for layer in model.layers:
            group = handle.create_group(layer.name)
            names = [f"{layer.name}_{'W' if i == 0 else 'b'}_1:0".encode() for i in range(len(layer.weights))]
            group.attrs["weight_names"] = names
            for name, weight in zip(names, layer.get_weights()):
                group.create_dataset(name.decode(), data=weight)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["legacy", "keras3"])
def test_weights_file_in_each_layout_loads_into_the_backbone(tmp_path, layout):
    reference = _reference_backbone()
    if layout == "legacy":
        path = write_legacy_h5(reference, tmp_path / WEIGHTS_FILE)
    else:
        path = tmp_path / "vgg16.weights.h5"
        reference.save_weights(path)
    config = load_config(None, ["model.type=vgg16_head", f"model.weights={path}", "model.head.hidden_units=[4]"])
    model = build_model(config.model, (32, 32, 3), 3)
    backbone = model.get_layer("features").get_layer("vgg16")
    for expected, loaded in zip(reference.weights, backbone.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(expected), keras.ops.convert_to_numpy(loaded))
    assert len(backbone.weights) == 26


def test_weights_file_that_is_not_vgg16_is_refused(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [b"dense"]
    with pytest.raises(ConfigError, match="model.weights.*block1_conv1"):
        load_backbone_weights(_reference_backbone(), path)
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(ConfigError, match="model.weights.*not an HDF5"):
        load_backbone_weights(_reference_backbone(), tmp_path / "text.h5")


def test_imagenet_download_failure_names_model_weights(cli, write_config, tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3] no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    npz = write_mnist_npz(tmp_path / "m.npz", n_train=20, n_test=10)
    config = write_config(vgg_config(npz, model={"weights": "imagenet"}))
    result = cli("run", config, "--run-dir", tmp_path / "r")
    assert result.exit_code == 2
    text = "".join(result.output.split())  # long paths are folded across lines
    assert "model.weights" in text and WEIGHTS_FILE in text and str(tmp_path / "kh" / "models") in text
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- frozen, cached, saved


@pytest.mark.slow
def test_saved_model_trains_only_the_head_and_loads_in_a_fresh_process(cli, write_config, tmp_path, subprocess_env):
    data = folder_data(tmp_path, n_per_class=4)
    config = write_config(vgg_config(data, data={"dataset": "folder", "path": str(data), "image_size": [32, 32]}))
    result = cli("run", config, "--run-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert "computed once" in result.output
    assert not (tmp_path / "r" / "features").exists()

    model = load_model(tmp_path / "r" / "model.h5")
    head = model.get_layer("head")
    assert {w.path for w in model.trainable_weights} == {w.path for w in head.trainable_weights}
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == (512 * 8 + 8) + (8 * 3 + 3)
    assert model.get_layer("features").trainable is False
    assert model.get_layer("features").get_layer("vgg16").trainable is False

    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["class_names"] == ["cat", "dog", "frog"] and manifest["num_classes"] == 3

    # test metrics came from cached features; the saved whole model on the test images agrees
    from trainer.data.folder import load_folder

    split = load_folder(data, (32, 32), "rgb")
    probabilities = model.predict(split.x_test.astype("float32"), verbose=0)
    loss = float(keras.losses.sparse_categorical_crossentropy(split.y_test, probabilities).numpy().mean())
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert loss == pytest.approx(metrics["test"]["loss"], rel=1e-4)
    assert float(np.mean(probabilities.argmax(1) == split.y_test)) == pytest.approx(metrics["test"]["accuracy"])

    script = (
        "import sys, numpy as np, trainer.models as m; model = m.load_model(sys.argv[1]); "
        "print(model.predict(np.zeros((1, 32, 32, 3), 'float32'), verbose=0).shape)"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "r" / "model.h5")], env=subprocess_env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "(1, 3)" in done.stdout


@pytest.mark.slow
def test_feature_caching_gives_the_same_head_as_training_through_the_backbone(cli, write_config, tmp_path):
    npz = write_mnist_npz(tmp_path / "m.npz", n_train=40, n_test=10)
    heads = {}
    for cache in (True, False):
        # XLA (on by default for the cached head) rounds differently and draws other dropout masks;
        # with it off, caching alone must give the same head, dropout included.
        config = vgg_config(
            npz, model={"head": {"hidden_units": [8], "dropout": 0.5}},
            train={"epochs": 2, "batch_size": 16, "cache_features": cache}, compile={"jit_compile": False},
        )
        run_dir = tmp_path / f"cache-{cache}"
        result = cli("run", write_config(config, f"c{cache}.yaml"), "--run-dir", run_dir)
        assert result.exit_code == 0, result.output
        assert ("computed once" in result.output) is cache
        assert "zero-padded from 28x28 to 32x32" in " ".join(result.output.split())
        heads[cache] = load_model(run_dir / "model.h5").get_layer("head").get_weights()
        heads[f"metrics-{cache}"] = json.loads((run_dir / "metrics.json").read_text())
    for cached, direct in zip(heads[True], heads[False]):
        np.testing.assert_allclose(cached, direct, rtol=1e-4, atol=1e-5)
    assert heads["metrics-True"]["test"]["loss"] == pytest.approx(heads["metrics-False"]["test"]["loss"], rel=1e-4)
    assert heads["metrics-True"]["validation"]["loss"] == pytest.approx(heads["metrics-False"]["validation"]["loss"], rel=1e-4)


def test_preprocessing_layer_matches_keras_preprocess_input():
    from trainer.models.layers import VGG16Preprocess

    x = np.random.default_rng(0).uniform(0, 255, size=(2, 4, 4, 3)).astype("float32")
    expected = keras.applications.vgg16.preprocess_input(x.copy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(VGG16Preprocess()(x)), expected, rtol=1e-6)
    assert load_config(None, ["model.type=vgg16_head"]).model.preprocessing == "vgg16"
    assert load_config(None, ["model.type=vgg16_head", "model.weights=none"]).model.preprocessing == "scale"


# --------------------------------------------------------------------------- folder datasets


def test_folder_images_of_odd_sizes_greyscale_and_colour(tmp_path):
    from trainer.data.folder import load_folder

    data = folder_data(tmp_path, n_per_class=6, size=(37, 23), modes=("RGB", "L"), formats=("png", "jpg", "bmp", "gif", "webp"))
    rgb = load_folder(data, (20, 24), "rgb")
    assert rgb.x_train.shape == (18, 20, 24, 3) and rgb.x_train.dtype == np.uint8
    assert rgb.class_names == ["cat", "dog", "frog"] and sorted(set(rgb.y_train.tolist())) == [0, 1, 2]
    grey = load_folder(data, (16, 16), "grayscale")
    assert grey.x_test.shape == (18, 16, 16, 1)
    # a greyscale file decoded as rgb has three equal channels
    Image.fromarray(np.full((9, 9), 77, np.uint8), "L").save(data / "train" / "cat" / "zz_grey.png")
    again = load_folder(data, (4, 4), "rgb")
    assert (again.x_train[again.y_train == 0][-1] == 77).all()


@pytest.mark.slow
def test_folder_run_with_greyscale_small_images_and_validation_folder(cli, write_config, tmp_path):
    data = folder_data(tmp_path, splits=("train", "test", "validation"), n_per_class=3, size=(12, 10))
    config = vgg_config(data, data={"dataset": "folder", "path": str(data), "image_size": [20, 20], "color_mode": "grayscale"})
    result = cli("run", write_config(config), "--run-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "zero-padded from 20x20 to 32x32" in output and "greyscale repeated" in output
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["input_shape"] == [20, 20, 1]
    assert "validation 9" in output


def _refusal(cli, write_config, tmp_path, data, **data_keys):
    config = vgg_config(data, data={"dataset": "folder", "path": str(data), **data_keys})
    result = cli("run", write_config(config), "--run-dir", tmp_path / "r")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()
    return " ".join(result.output.split())


@pytest.mark.slow
def test_folder_refusals(cli, write_config, tmp_path):
    data = folder_data(tmp_path, n_per_class=2)
    (data / "train" / "empty").mkdir()
    assert "empty" in _refusal(cli, write_config, tmp_path, data) and "no images" in _refusal(cli, write_config, tmp_path, data)
    (data / "train" / "empty").rmdir()

    (data / "train" / "cat" / "broken.png").write_bytes(b"not a png at all")
    output = _refusal(cli, write_config, tmp_path, data)
    assert "broken.png" in output and "cannot decode" in output
    (data / "train" / "cat" / "broken.png").unlink()

    (data / "test" / "horse").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(data / "test" / "horse" / "h.png")
    output = _refusal(cli, write_config, tmp_path, data)
    assert "horse" in output and "train folder lacks" in output

    output = _refusal(cli, write_config, tmp_path, tmp_path / "nowhere")
    assert "nowhere" in output and "train/" in output


def test_folder_only_keys_are_refused_for_other_datasets(cli, write_config, tmp_path, mnist_npz):
    result = cli("validate", write_config(tiny_config(mnist_npz, data={"image_size": [32, 32]})))
    assert result.exit_code == 2 and "image_size only apply to dataset: folder" in " ".join(result.output.split())
    result = cli("validate", write_config(tiny_config(mnist_npz, train={"cache_features": True})))
    assert result.exit_code == 2 and "train.cache_features" in result.output


def test_every_example_config_validates(cli):
    for path in sorted((REPO_ROOT / "configs").glob("*.yaml")):
        result = cli("validate", path)
        assert result.exit_code == 0, (path, result.output)


@pytest.mark.slow
def test_eval_and_predict_take_a_folder_vgg16_run(cli, write_config, tmp_path):
    """Class names travel from the folders through the run to eval and predict; predict takes any image size."""
    from PIL import Image

    data = folder_data(tmp_path, n_per_class=4)
    config = write_config(vgg_config(data, data={"dataset": "folder", "path": str(data), "image_size": [32, 32]}))
    assert cli("run", config, "--run-dir", tmp_path / "r").exit_code == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())

    evaluated = cli("eval", tmp_path / "r")
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((tmp_path / "r" / "eval-test.json").read_text())
    assert [row["name"] for row in report["per_class"]] == ["cat", "dog", "frog"]
    assert report["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    assert sum(map(sum, report["confusion_matrix"])) == report["examples"]

    big = tmp_path / "big.png"
    Image.new("RGB", (97, 61), (200, 30, 30)).save(big)
    predicted = cli("predict", tmp_path / "r", big, "--output", tmp_path / "p.json")
    assert predicted.exit_code == 0, predicted.output
    (record,) = json.loads((tmp_path / "p.json").read_text())
    assert record["name"] in ("cat", "dog", "frog")
    assert sum(entry["probability"] for entry in record["top_k"]) == pytest.approx(1.0, abs=1e-5)
