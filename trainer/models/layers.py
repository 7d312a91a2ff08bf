"""Custom layers saved inside model.h5; importing this module registers them for loading.

``keras.models.load_model`` of a vgg16_head model needs ``import trainer.models.layers`` first
(``trainer.models.load_model`` does it).
"""
from __future__ import annotations

import math

import keras

from trainer.models.whitening import PatchWhitening

# keras.applications.vgg16.preprocess_input ("caffe" mode): the ImageNet channel means, BGR order.
IMAGENET_BGR_MEANS = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="trainer")
class VGG16Preprocess(keras.layers.Layer):
    """``keras.applications.vgg16.preprocess_input`` as a layer: RGB -> BGR, subtract the ImageNet means (0..255 in)."""

    def call(self, inputs):
        means = keras.ops.convert_to_tensor(IMAGENET_BGR_MEANS, dtype=inputs.dtype)
        return keras.ops.flip(inputs, axis=-1) - means

    def compute_output_shape(self, input_shape):
        return input_shape


class PairAdd(keras.layers.Add):
    """``Add`` that also takes its inputs as separate arguments, for loading saved ConvNeXt models.

    Keras's ConvNeXt calls ``Add`` with two positional tensors; the saved config records that
    call, and the stock ``Add`` refuses it when the model is loaded back. Used only for loading
    (``trainer.catalogue.backbones``), as the custom object named ``Add``; the arithmetic is Add's.
    """

    def __call__(self, *args, **kwargs):
        if len(args) > 1:
            args = (list(args),)
        return super().__call__(*args, **kwargs)


def adapt_images(x, adaptation):
    """Apply an ``InputAdaptation`` to image tensor ``x``: greyscale repeated to RGB, then zero padding to the backbone's size."""
    if adaptation.repeat_channels:
        x = keras.layers.Concatenate(axis=-1, name="to_rgb")([x, x, x])
    top, bottom, left, right = adaptation.padding
    if any(adaptation.padding):
        x = keras.layers.ZeroPadding2D(((top, bottom), (left, right)), name="pad")(x)
    return x


@keras.saving.register_keras_serializable(package="trainer")
def gelu_erf(x):
    """The exact GELU, ``x * Phi(x)``, written with ``erf``: TensorFlow's own exact GELU uses ``Erfc``, which ONNX export cannot convert."""
    return 0.5 * x * (1.0 + keras.ops.erf(x / math.sqrt(2.0)))


# trainer's own layers and activations, by the names a saved model uses (``trainer.models.keras_objects.trainer_objects``)
TRAINER_LAYER_CLASSES: dict[str, object] = {
    "PatchWhitening": PatchWhitening, "trainer>PatchWhitening": PatchWhitening, "gelu_erf": gelu_erf, "trainer>gelu_erf": gelu_erf,
}
