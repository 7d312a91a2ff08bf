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
from trainer.catalogue.adaptation import vgg16_adaptation
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

    The defaults are VGG16's; ``trainer.catalogue.backbones`` holds every backbone's file, URL and hash.
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
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _text_list(value, where: str) -> list[str]:
    """An HDF5 attribute holding a list of names, as text; anything else is a ConfigError naming ``where``."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigError(f"{where} is {_short(value)}; expected a list of names.")
    names = [_text(item) for item in value]
    if not all(isinstance(item, (str, bytes, np.bytes_, np.str_)) for item in value):
        raise ConfigError(f"{where} is {_short(value)}; expected a list of names.")
    return names


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _first_mismatch(expected: dict[str, list[tuple[int, ...]]], stored: dict[str, list[tuple[int, ...]]], label: str) -> str | None:
    """How a weights file's layers (name -> weight shapes) differ from the architecture's, first difference only; None when equal."""
    for name, shapes in expected.items():
        if name not in stored:
            return f"has no weights for {label} layer {name!r}; is it a {label} weights file?"
        if list(stored[name]) != list(shapes):
            return f"layer {name!r} holds {len(stored[name])} weight(s) of shapes {stored[name]}; {label} needs {shapes}."
    for name in stored:
        if name not in expected:
            return (
                f"holds weights for a layer {name!r} that {label} does not have ({len(stored)} weighted layers, {label} has "
                f"{len(expected)}): a weights file of another architecture?"
            )
    return None


def _architecture(backbone: keras.Model) -> dict[str, list[tuple[int, ...]]]:
    return {layer.name: [tuple(w.shape) for w in layer.weights] for layer in backbone.layers if layer.weights}


def load_legacy_h5_weights(backbone: keras.Model, group, source: str, label: str = "VGG16") -> None:
    """Keras 2 ``save_weights`` layout (the published file): ``layer_names`` attr, one group per layer with ``weight_names``.

    The file's weighted layers must be exactly the architecture's (names, count and shapes, from
    the declarations only); only then is any array read, each checked against its variable's shape.
    """
    import h5py

    from trainer.readers.decoders import read_h5_dataset

    where = f"model.weights: {source}"
    stored: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    listed = _text_list(group.attrs["layer_names"], f"{where}: the layer_names attribute")
    architecture = _architecture(backbone)
    absent = next((name for name in architecture if name not in listed), None)
    if absent is not None:  # the likeliest mistake (another model's file): say so before judging the file's insides
        raise ConfigError(f"{where}: {_first_mismatch({absent: architecture[absent]}, {}, label)}")
    for name in listed:
        layer_group = group.get(name)
        if not isinstance(layer_group, h5py.Group):
            raise ConfigError(f"{where}: layer_names lists {name!r} but the file has no group {name!r}.")
        if "weight_names" not in layer_group.attrs:
            raise ConfigError(
                f"{where}: layer {name!r} has no weight_names attribute (every layer of the Keras 2 layout lists its "
                "weights there); the file is damaged or not a Keras weights file."
            )
        entries = []
        for weight in _text_list(layer_group.attrs["weight_names"], f"{where}: layer {name!r} weight_names"):
            dataset = layer_group.get(weight)
            if not isinstance(dataset, h5py.Dataset):
                raise ConfigError(f"{where}: layer {name!r} lists weight {weight!r}, which the file does not hold.")
            entries.append((weight, tuple(dataset.shape or ())))
        if entries:
            stored[name] = entries
    mismatch = _first_mismatch(architecture, {n: [shape for _, shape in e] for n, e in stored.items()}, label)
    if mismatch:
        raise ConfigError(f"{where}: {mismatch}")
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights([
                read_h5_dataset(group[layer.name][weight], tuple(variable.shape), f"{where}: {layer.name}/{weight}")
                for (weight, _), variable in zip(stored[layer.name], layer.weights)
            ])


def _keras3_layers(handle, where: str) -> dict[str, list[tuple[int, ...]]]:
    """The weighted layers a Keras 3 ``.weights.h5`` declares (``layers/<path>/vars``, named by its ``name`` attribute)."""
    import h5py

    stored: dict[str, list[tuple[int, ...]]] = {}
    layers = handle["layers"]
    if not isinstance(layers, h5py.Group):
        raise ConfigError(f"{where}: 'layers' is not a group; not a Keras 3 .weights.h5 file.")
    for path, entry in layers.items():
        variables = entry.get("vars") if isinstance(entry, h5py.Group) else None
        if not isinstance(variables, h5py.Group) or not len(variables):
            continue
        keys = list(variables)
        if not all(key.isdigit() for key in keys) or not all(isinstance(variables[key], h5py.Dataset) for key in keys):
            raise ConfigError(f"{where}: layers/{path}/vars holds {keys[:5]}; expected datasets named 0, 1, ...")
        name = _text(variables.attrs.get("name", path))
        stored[name] = [tuple(variables[key].shape or ()) for key in sorted(keys, key=int)]
    return stored


def load_backbone_weights(backbone: keras.Model, path: Path, label: str = "VGG16") -> None:
    """Load ``path`` into the backbone: the legacy HDF5 layout by layer name, or a Keras 3 ``.weights.h5``.

    Either way the file's weighted layers must match the architecture exactly (names, count,
    shapes) before any array is read; anything else names the file and the first difference.
    """
    import h5py

    source = str(path)
    where = f"model.weights: {source}"
    if not path.is_file():
        raise ConfigError(f"{where}: no such file; expected imagenet, none or the path to a {label} weights file.")
    try:
        with h5py.File(path, "r") as handle:
            group = handle["model_weights"] if "model_weights" in handle else handle
            if isinstance(group, h5py.Group) and "layer_names" in group.attrs:
                load_legacy_h5_weights(backbone, group, source, label)
                return
            if "layers" not in handle:
                raise ConfigError(
                    f"{where} is HDF5 but neither the legacy Keras layout (layer_names) "
                    "nor a Keras 3 .weights.h5 (layers/...)."
                )
            mismatch = _first_mismatch(_architecture(backbone), _keras3_layers(handle, where), label)
            if mismatch:
                raise ConfigError(f"{where}: {mismatch}")
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:  # h5py on a damaged or foreign file
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ConfigError(f"{where} is not an HDF5 weights file trainer can read ({reason}).") from None
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
