"""model.type: backbone_head: every backbone in the table trains, saves and reloads; weights files; refusals."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from PIL import Image

from tests.conftest import tiny_config
from tests.datagen import write_image_folders, write_mnist_npz
from trainer.config import load_config
from trainer.models import build_model
from trainer.catalogue.backbones import BACKBONES

TABLE = sorted(BACKBONES)
THROUGH_THE_CLI = ("mobilenet_v2", "resnet50")  # the others reload in-process (eval and predict do not depend on the backbone)
# trained, saved and reloaded end to end: one of each kind of layer the backbones bring (depthwise convs, residual
# BatchNormalization, EfficientNet's own Rescaling/Normalization, ConvNeXt's LayerNormalization and LayerScale); the
# rest (VGG16/19, ResNet50V2, DenseNet121: plain convs, BatchNormalization, concatenation) build and predict only
END_TO_END = ("mobilenet_v2", "resnet50", "efficientnet_b0", "convnext_tiny")


def backbone_config(data_path, backbone: str, model=None, **sections):
    """A backbone_head run as small as it gets: random weights, a 4-unit head, one step per epoch."""
    config = tiny_config(data_path, **sections)
    config["model"] = {"type": "backbone_head", "backbone": backbone, "weights": "none",
                       "head": {"hidden_units": [4], "dropout": 0.0}, **(model or {})}
    config["train"] = {"epochs": 1, "batch_size": 4, "steps_per_epoch": 1, **sections.get("train", {})}
    return config


def folder_config(tmp_path, backbone: str, **kwargs):
    data = write_image_folders(tmp_path / "images", n_per_class=1, size=(32, 32), formats=("png",))
    return backbone_config(data, backbone, data={"dataset": "folder", "path": str(data), "image_size": [32, 32]}, **kwargs)


# --------------------------------------------------------------------------- refusals (fast)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.backbone=resnet5", "did you mean 'resnet50'"),
        ("model.backbone=inception_v3", "valid: convnext_tiny, densenet121"),
        ("model.weights=''", "must be imagenet, none or the path"),
        ("model.trainable_backbone=0", "model.trainable_backbone"),
        ("model.fine_tune={epochs: 0}", "model.fine_tune.epochs"),
        ("model.fine_tune={unfreeze: some}", "model.fine_tune.unfreeze"),
        ("model.preprocess=caffe", "model.preprocess"),
    ],
)
def test_bad_backbone_settings_are_refused_naming_the_key(cli, write_config, mnist_npz, override, expected):
    result = cli("validate", write_config(backbone_config(mnist_npz, "vgg16")), "--set", override)
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split()) and "Traceback" not in result.output


def test_fine_tune_needs_a_frozen_start_and_cache_needs_no_augmentation(cli, write_config, mnist_npz):
    config = write_config(backbone_config(mnist_npz, "resnet50", model={"trainable_backbone": True, "fine_tune": {"epochs": 1}}))
    result = cli("validate", config)
    assert result.exit_code == 2 and "set trainable_backbone: false" in " ".join(result.output.split())
    config = write_config(backbone_config(mnist_npz, "resnet50", data={"augment": {"flip": "horizontal"}},
                                          train={"cache_features": True}))
    result = cli("validate", config)
    assert result.exit_code == 2 and "train.cache_features: true cannot be" in " ".join(result.output.split())


@pytest.mark.parametrize("backbone", ["resnet50", "mobilenet_v2", "convnext_tiny"])
def test_imagenet_download_failure_names_the_backbones_own_file(cli, write_config, tmp_path, monkeypatch, backbone):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    npz = write_mnist_npz(tmp_path / "m.npz", n_train=8, n_test=4)
    result = cli("run", write_config(backbone_config(npz, backbone, model={"weights": "imagenet"})), "--run-dir", tmp_path / "r")
    assert result.exit_code == 2, result.output
    text = "".join(result.output.split())
    assert BACKBONES[backbone].weights_file in text and BACKBONES[backbone].weights_url in text
    assert str(tmp_path / "kh" / "models") in text and not (tmp_path / "r").exists()


def test_the_notice_names_the_backbone_and_its_minimum_size(cli, write_config, mnist_npz):
    result = cli("validate", write_config(backbone_config(mnist_npz, "densenet121")))
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "model backbone_head: input images are zero-padded from 28x28 to 32x32 (DenseNet121 needs at least 32x32)" in text


# --------------------------------------------------------------------------- weights files in the published layout


def write_published_h5(backbone, path: Path) -> Path:
    """The layout of the published keras-applications files: ``layer_names``, a group per layer, ``<layer>/<weight>:0``."""
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [layer.name.encode() for layer in backbone.layers]
        for layer in backbone.layers:
            group = handle.create_group(layer.name)
            names = [f"{layer.name}/{weight.name}:0".encode() for weight in layer.weights]
            group.attrs["weight_names"] = names
            for name, value in zip(names, layer.get_weights()):
                group.create_dataset(name.decode(), data=value)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["resnet50", "mobilenet_v2"])
def test_a_published_layout_weights_file_loads_by_layer_name(tmp_path, backbone):
    entry = BACKBONES[backbone]
    keras.utils.set_random_seed(5)
    reference = getattr(keras.applications, entry.constructor)(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = write_published_h5(reference, tmp_path / entry.weights_file)
    config = load_config(None, ["model.type=backbone_head", f"model.backbone={backbone}", f"model.weights={path}"])
    assert config.model.preprocessing == "backbone"  # pretrained weights get the backbone's own preprocessing
    model = build_model(config.model, (32, 32, 3), 3)
    loaded = model.get_layer("features").get_layer(backbone)
    assert len(loaded.weights) == len(reference.weights) > 100
    for expected, got in zip(reference.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(expected), keras.ops.convert_to_numpy(got))
    # BatchNormalization of pretrained weights is frozen (inference mode) even when the backbone trains
    config = load_config(None, ["model.type=backbone_head", f"model.backbone={backbone}", f"model.weights={path}",
                                "model.trainable_backbone=true"])
    loaded = build_model(config.model, (32, 32, 3), 3).get_layer("features").get_layer(backbone)
    norms = [layer for layer in loaded.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and not any(layer.trainable for layer in norms)
    assert any(layer.trainable for layer in loaded.layers if isinstance(layer, keras.layers.Conv2D))


@pytest.mark.slow
def test_a_weights_file_of_another_backbone_is_refused(tmp_path):
    keras.utils.set_random_seed(5)
    path = write_published_h5(keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3)), tmp_path / "m.h5")
    config = load_config(None, ["model.type=backbone_head", "model.backbone=resnet50", f"model.weights={path}"])
    with pytest.raises(Exception, match="no weights for ResNet50 layer 'conv1_conv'"):
        build_model(config.model, (32, 32, 3), 3)


# --------------------------------------------------------------------------- every backbone end to end


@pytest.mark.slow
@pytest.mark.first  # long: started early, so that it does not end the suite alone
@pytest.mark.parametrize("backbone", END_TO_END)
def test_each_backbone_trains_saves_and_reloads_through_eval_and_predict(cli, write_config, tmp_path, backbone):
    run_dir = tmp_path / "r"
    result = cli("run", write_config(folder_config(tmp_path, backbone)), "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    assert "computed once" in result.output  # frozen by default: only the head trains, on cached features
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs_completed"] == 1
    if backbone not in THROUGH_THE_CLI:  # eval and predict are the same code for every backbone: the saved model reloading is what differs
        from trainer.models import load_model

        probabilities = load_model(run_dir / "model.h5").predict(np.full((2, 32, 32, 3), 120, np.float32), verbose=0)
        assert probabilities.shape == (2, 3) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        return

    evaluated = cli("eval", run_dir)
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((run_dir / "eval-test.json").read_text())
    assert report["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    assert report["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-4)

    Image.new("RGB", (45, 20), (10, 200, 30)).save(tmp_path / "any.png")
    predicted = cli("predict", run_dir, tmp_path / "any.png", "--output", tmp_path / "p.json")
    assert predicted.exit_code == 0, predicted.output
    (record,) = json.loads((tmp_path / "p.json").read_text())
    assert record["name"] in ("cat", "dog", "frog")
    assert sum(entry["probability"] for entry in record["top_k"]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", [b for b in TABLE if b not in END_TO_END])
def test_the_other_backbones_build_at_their_smallest_size_and_predict(backbone):
    """Built as a run builds them (frozen, with their preprocessing), each gives one probability row per image."""
    config = load_config(None, ["model.type=backbone_head", f"model.backbone={backbone}", "model.weights=none"])
    model = build_model(config.model, (32, 32, 3), 3)
    probabilities = model.predict(np.full((2, 32, 32, 3), 120, np.float32), verbose=0)
    assert probabilities.shape == (2, 3) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert not model.get_layer("features").get_layer(backbone).trainable
