"""The patch-whitening first layer of airbench94: a frozen 2x2 conv whose filters decorrelate image patches.

With ``C`` the second-moment matrix of the (flattened) 2x2 patches of a sample of training
images and ``C = V diag(l) V^T`` its eigendecomposition, the layer's ``d = 4 x channels``
filters are the rows of ``diag(1 / sqrt(l + eps)) V^T`` (largest eigenvalue first), and the
layer outputs them and their negatives (``2d`` channels). The output patches' second moment is
then ``diag(l / (l + eps))``: the identity wherever the image statistics rise above ``eps``.
The filters are weights of the layer (not trained), so a saved model carries them and eval,
predict and export need no data. A layer never given a sample (``initialise``) takes its
filters from the first training batch it sees, once; the ``initialised`` flag is a weight too,
so a resumed run keeps them.
"""
from __future__ import annotations

from typing import Any

import keras
import numpy as np

PATCH = 2  # the patch side (airbench94's whitening kernel size)
CHUNK = 500  # images per step when the sample's patch moment is accumulated (bounds the memory to ~25 MB at 32x32x3)


def image_patches(images: Any) -> Any:
    """Every 2x2 patch of ``images`` (N, H, W, C), flattened in the order of a Conv2D kernel: (N x (H-1) x (W-1), 4C)."""
    height, width = images.shape[1], images.shape[2]
    shifted = [images[:, row : height - PATCH + 1 + row, col : width - PATCH + 1 + col, :] for row in range(PATCH) for col in range(PATCH)]
    stacked = keras.ops.concatenate(shifted, axis=-1)
    return keras.ops.reshape(stacked, (-1, stacked.shape[-1]))


def patch_moment(images: Any) -> tuple[Any, Any]:
    """The sum of ``p p^T`` over the 2x2 patches ``p`` of ``images`` (float32) and how many patches there are (a float32 tensor)."""
    patches = image_patches(keras.ops.cast(images, "float32"))
    return keras.ops.matmul(keras.ops.transpose(patches), patches), keras.ops.cast(keras.ops.shape(patches)[0], "float32")


def whitening_filters(moment: Any, eps: float) -> Any:
    """The Conv2D kernel (2, 2, C, 8C) whitening patches of second moment ``moment`` (4C x 4C): the filters, then their negatives."""
    eigenvalues, eigenvectors = keras.ops.eigh(moment)
    eigenvalues, eigenvectors = keras.ops.flip(eigenvalues, axis=0), keras.ops.flip(eigenvectors, axis=1)  # largest first
    rows = keras.ops.transpose(eigenvectors) / keras.ops.sqrt(keras.ops.maximum(eigenvalues, 0.0) + eps)[:, None]
    size = moment.shape[0]
    kernel = keras.ops.reshape(keras.ops.transpose(rows), (PATCH, PATCH, size // (PATCH * PATCH), size))
    return keras.ops.concatenate([kernel, -kernel], axis=-1)


@keras.saving.register_keras_serializable(package="trainer")
class PatchWhitening(keras.layers.Layer):
    """2x2 valid conv with frozen whitening filters (``initialise`` or the first training batch) and a trainable bias."""

    def __init__(self, eps: float = 5e-4, **kwargs: Any):
        super().__init__(**kwargs)
        if isinstance(eps, bool) or not (isinstance(eps, (int, float)) and 0 < eps <= 1):  # a saved model's config is read back from disk too
            raise ValueError(f"PatchWhitening eps must be a number in (0, 1], got {eps!r}")
        self.eps = float(eps)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        size = PATCH * PATCH * channels
        self.kernel = self.add_weight(
            name="kernel", shape=(PATCH, PATCH, channels, 2 * size), initializer="zeros", trainable=False, aggregation="mean",
            autocast=False,  # read as float32 under mixed precision too: a round trip through bfloat16 would change the filters
        )
        self.bias = self.add_weight(name="bias", shape=(2 * size,), initializer="zeros")
        self.initialised = self.add_weight(name="initialised", shape=(), initializer="zeros", trainable=False, aggregation="mean")

    def initialise(self, images: Any) -> None:
        """Filters from the 2x2 patches of ``images`` (N, H, W, C), already scaled as the layer's inputs are.

        ``images`` may be a backend tensor: on PyTorch one on the GPU, or bfloat16 under mixed precision,
        which ``np.asarray`` refuses ("unsupported ScalarType BFloat16"); each backend converts its own,
        after a cast to float32 (exact for bfloat16 values).
        """
        images = keras.ops.convert_to_numpy(keras.ops.cast(images, "float32"))
        moment, count = 0.0, 0
        for start in range(0, len(images), CHUNK):
            part, number = patch_moment(images[start : start + CHUNK])
            moment = moment + keras.ops.convert_to_numpy(part).astype(np.float64)
            count += int(keras.ops.convert_to_numpy(number))
        self.kernel.assign(keras.ops.convert_to_numpy(whitening_filters(keras.ops.convert_to_tensor(moment / count, "float32"), self.eps)))
        self.initialised.assign(1.0)

    def call(self, inputs, training=None):
        kernel = self.kernel
        if training:  # the first training batch sets the filters of a layer that was never initialised

            def from_batch():
                moment, count = patch_moment(inputs)
                return whitening_filters(moment / count, self.eps)

            kernel = keras.ops.cond(self.initialised > 0.5, lambda: keras.ops.convert_to_tensor(self.kernel), from_batch)
            self.kernel.assign(kernel)
            self.initialised.assign(1.0)
        outputs = keras.ops.conv(inputs, keras.ops.cast(kernel, inputs.dtype), padding="valid")
        return outputs + keras.ops.cast(self.bias, inputs.dtype)

    def compute_output_shape(self, input_shape):
        size = PATCH * PATCH * int(input_shape[-1])
        side = [None if d is None else d - PATCH + 1 for d in input_shape[1:3]]
        return (input_shape[0], *side, 2 * size)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}
