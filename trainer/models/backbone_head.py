"""A ``keras.applications`` backbone under a trainable dense head (``model.type: backbone_head``).

The model has the same shape as ``vgg16_head``: ``image -> features -> head``, where
``features`` holds the input adaptation (greyscale to RGB, zero padding up to the backbone's
minimum size), the backbone's own preprocessing and the backbone itself, and ``head`` holds
global average pooling, the dense layers and the class layer. A frozen backbone's features can
then be computed once (``trainer.run.features``); ``fine_tune`` unfreezes it later
(``set_backbone_trainable``). What differs per backbone comes from ``trainer.catalogue.backbones``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import keras

from trainer.catalogue.adaptation import input_adaptation
from trainer.catalogue.backbones import Backbone, backbone_entry
from trainer.models.layers import VGG16Preprocess, adapt_images
from trainer.models.vgg16_head import build_head, download_imagenet_weights, load_backbone_weights

# keras.applications.imagenet_utils "torch" mode: ImageNet channel means and standard deviations of 0..1 RGB.
IMAGENET_RGB_MEANS = (0.485, 0.456, 0.406)
IMAGENET_RGB_STDS = (0.229, 0.224, 0.225)


def preprocessing_layers(mode: str) -> list[Any]:
    """Layers doing ``preprocess_input`` of convention ``mode`` (or ``scale``: [0, 1]) on 0..255 RGB pixels."""
    if mode == "caffe":
        return [VGG16Preprocess(name="caffe_preprocess")]  # the caffe convention is VGG16's
    if mode == "tf":
        return [keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="tf_preprocess")]
    if mode == "torch":
        return [
            keras.layers.Rescaling(1.0 / 255.0, name="scale"),
            keras.layers.Normalization(mean=IMAGENET_RGB_MEANS, variance=[s * s for s in IMAGENET_RGB_STDS], name="torch_preprocess"),
        ]
    if mode == "none":
        return []  # the backbone rescales 0..255 itself
    return [keras.layers.Rescaling(1.0 / 255.0, name="scale")]


def construct_backbone(entry: Backbone, weights: str, input_shape: tuple[int, ...]) -> keras.Model:
    """The no-top backbone; ``imagenet`` fetches the published file first (one clear message when offline)."""
    constructor = getattr(keras.applications, entry.constructor)
    if weights == "imagenet":
        download_imagenet_weights(entry.weights_file, entry.weights_url, entry.weights_hash)
        # Keras now finds the file in its cache and loads it its own way (EfficientNet adds a layer for it).
        return constructor(include_top=False, weights="imagenet", input_shape=input_shape, name=entry.name)
    return constructor(include_top=False, weights=None, input_shape=input_shape, name=entry.name)


def set_backbone_trainable(backbone: keras.Model, trainable: bool | int, freeze_batch_norm: bool) -> None:
    """All layers (``True``), none (``False``) or the top N layers trainable; BatchNormalization optionally kept frozen.

    A frozen BatchNormalization layer runs in inference mode in Keras 3: its moving statistics stay
    as they are, which is what fine-tuning a pretrained backbone needs.
    """
    backbone.trainable = trainable is not False
    if trainable is False:
        return
    if trainable is not True:
        for layer in backbone.layers[: max(0, len(backbone.layers) - int(trainable))]:
            layer.trainable = False
    if freeze_batch_norm:
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False


def set_batch_norm_momentum(backbone: keras.Model, momentum: float, name: str) -> None:
    """``model.batch_norm_momentum`` on every BatchNormalization layer of a backbone trained from scratch; none is an error."""
    from trainer.errors import ConfigError

    layers = [layer for layer in backbone._flatten_layers(include_self=False) if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        raise ConfigError(f"model.batch_norm_momentum: backbone {name} has no BatchNormalization layers; remove batch_norm_momentum")
    for layer in layers:
        layer.momentum = momentum


def build_features(config, input_shape: tuple[int, ...]) -> keras.Model:
    """Raw 0..255 images -> adaptation -> preprocessing -> the backbone, as one sub-model named ``features``."""
    entry = backbone_entry(config.backbone)
    adaptation = input_adaptation(input_shape, entry.min_size)
    inputs = keras.Input(shape=input_shape, name="pixels")
    x = adapt_images(inputs, adaptation)
    for layer in preprocessing_layers(entry.preprocess if config.preprocessing == "backbone" else "scale"):
        x = layer(x)
    backbone = construct_backbone(entry, config.weights_kind, tuple(int(d) for d in x.shape[1:]))
    if config.weights_kind == "path":
        load_backbone_weights(backbone, Path(config.weights), entry.label)
    if config.batch_norm_momentum is not None:
        set_batch_norm_momentum(backbone, config.batch_norm_momentum, config.backbone)
    set_backbone_trainable(backbone, config.trainable_backbone, freeze_batch_norm=config.weights_kind != "none")
    features = keras.Model(inputs, backbone(x), name="features")
    features.trainable = config.trainable_backbone is not False
    if features.trainable:  # the sub-model's flag would otherwise override the backbone's per-layer choice
        set_backbone_trainable(backbone, config.trainable_backbone, freeze_batch_norm=config.weights_kind != "none")
    return features


def build_backbone_head(config, input_shape: tuple[int, ...], num_classes: int, **_: object) -> keras.Model:
    """The whole model, taking raw 0..255 images of ``input_shape``."""
    if len(input_shape) == 2:
        input_shape = (*input_shape, 1)
    features = build_features(config, input_shape)
    head = build_head(config, tuple(int(d) for d in features.output.shape[1:]), num_classes, pooling="average")
    inputs = keras.Input(shape=input_shape, name="image")
    return keras.Model(inputs, head(features(inputs)), name=f"{config.backbone}_head")
