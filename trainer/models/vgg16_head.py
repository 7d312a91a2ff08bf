"""VGG16 (no top, frozen by default) under a trainable dense head: the CIFAR-10 transfer-learning setup.

The model is ``image -> features -> head``: ``features`` is a sub-model holding the input
adaptation, the preprocessing and the ``vgg16`` backbone; ``head`` is a sub-model holding
Flatten, the dense layers and the class layer. Keeping them apart lets training compute the
frozen features once and fit ``head`` alone (its weights are the full model's).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import keras
import numpy as np

from trainer.errors import ConfigError
from trainer.models.adaptation import vgg16_adaptation
from trainer.models.layers import VGG16Preprocess, adapt_images
from trainer.models.mlp import output_layers

WEIGHTS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + WEIGHTS_FILE
WEIGHTS_MD5 = "6d6bbae143d832006294945121d1f1fc"  # as keras.applications.vgg16 checks it


def keras_models_dir() -> Path:
    """Where ``keras.utils.get_file(..., cache_subdir="models")`` looks: $KERAS_HOME/models or ~/.keras/models."""
    return Path(os.environ.get("KERAS_HOME") or "~/.keras").expanduser() / "models"


def download_imagenet_weights(file: str = WEIGHTS_FILE, url: str = WEIGHTS_URL, file_hash: str | None = WEIGHTS_MD5) -> Path:
    """Published no-top weights through Keras's cache (download on first use); failure names model.weights.

    The defaults are VGG16's; ``trainer.models.backbones`` holds every backbone's file, URL and hash.
    """
    try:
        return Path(keras.utils.get_file(file, url, cache_subdir="models", file_hash=file_hash))
    except Exception as exc:  # noqa: BLE001 - any download failure becomes one clear message
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"model.weights is imagenet, so Keras tried to download {file} and failed ({reason[:200]}). "
            f"Download {url} on a machine with network access and put it in {keras_models_dir()}/ "
            f"(where Keras looks for {file}), or set model.weights to the path of a weights file, "
            "or model.weights: none to start from random weights."
        ) from None


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_legacy_h5_weights(backbone: keras.Model, group, source: str, label: str = "VGG16") -> None:
    """Keras 2 ``save_weights`` layout (the published file): ``layer_names`` attr, one group per layer with ``weight_names``."""
    stored = {_text(name) for name in group.attrs["layer_names"]}
    for layer in backbone.layers:
        if not layer.weights:
            continue
        if layer.name not in stored:
            raise ConfigError(f"model.weights: {source} has no weights for {label} layer {layer.name!r}; is it a {label} weights file?")
        layer_group = group[layer.name]
        arrays = [np.asarray(layer_group[_text(name)]) for name in layer_group.attrs["weight_names"]]
        expected = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != expected:
            raise ConfigError(
                f"model.weights: {source}: layer {layer.name!r} holds shapes {[a.shape for a in arrays]}, "
                f"{label} needs {expected}."
            )
        layer.set_weights(arrays)


def load_backbone_weights(backbone: keras.Model, path: Path, label: str = "VGG16") -> None:
    """Load ``path`` into the backbone: the legacy HDF5 layout by layer name, or a Keras 3 ``.weights.h5``."""
    import h5py

    source = str(path)
    if not path.is_file():
        raise ConfigError(f"model.weights: {source}: no such file; expected imagenet, none or the path to a {label} weights file.")
    try:
        with h5py.File(path, "r") as handle:
            group = handle["model_weights"] if "model_weights" in handle else handle
            if "layer_names" in group.attrs:
                load_legacy_h5_weights(backbone, group, source, label)
                return
            if "layers" not in handle:
                raise ConfigError(
                    f"model.weights: {source} is HDF5 but neither the legacy Keras layout (layer_names) "
                    "nor a Keras 3 .weights.h5 (layers/...)."
                )
    except OSError as exc:
        raise ConfigError(f"model.weights: {source} is not an HDF5 weights file ({exc}).") from None
    _load_keras3_weights(backbone, path, label)


def _load_keras3_weights(backbone: keras.Model, path: Path, label: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        target = path
        if not path.name.endswith(".weights.h5"):  # Keras picks the reader by the suffix
            target = Path(tmp) / "backbone.weights.h5"
            target.symlink_to(path.resolve())
        try:
            backbone.load_weights(target)
        except (ValueError, KeyError, OSError) as exc:
            raise ConfigError(f"model.weights: {path} does not fit the {label} backbone: {str(exc).splitlines()[0][:300]}") from None


def build_features(config, input_shape: tuple[int, ...]) -> keras.Model:
    """Raw 0..255 images -> adaptation -> preprocessing -> the ``vgg16`` backbone, as one sub-model."""
    adaptation = vgg16_adaptation(input_shape)
    inputs = keras.Input(shape=input_shape, name="pixels")
    x = adapt_images(inputs, adaptation)
    if config.preprocessing == "vgg16":
        x = VGG16Preprocess(name="vgg16_preprocess")(x)
    else:
        x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(x)
    backbone = keras.applications.VGG16(include_top=False, weights=None, input_shape=tuple(int(d) for d in x.shape[1:]))
    if config.weights_kind == "imagenet":
        load_backbone_weights(backbone, download_imagenet_weights())
    elif config.weights_kind == "path":
        load_backbone_weights(backbone, Path(config.weights))
    frozen = not config.trainable_backbone
    outputs = backbone(x, training=False) if frozen else backbone(x)
    features = keras.Model(inputs, outputs, name="features")
    features.trainable = not frozen
    return features


def build_head(config, feature_shape: tuple[int, ...], num_classes: int, pooling: str = "flatten") -> keras.Model:
    """Flatten (or global average pooling), Dense + Dropout per hidden layer, the class layer: the part that trains."""
    inputs = keras.Input(shape=feature_shape, name="features")
    if pooling == "average":
        x = keras.layers.GlobalAveragePooling2D(name="pool")(inputs)
    else:
        x = keras.layers.Flatten(name="flatten")(inputs)
    for index, units in enumerate(config.head.hidden_units, start=1):
        x = keras.layers.Dense(units, activation=config.head.activation, name=f"dense_{index}")(x)
        if config.head.dropout > 0:
            x = keras.layers.Dropout(config.head.dropout, name=f"dropout_{index}")(x)
    return keras.Model(inputs, output_layers(x, num_classes, config.output), name="head")


def build_vgg16_head(config, input_shape: tuple[int, ...], num_classes: int, **_: object) -> keras.Model:
    """The whole model, taking raw 0..255 images of ``input_shape``."""
    if len(input_shape) == 2:
        input_shape = (*input_shape, 1)
    features = build_features(config, input_shape)
    head = build_head(config, tuple(int(d) for d in features.output.shape[1:]), num_classes)
    inputs = keras.Input(shape=input_shape, name="image")
    x = features(inputs, training=False) if not config.trainable_backbone else features(inputs)
    return keras.Model(inputs, head(x), name="vgg16_head")
