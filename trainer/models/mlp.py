"""The multi-layer perceptron: scale pixels to [0, 1], flatten, dense layers, a class layer."""
from __future__ import annotations

import keras

from trainer.catalogue.regularizers import dense_kwargs


def output_layers(x, num_classes: int, output: str, logit_scale: float = 1.0, **dense_options):
    """The class layer (its logits multiplied by ``logit_scale``); softmax (or identity for logits) is kept in float32 under mixed precision."""
    x = keras.layers.Dense(num_classes, name="classes", **dense_options)(x)
    if logit_scale != 1.0:
        x = keras.layers.Rescaling(logit_scale, name="logit_scale")(x)
    activation = "softmax" if output == "softmax" else "linear"
    return keras.layers.Activation(activation, dtype="float32", name="probabilities" if output == "softmax" else "logits")(x)


def build_mlp(config, input_shape: tuple[int, ...], num_classes: int, **_: object) -> keras.Model:
    """Input pixels are 0..255 (as stored); the model scales them itself, so saved models take raw images."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    for index, units in enumerate(config.hidden_units, start=1):
        x = keras.layers.Dense(units, activation=config.activation, name=f"dense_{index}", **dense_kwargs(config))(x)
        if config.dropout > 0:
            x = keras.layers.Dropout(config.dropout, name=f"dropout_{index}")(x)
    outputs = output_layers(x, num_classes, config.output, **dense_kwargs(config))
    return keras.Model(inputs, outputs, name="mlp")
