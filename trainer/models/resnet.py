"""Fast CIFAR networks (``model.type: resnet``): airbench94, Page's ResNet-9, the CIFAR ResNet-20/56 of He et al.

Every variant takes raw 0..255 pixels (greyscale with or without a channel axis) and scales
them to [-1, 1] itself. Convolutions have no bias (a BatchNormalization follows each); options
the config leaves unset take the variant's values (``trainer.config.models.RESNET_VARIANTS``).

- ``airbench``: ``PatchWhitening`` (frozen 2x2 whitening conv) -> activation -> three groups of
  conv -> max pool 2 -> BN -> act -> conv -> BN -> act, then global max pooling and a bias-free class layer.
- ``resnet9``: prep conv; layer1 conv + pool + residual (two convs); layer2 conv + pool; layer3
  conv + pool + residual; global max pooling; a bias-free class layer.
- ``resnet20``/``resnet56``: a conv, three stages of 3 (9) basic blocks (stride 2 entering
  stages 2 and 3, a 1x1 conv + BN shortcut where the shape changes), global average pooling.
"""
from __future__ import annotations

from typing import Any

import keras
import numpy as np

from trainer.catalogue.regularizers import dense_kwargs
from trainer.config.models import RESNET_BLOCKS
from trainer.errors import ConfigError
from trainer.models.cnn import max_blocks
from trainer.models.layers import gelu_erf
from trainer.models.mlp import output_layers
from trainer.models.whitening import PATCH, PatchWhitening


class Blocks:
    """Conv / BN / activation layers with the config's options, named in order."""

    def __init__(self, config):
        self.options = dense_kwargs(config)
        self.activation = config.resolved("activation")
        self.momentum = config.resolved("batch_norm_momentum")
        self.scale = config.resolved("batch_norm_scale")

    def conv(self, x, filters: int, name: str, kernel_size: int = 3, strides: int = 1):
        return keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False, name=name, **self.options)(x)

    def norm(self, x, name: str):
        return keras.layers.BatchNormalization(momentum=self.momentum, scale=self.scale, epsilon=1e-5, name=name)(x)

    def act(self, x, name: str):
        # gelu as erf: the same function, and one an ONNX export can convert
        return keras.layers.Activation(gelu_erf if self.activation == "gelu" else self.activation, name=name)(x)

    def conv_bn_act(self, x, filters: int, name: str):
        return self.act(self.norm(self.conv(x, filters, name), f"{name}_bn"), f"{name}_{self.activation}")


def airbench(blocks: Blocks, x, widths: list[int], config):
    whitening = config.resolved("whitening")
    x = PatchWhitening(whitening.eps, whitening.eps_scale, whitening.bias_epochs, name="whiten")(x)
    x = blocks.act(x, f"whiten_{blocks.activation}")
    for number, width in enumerate(widths, start=1):
        name = f"group{number}"
        x = blocks.conv(x, width, f"{name}_conv1")
        x = keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
        x = blocks.act(blocks.norm(x, f"{name}_conv1_bn"), f"{name}_conv1_{blocks.activation}")
        x = blocks.conv_bn_act(x, width, f"{name}_conv2")
    return keras.layers.GlobalMaxPooling2D(name="pool")(x)


def resnet9(blocks: Blocks, x, widths: list[int], config):
    x = blocks.conv_bn_act(x, widths[0], "prep")
    for number, width in enumerate(widths[1:], start=1):
        name = f"layer{number}"
        x = keras.layers.MaxPooling2D(2, name=f"{name}_pool")(blocks.conv_bn_act(x, width, name))
        if number != 2:  # layers 1 and 3 have a residual branch of two convs
            branch = blocks.conv_bn_act(blocks.conv_bn_act(x, width, f"{name}_res1"), width, f"{name}_res2")
            x = keras.layers.Add(name=f"{name}_add")([x, branch])
    return keras.layers.GlobalMaxPooling2D(name="pool")(x)


