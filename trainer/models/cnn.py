"""The convolutional network of the Keras tutorials: conv blocks, then a dense head and the class layer.

Per block: ``convs`` x Conv2D(filters, kernel_size, padding same, activation) (each followed by
BatchNormalization when ``batch_norm``), MaxPooling2D(2), Dropout(dropout). Pixels come in as
stored (0..255, greyscale with or without a channel axis) and the model scales them itself, so
a saved model takes raw images like the MLP.
"""
from __future__ import annotations

import keras

from trainer.catalogue.regularizers import dense_kwargs
from trainer.errors import ConfigError
from trainer.models.mlp import output_layers


def max_blocks(height: int, width: int) -> int:
    """How many 2x2 poolings images of this size survive (each halves the side, rounding down)."""
    count = 0
    while min(height, width) >= 2:
        height, width, count = height // 2, width // 2, count + 1
    return count


def build_cnn(config, input_shape: tuple[int, ...], num_classes: int, **_: object) -> keras.Model:
    """The CNN for images of ``input_shape`` (height, width[, channels]), taking raw 0..255 pixels."""
    height, width = int(input_shape[0]), int(input_shape[1])
    blocks = config.block_list()
    if len(blocks) > max_blocks(height, width):
        raise ConfigError(
            f"model.blocks: {len(blocks)} blocks halve the image side {len(blocks)} times, but {height}x{width} images "
            f"allow at most {max_blocks(height, width)}; remove blocks or use larger images."
        )
    options = dense_kwargs(config)  # regularizers and constraint: conv and dense layers alike
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    if len(input_shape) == 2:
        x = keras.layers.Reshape((height, width, 1), name="channel")(x)
    for number, block in enumerate(blocks, start=1):
        for conv in range(1, block.convs + 1):
            name = f"block{number}_conv{conv}"
            if config.batch_norm:  # the activation after the normalisation, as the BatchNormalization paper does
                x = keras.layers.Conv2D(block.filters, config.kernel_size, padding="same", use_bias=False, name=name, **options)(x)
                x = keras.layers.BatchNormalization(momentum=config.momentum, name=f"{name}_bn")(x)
                x = keras.layers.Activation(config.activation, name=f"{name}_{config.activation}")(x)
            else:
                x = keras.layers.Conv2D(
                    block.filters, config.kernel_size, padding="same", activation=config.activation, name=name, **options
                )(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{number}_pool")(x)
        if block.dropout > 0:
            x = keras.layers.Dropout(block.dropout, name=f"block{number}_dropout")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for index, units in enumerate(config.head.hidden_units, start=1):
        x = keras.layers.Dense(units, activation=config.head.activation, name=f"dense_{index}", **options)(x)
        if config.head.dropout > 0:
            x = keras.layers.Dropout(config.head.dropout, name=f"dropout_{index}")(x)
    outputs = output_layers(x, num_classes, config.output, **options)
    return keras.Model(inputs, outputs, name="cnn")
