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

``eps_scale``: ``input`` adds ``eps`` to the eigenvalues as they are on the layer's inputs (trainer's
[-1, 1] pixels); ``standardized`` reads ``eps`` as airbench94 states it, on pixels standardised to
unit variance per channel, and multiplies it by the inputs' mean per-channel variance (from the same
sample): about 0.25 on CIFAR-10 in [-1, 1], so airbench's 5e-4 is ~1.2e-4 here.

``bias_epochs``: the bias trains for that many epochs, then is frozen (airbench94: 3). The layer
counts its training steps (a weight, so a resumed run counts on) and, from step ``freeze_step``
(set by ``schedule_bias_freeze`` from the run's steps per epoch), uses the bias as it was at that
step; the optimizer no longer reaches it (its momentum and weight decay move only the unused copy).
"""
from __future__ import annotations

from typing import Any

import keras
import numpy as np

PATCH = 2  # the patch side (airbench94's whitening kernel size)
EPS_SCALES = ("input", "standardized")  # what whitening.eps is relative to: the layer's inputs, or unit-variance pixels (airbench94)
MAX_BIAS_EPOCHS = 100_000
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

    def __init__(self, eps: float = 5e-4, eps_scale: str = "input", bias_epochs: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if isinstance(eps, bool) or not (isinstance(eps, (int, float)) and 0 < eps <= 1):  # a saved model's config is read back from disk too
            raise ValueError(f"PatchWhitening eps must be a number in (0, 1], got {eps!r}")
        if eps_scale not in EPS_SCALES:
            raise ValueError(f"PatchWhitening eps_scale must be one of {', '.join(EPS_SCALES)}, got {eps_scale!r}")
        if bias_epochs is not None and (isinstance(bias_epochs, bool) or not isinstance(bias_epochs, int) or not 0 <= bias_epochs <= MAX_BIAS_EPOCHS):
            raise ValueError(f"PatchWhitening bias_epochs must be null or an integer in [0, {MAX_BIAS_EPOCHS}], got {bias_epochs!r}")
        self.eps, self.eps_scale, self.bias_epochs = float(eps), eps_scale, bias_epochs

    def scaled_eps(self, variance: Any) -> Any:
        """The eps added to the eigenvalues: ``eps``, or ``eps x`` the inputs' mean per-channel ``variance`` with ``eps_scale: standardized``."""
        return self.eps * variance if self.eps_scale == "standardized" else self.eps

    def build(self, input_shape):
        channels = int(input_shape[-1])
        size = PATCH * PATCH * channels
        self.kernel = self.add_weight(
            name="kernel", shape=(PATCH, PATCH, channels, 2 * size), initializer="zeros", trainable=False, aggregation="mean",
            autocast=False,  # read as float32 under mixed precision too: a round trip through bfloat16 would change the filters
        )
        # float32 reads under mixed precision too (cast in call): bias_epochs keeps the bias exactly as it was
        self.bias = self.add_weight(name="bias", shape=(2 * size,), initializer="zeros", autocast=False)
        self.initialised = self.add_weight(name="initialised", shape=(), initializer="zeros", trainable=False, aggregation="mean")
        if self.bias_epochs is not None:  # only then: layers saved without the option keep their weights
            options = {"initializer": "zeros", "trainable": False, "aggregation": "mean", "autocast": False}
            self.steps = self.add_weight(name="steps", shape=(), **options)  # training steps taken (float32: exact to 2^24)
            self.freeze_step = self.add_weight(name="freeze_step", shape=(), **{**options, "initializer": keras.initializers.Constant(-1.0)})  # -1: never frozen
            self.frozen_bias = self.add_weight(name="frozen_bias", shape=(2 * size,), **options)

    def initialise(self, images: Any) -> None:
        """Filters from the 2x2 patches of ``images`` (N, H, W, C), already scaled as the layer's inputs are.

        ``images`` may be a backend tensor: on PyTorch one on the GPU, or bfloat16 under mixed precision,
        which ``np.asarray`` refuses ("unsupported ScalarType BFloat16"); each backend converts its own,
        after a cast to float32 (exact for bfloat16 values).
        """
        images = keras.ops.convert_to_numpy(keras.ops.cast(images, "float32"))
        eps = self.scaled_eps(float(images.reshape(-1, images.shape[-1]).astype(np.float64).var(axis=0).mean()))
        moment, count = 0.0, 0
        for start in range(0, len(images), CHUNK):
            part, number = patch_moment(images[start : start + CHUNK])
            moment = moment + keras.ops.convert_to_numpy(part).astype(np.float64)
            count += int(keras.ops.convert_to_numpy(number))
        self.kernel.assign(keras.ops.convert_to_numpy(whitening_filters(keras.ops.convert_to_tensor(moment / count, "float32"), eps)))
        self.initialised.assign(1.0)

    def call(self, inputs, training=None):
        kernel = self.kernel
        if training:  # the first training batch sets the filters of a layer that was never initialised

            def from_batch():
                moment, count = patch_moment(inputs)
                variance = keras.ops.mean(keras.ops.var(keras.ops.cast(inputs, "float32"), axis=(0, 1, 2)))
                return whitening_filters(moment / count, self.scaled_eps(variance))

            kernel = keras.ops.cond(self.initialised > 0.5, lambda: keras.ops.convert_to_tensor(self.kernel), from_batch)
            self.kernel.assign(kernel)
            self.initialised.assign(1.0)
        outputs = keras.ops.conv(inputs, keras.ops.cast(kernel, inputs.dtype), padding="valid")
        return outputs + keras.ops.cast(self.bias_in_use(bool(training)), inputs.dtype)

    def bias_in_use(self, training: bool) -> Any:
        """The bias, or with ``bias_epochs`` the one frozen at ``freeze_step``; a training call also counts the step."""
        if self.bias_epochs is None:
            return self.bias
        ops = keras.ops
        bias, kept = ops.convert_to_tensor(self.bias), ops.convert_to_tensor(self.frozen_bias)
        steps, freeze_step = ops.convert_to_tensor(self.steps), ops.convert_to_tensor(self.freeze_step)
        scheduled = ops.greater_equal(freeze_step, 0.0)
        frozen = ops.logical_and(scheduled, ops.greater_equal(steps, freeze_step))
        if not training:
            return ops.where(frozen, kept, bias)
        kept = ops.where(ops.logical_and(scheduled, ops.equal(steps, freeze_step)), bias, kept)  # taken once, at the freeze step
        self.frozen_bias.assign(kept)
        self.steps.assign(steps + 1.0)
        return ops.where(frozen, kept, bias)

    def compute_output_shape(self, input_shape):
        size = PATCH * PATCH * int(input_shape[-1])
        side = [None if d is None else d - PATCH + 1 for d in input_shape[1:3]]
        return (input_shape[0], *side, 2 * size)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps, "eps_scale": self.eps_scale, "bias_epochs": self.bias_epochs}


def schedule_bias_freeze(model: Any, steps_per_epoch: int) -> None:
    """Set each whitening layer's ``freeze_step`` to ``bias_epochs x steps_per_epoch`` (before ``fit``; a no-op without ``bias_epochs``)."""
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, PatchWhitening) and layer.bias_epochs is not None and layer.built:
            layer.freeze_step.assign(float(layer.bias_epochs * steps_per_epoch))