def cifar_resnet(blocks: Blocks, x, widths: list[int], config):
    x = blocks.conv_bn_act(x, widths[0], "stem")
    for stage, width in enumerate(widths, start=1):
        for block in range(1, RESNET_BLOCKS[config.variant] + 1):
            name = f"stage{stage}_block{block}"
            strides = 2 if stage > 1 and block == 1 else 1
            y = blocks.act(blocks.norm(blocks.conv(x, width, f"{name}_conv1", strides=strides), f"{name}_conv1_bn"), f"{name}_conv1_act")
            y = blocks.norm(blocks.conv(y, width, f"{name}_conv2"), f"{name}_conv2_bn")
            if strides != 1 or int(x.shape[-1]) != width:  # projection shortcut (option B)
                x = blocks.norm(blocks.conv(x, width, f"{name}_shortcut", kernel_size=1, strides=strides), f"{name}_shortcut_bn")
            x = blocks.act(keras.layers.Add(name=f"{name}_add")([x, y]), f"{name}_{blocks.activation}")
    return keras.layers.GlobalAveragePooling2D(name="pool")(x)


BODIES = {"airbench": airbench, "resnet9": resnet9, "resnet20": cifar_resnet, "resnet56": cifar_resnet}
POOLINGS = {"airbench": 3, "resnet9": 3, "resnet20": 0, "resnet56": 0}  # 2x2 max poolings on the way


def identity_init(model: keras.Model) -> None:
    """Dirac initialisation: each conv's first min(in, out) filters pass their own input channel through unchanged."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            rows, cols, channels_in, channels_out = kernel.shape
            count = min(channels_in, channels_out)
            kernel[:, :, :, :count] = 0.0
            kernel[rows // 2, cols // 2, np.arange(count), np.arange(count)] = 1.0
            layer.kernel.assign(kernel)


def check_size(config, height: int, width: int) -> None:
    """Refuse images too small for the variant's poolings (each halves the side)."""
    poolings = POOLINGS[config.variant] if config.variant != "airbench" else len(config.resolved("widths"))
    shrink = PATCH - 1 if config.variant == "airbench" else 0
    if max_blocks(height - shrink, width - shrink) < poolings:
        raise ConfigError(
            f"model.variant: {config.variant} halves the image side {poolings} times, which {height}x{width} images do not allow; "
            f"use images of at least {2 ** poolings + shrink}x{2 ** poolings + shrink}."
        )


def build_resnet(config, input_shape: tuple[int, ...], num_classes: int, train_images: Any = None, **_: object) -> keras.Model:
    """The variant ``config`` names, for raw 0..255 images of ``input_shape``.

    ``train_images`` (raw training images, optional): airbench's whitening filters come from
    ``whitening.sample`` of them, spread evenly over the set; without them the layer takes its
    filters from the first training batch.
    """
    height, width = int(input_shape[0]), int(input_shape[1])
    check_size(config, height, width)
    blocks = Blocks(config)
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(inputs)
    if len(input_shape) == 2:
        x = keras.layers.Reshape((height, width, 1), name="channel")(x)
    x = BODIES[config.variant](blocks, x, config.resolved("widths"), config)
    options = dense_kwargs(config)
    if config.variant in ("airbench", "resnet9"):
        options = {key: value for key, value in options.items() if key != "bias_regularizer"}
        options["use_bias"] = False
    outputs = output_layers(x, num_classes, config.output, logit_scale=config.resolved("logit_scale"), **options)
    model = keras.Model(inputs, outputs, name=config.variant)
    if config.resolved("identity_init"):
        identity_init(model)
    if train_images is not None and config.variant == "airbench":
        whiten_from(model, train_images, config.resolved("whitening").sample)
    return model


def whiten_from(model: keras.Model, train_images: Any, sample: int) -> None:
    """Set airbench's whitening filters from ``sample`` training images spread evenly over ``train_images``."""
    total = len(train_images)
    positions = np.unique(np.linspace(0, total - 1, min(sample, total)).astype(np.int64))
    images = np.asarray(train_images[positions])  # an array, or a folder's ImageFiles decoding only these
    scaled = model.get_layer("scale")(images.astype(np.float32))
    if "channel" in [layer.name for layer in model.layers]:
        scaled = model.get_layer("channel")(scaled)
    model.get_layer("whiten").initialise(scaled)
