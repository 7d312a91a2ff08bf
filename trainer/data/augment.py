"""``data.augment``: random changes to training batches, drawn from (seed, epoch, position); NumPy, any backend.

``augment_batch(images, augment, seed, epoch, positions)`` is the whole augmentation: a uint8
batch in, a float32 batch (values 0..255) out. Every random choice for an example is a pure
function of (the run's seed, the epoch, the example's position in that epoch's order): a
counter-based hash (SplitMix64), no generator state. So epoch N's augmented batches are the same
whether the run went through epochs 0..N-1 in this process or was killed and resumed, and the
function runs without TensorFlow (any loader can call it). ``augment_tagged`` wires it into the
``tf.data`` pipeline (``augment_dataset`` into any ``tf.data`` dataset).

The changes, in the order they apply:

- ``crop: N``: pad by N pixels (``crop_padding``: zeros or reflect) and cut back to the size at a random place per image;
- ``flip``, ``rotation``, ``zoom``, ``translate``: one affine map per image (as Keras's
  RandomFlip, RandomRotation, RandomZoom and RandomTranslation define their factors: rotation a
  fraction of a full turn either way, zoom and translate fractions of the size), resampled once,
  bilinear, with reflected edges;
- ``rand_augment: {magnitude, layers}``: RandAugment on uint8 (``trainer.data.rand_augment``);
- ``contrast: c``: (pixel - image mean per channel) * f + mean with f in [1 - c, 1 + c], clipped to 0..255;
- ``random_erasing: P``: one rectangle per image, with probability P, filled with the image's mean;
- ``mixup`` / ``cutmix``: the batch mixed with itself reversed, targets too (``augment_examples``,
  ``trainer.data.mixing``): the run then uses one-hot targets (``trainer.config.checks.mixing_loss``).

The saved model stays a plain classifier: validation, test, ``trainer eval`` and ``trainer
predict`` never see augmentation.

A run applies these changes inside its training step (``trainer.data.device_augment``, all but
``rand_augment``): the host then only computes ``device_params`` (a few numbers per image, from the
same draws and by the same functions) and hands them over with the uint8 pixels. The NumPy changes
here stay the reference the device's must equal, and the host path for ``rand_augment`` and
distributed runs.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from trainer.data.order import _FIRST_SLOTS, SLOTS, example_uniforms  # the draws (imported from here too)


def _symmetric(u: np.ndarray, factor: float) -> np.ndarray:
    """A uniform draw in [-factor, factor] from u in [0, 1)."""
    return (2.0 * u - 1.0) * factor


def _reflect(index: np.ndarray, size: int) -> np.ndarray:
    """Indices reflected into 0..size-1 the way Keras's ``fill_mode='reflect'`` does (d c b a | a b c d | d c b a)."""
    period = 2 * size
    if index.size and (index.min() < -size or index.max() >= period):  # far out (strong zoom out): the general form
        index = np.mod(index, period)
        return np.where(index >= size, period - 1 - index, index)
    index = np.where(index < 0, -1 - index, index)  # one reflection at most: cheaper than integer modulo
    return np.where(index >= size, period - 1 - index, index)


def _offsets(u: np.ndarray, pad: int) -> np.ndarray:
    """Crop offsets in 0..2*pad (into the padded image) from draws in [0, 1)."""
    return np.minimum((u * (2 * pad + 1)).astype(np.int64), 2 * pad)


def random_pad_crop(images: np.ndarray, pad: int, u_rows: np.ndarray, u_cols: np.ndarray, padding: str = "zeros") -> np.ndarray:
    """Pad each image by ``pad`` pixels (zeros, or its own pixels mirrored: ``reflect``, d c b | a b c d | c b a) and cut
    it back to its size at the place its draws say (one per image)."""
    height, width = images.shape[1:3]
    widths = ((0, 0), (pad, pad), (pad, pad)) + ((0, 0),) * (images.ndim - 3)
    padded = np.pad(images, widths, mode="reflect") if padding == "reflect" else np.pad(images, widths)
    out = np.empty_like(images)
    for index, (row, col) in enumerate(zip(_offsets(u_rows, pad), _offsets(u_cols, pad))):  # one slice copy per image
        out[index] = padded[index, row : row + height, col : col + width]
    return out


# The epoch under which an example's own draws are keyed by its index in the data (not its place in an epoch's order):
# the alternating flip's bit, the same every epoch.
IDENTITY_EPOCH = 2**64 - 1


def identity_uniforms(seed: int, indices: np.ndarray) -> np.ndarray:
    """Each example's own draws, keyed by (seed, its index in the split): the same in every epoch, whatever the order."""
    return example_uniforms(seed, IDENTITY_EPOCH, np.asarray(indices), slots=1)


def _flips(augment: Any, u: np.ndarray, epoch: int = 0, identity: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Which images are mirrored left-right and which upside down (each with probability 1/2).

    ``alternating`` (airbench's flip): left-right by the example's own bit (``identity``, its
    ``identity_uniforms``) in even epochs and by the other value in odd ones, so each image is
    seen mirrored every other epoch; without ``identity`` the bit is drawn from ``u``.
    """
    none = np.zeros(len(u), dtype=bool)
    if augment.flip == "alternating":
        bits = (identity if identity is not None else u)[:, SLOTS["flip_h"]] < 0.5
        return bits ^ bool(int(epoch) % 2), none
    flip_h = u[:, SLOTS["flip_h"]] < 0.5 if augment.flip in ("horizontal", "horizontal_and_vertical") else none
    flip_v = u[:, SLOTS["flip_v"]] < 0.5 if augment.flip in ("vertical", "horizontal_and_vertical") else none
    return flip_h, flip_v


def flip_only(images: np.ndarray, augment: Any, u: np.ndarray, flips: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Flips alone: exact mirrors, no resampling."""
    flip_h, flip_v = flips if flips is not None else _flips(augment, u)
    out = images.copy()
    out[flip_h] = out[flip_h][:, :, ::-1]
    out[flip_v] = out[flip_v][:, ::-1]
    return out


def uses_affine(augment: Any) -> bool:
    """Whether rotation, zoom or translate is on (the flips then fold into one resampled affine map)."""
    return bool(augment.rotation or augment.zoom or augment.translate)


def affine_maps(augment: Any, u: np.ndarray, height: int, width: int, flips: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A (batch, 2, 2) on (row, col), ty, tx) per image: output pixel p samples the source at c + A (p - c - t)."""
    batch = len(u)
    ty = _symmetric(u[:, SLOTS["translate_y"]], augment.translate) * height if augment.translate else np.zeros(batch)
    tx = _symmetric(u[:, SLOTS["translate_x"]], augment.translate) * width if augment.translate else np.zeros(batch)
    scale = 1.0 + _symmetric(u[:, SLOTS["zoom"]], augment.zoom) if augment.zoom else np.ones(batch)  # > 1: zoomed out
    angle = _symmetric(u[:, SLOTS["rotation"]], augment.rotation * 2 * np.pi) if augment.rotation else np.zeros(batch)
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    a = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # (batch, 2, 2) on (row, col)
    flip_h, flip_v = flips
    a[:, 0, :] *= np.where(flip_v, -1.0, 1.0)[:, None]
    a[:, 1, :] *= np.where(flip_h, -1.0, 1.0)[:, None]
    return a, ty, tx


def affine_resample(images: np.ndarray, augment: Any, u: np.ndarray, flips: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Flip, rotation, zoom and translation as one affine map per image, sampled bilinearly with reflected edges."""
    batch, height, width = images.shape[:3]
    channels = images.shape[3]
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    a, ty, tx = affine_maps(augment, u, height, width, flips if flips is not None else _flips(augment, u))
    ry = np.arange(height, dtype=np.float64)[None, :, None] - cy - ty[:, None, None]  # (batch, height, 1)
    rx = np.arange(width, dtype=np.float64)[None, None, :] - cx - tx[:, None, None]  # (batch, 1, width)
    sy = cy + a[:, 0, 0, None, None] * ry + a[:, 0, 1, None, None] * rx  # (batch, height, width)
    sx = cx + a[:, 1, 0, None, None] * ry + a[:, 1, 1, None, None] * rx
    y0, x0 = np.floor(sy), np.floor(sx)
    wy, wx = (sy - y0).astype(np.float32)[..., None], (sx - x0).astype(np.float32)[..., None]
    y0, x0 = y0.astype(np.int64), x0.astype(np.int64)
    # Gathers by flat row index into (batch*height*width, channels): much faster than 3-axis fancy indexing.
    base = (np.arange(batch, dtype=np.int64) * height)[:, None, None]
    rows = [(base + _reflect(y, height)) * width for y in (y0, y0 + 1)]
    cols = [_reflect(x, width) for x in (x0, x0 + 1)]
    flat = images.reshape(-1, channels)

    def take(r, c):
        return flat.take((r + c).ravel(), axis=0).reshape(batch, height, width, channels)

    top = take(rows[0], cols[0]) * (1 - wx) + take(rows[0], cols[1]) * wx
    bottom = take(rows[1], cols[0]) * (1 - wx) + take(rows[1], cols[1]) * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)


def contrast_factors(contrast: float, u: np.ndarray) -> np.ndarray:
    """Each image's contrast factor, in [1 - c, 1 + c] (float32)."""
    return (1.0 + _symmetric(u, contrast)).astype(np.float32)


def random_contrast(images: np.ndarray, contrast: float, u: np.ndarray) -> np.ndarray:
    """(pixel - mean) * f + mean per image and channel, f in [1 - c, 1 + c]; clipped to 0..255 (Keras's RandomContrast)."""
    batch, channels = images.shape[0], images.shape[-1]
    factor = contrast_factors(contrast, u)[:, None, None, None]
    mean = images.reshape(batch, -1, channels).mean(axis=1, dtype=np.float32)[:, None, None, :]
    out = (images - mean) * factor
    out += mean
    return np.clip(out, 0.0, 255.0, out=out)


def erase_boxes(height: int, width: int, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random erasing's rectangles, (top, left, box height, box width) per image: area 0.02..0.33 of the image, aspect
    (height / width) 0.3..3.3 drawn log-uniformly, sides clipped to the image (at least 1 pixel), placed at random inside it."""
    area = (0.02 + (0.33 - 0.02) * u[:, SLOTS["erase_area"]]) * height * width
    aspect = np.exp(np.log(0.3) + (np.log(3.3) - np.log(0.3)) * u[:, SLOTS["erase_aspect"]])
    box_h = np.clip(np.rint(np.sqrt(area * aspect)), 1, height).astype(np.int64)
    box_w = np.clip(np.rint(np.sqrt(area / aspect)), 1, width).astype(np.int64)
    top = np.minimum((u[:, SLOTS["erase_y"]] * (height - box_h + 1)).astype(np.int64), height - box_h)
    left = np.minimum((u[:, SLOTS["erase_x"]] * (width - box_w + 1)).astype(np.int64), width - box_w)
    return top, left, box_h, box_w


def random_erasing(images: np.ndarray, probability: float, u: np.ndarray) -> np.ndarray:
    """With ``probability`` per image, one rectangle (``erase_boxes``) filled with the image's own mean per channel."""
    height, width = images.shape[1:3]
    top, left, box_h, box_w = erase_boxes(height, width, u)
    rows = np.arange(height)[None, :, None]
    cols = np.arange(width)[None, None, :]
    inside = (rows >= top[:, None, None]) & (rows < (top + box_h)[:, None, None]) & (cols >= left[:, None, None]) & (cols < (left + box_w)[:, None, None])
    inside &= (u[:, SLOTS["erase"]] < probability)[:, None, None]
    mean = images.mean(axis=(1, 2), dtype=np.float32, keepdims=True)
    return np.where(inside[..., None], mean, images).astype(np.float32, copy=False)


def _draws(augment: Any, seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
    """The batch's uniforms: the later slots only when a change that reads them is on."""
    later = getattr(augment, "rand_augment", None) is not None or getattr(augment, "random_erasing", 0.0) or getattr(augment, "mixes", False)
    return example_uniforms(seed, epoch, positions, len(SLOTS) if later else len(_FIRST_SLOTS))


def _batch_flips(augment: Any, u: np.ndarray, seed: int, epoch: int, indices: np.ndarray | None, positions: np.ndarray):
    identity = identity_uniforms(seed, positions if indices is None else indices) if augment.flip == "alternating" else None
    return _flips(augment, u, epoch, identity)


def augment_batch(
    images: np.ndarray, augment: Any, seed: int, epoch: int, positions: np.ndarray, indices: np.ndarray | None = None
) -> np.ndarray:
    """A batch of images (values 0..255, (batch, h, w[, c])) augmented: float32, same shape; a pure function of its arguments.

    ``indices``: the examples' indices in the split (what the alternating flip keys on; the positions when None)."""
    images = np.asarray(images)
    if not len(images):
        return images.astype(np.float32)
    greyscale = images.ndim == 3  # (batch, height, width): the changes work on a channel axis
    if greyscale:
        images = images[..., None]
    rand = getattr(augment, "rand_augment", None)
    u = _draws(augment, seed, epoch, positions)
    flips = _batch_flips(augment, u, seed, epoch, indices, positions)
    if augment.crop:
        padding = getattr(augment, "crop_padding", "zeros")
        images = random_pad_crop(images, int(augment.crop), u[:, SLOTS["crop_y"]], u[:, SLOTS["crop_x"]], padding)
    if uses_affine(augment):
        images = affine_resample(images.astype(np.float32), augment, u, flips)
    elif augment.flip != "none":
        images = flip_only(images, augment, u, flips)
    if rand is not None and rand.layers and rand.magnitude:
        from trainer.data.rand_augment import rand_augment

        layers = range(int(rand.layers))
        ops = u[:, [SLOTS[f"rand_augment_op_{k}"] for k in layers]]
        signs = u[:, [SLOTS[f"rand_augment_sign_{k}"] for k in layers]]
        images = rand_augment(images, rand.magnitude, rand.layers, ops, signs)
    images = images.astype(np.float32, copy=False)
    if augment.contrast:
        images = random_contrast(images, augment.contrast, u[:, SLOTS["contrast"]])
    if getattr(augment, "random_erasing", 0.0):
        images = random_erasing(images, augment.random_erasing, u)
    return images[..., 0] if greyscale else images


def augment_examples(
    images: np.ndarray, targets: np.ndarray, augment: Any, seed: int, epoch: int, positions: np.ndarray,
    indices: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A batch's images augmented (``augment_batch``) and, with ``mixup`` / ``cutmix``, mixed with their one-hot targets
    (``trainer.data.mixing``); the targets as they are otherwise."""
    out = augment_batch(images, augment, seed, epoch, positions, indices)
    if not (getattr(augment, "mixes", False) and len(out)):
        return out, targets
    from trainer.data.mixing import mix_batch

    greyscale = out.ndim == 3
    first = example_uniforms(seed, epoch, np.asarray(positions)[:1])[0]
    mixed, targets = mix_batch(out[..., None] if greyscale else out, targets, augment, first, SLOTS)
    return (mixed[..., 0] if greyscale else mixed), targets


# --------------------------------------------------------------------------- on the device: the host's share

# What the host hands the device per example (``trainer.data.device_augment`` applies them inside the compiled
# training step): every number a change needs, computed here from the draws by the very functions the NumPy
# changes above use, so both make the same integer choices (crop places, boxes) and the same maps.
PARAMS = {name: index for index, name in enumerate((
    "crop_y", "crop_x",  # crop offsets into the padded image, 0..2*crop
    "flip_h", "flip_v",  # 1: mirrored
    "a00", "a01", "a10", "a11", "shift_y", "shift_x",  # the affine map (affine_maps): A on (row, col), t
    "contrast",  # the contrast factor
    "erase", "erase_top", "erase_left", "erase_height", "erase_width",  # random erasing: 1 when erased, the box
    "mix_cutmix", "mix_lambda", "cut_top", "cut_bottom", "cut_left", "cut_right", "mix_target_lambda",  # the batch's mix (same in every row)
))}


def device_params(
    augment: Any, seed: int, epoch: int, positions: np.ndarray, height: int, width: int, indices: np.ndarray | None = None
) -> np.ndarray:
    """The per-example numbers (``PARAMS``) the device's changes apply: float32 (len(positions), len(PARAMS)).

    A pure function of (seed, epoch, positions[, indices]) like the draws themselves, and cheap (a few
    numbers per image: the host's whole share of the augmentation besides handing over the uint8 pixels).
    """
    positions = np.asarray(positions)
    out = np.zeros((len(positions), len(PARAMS)), dtype=np.float64)
    if not len(positions):
        return out.astype(np.float32)
    u = _draws(augment, seed, epoch, positions)
    flips = _batch_flips(augment, u, seed, epoch, indices, positions)
    if augment.crop:
        out[:, PARAMS["crop_y"]] = _offsets(u[:, SLOTS["crop_y"]], int(augment.crop))
        out[:, PARAMS["crop_x"]] = _offsets(u[:, SLOTS["crop_x"]], int(augment.crop))
    out[:, PARAMS["flip_h"]], out[:, PARAMS["flip_v"]] = flips
    a, ty, tx = affine_maps(augment, u, height, width, flips)
    out[:, PARAMS["a00"] : PARAMS["a11"] + 1] = a.reshape(-1, 4)
    out[:, PARAMS["shift_y"]], out[:, PARAMS["shift_x"]] = ty, tx
    out[:, PARAMS["contrast"]] = contrast_factors(augment.contrast, u[:, SLOTS["contrast"]]) if augment.contrast else 1.0
    if getattr(augment, "random_erasing", 0.0):
        top, left, box_h, box_w = erase_boxes(height, width, u)
        out[:, PARAMS["erase"]] = u[:, SLOTS["erase"]] < augment.random_erasing
        out[:, PARAMS["erase_top"] : PARAMS["erase_width"] + 1] = np.stack([top, left, box_h, box_w], -1)
    if getattr(augment, "mixes", False):
        from trainer.data.mixing import mix_plan

        plan = mix_plan(augment, u[0], SLOTS, height, width)
        out[:, PARAMS["mix_cutmix"] : PARAMS["mix_target_lambda"] + 1] = [
            float(plan.cutmix), plan.lam, *plan.box, plan.target_lambda,
        ]
    return out.astype(np.float32)


def augment_tagged(dataset: Any, augment: Any, seed: int, on_device: bool = False, order_of: Any = None) -> Any:
    """Tagged ``tf.data`` batches (pass, start, images 0..255[, labels, weights]) as (images augmented[, labels, weights]).

    The draws come from (seed, the batch's pass, its positions start, start + 1, ...), carried by the
    batch itself (``trainer.data.pipeline``): batches are augmented in parallel, kept in order, and
    however far the pipeline reads ahead, a batch is the same. As is (less the tags) when nothing is on.
    ``on_device``: the images stay as stored (uint8) and go with their ``device_params`` as
    ((images, params)[, labels, weights]), for the training step to augment (``trainer.data.device_augment``).
    ``order_of(pass)``: the pass's order of the examples (their indices, which the alternating flip keys on);
    None: the stored order.
    """
    import tensorflow as tf

    if augment is None or not augment.active:
        return dataset.map(lambda number, start, *batch: batch)

    def indices(epoch: int, positions: np.ndarray) -> np.ndarray | None:
        if augment.flip != "alternating" or order_of is None:
            return None
        return order_of(epoch)[positions]

    def positions_of(start, count) -> np.ndarray:
        return np.arange(int(start), int(start) + int(count))

    def augment_numpy(images, epoch, start):
        positions = positions_of(start, len(images))
        return augment_batch(images, augment, seed, int(epoch), positions, indices(int(epoch), positions))

    def mix_numpy(images, targets, epoch, start):
        positions = positions_of(start, len(images))
        return augment_examples(images, targets, augment, seed, int(epoch), positions, indices(int(epoch), positions))

    def params_numpy(epoch, start, count, height, width):
        positions = positions_of(start, count)
        return device_params(augment, seed, int(epoch), positions, int(height), int(width), indices(int(epoch), positions))

    @tf.autograph.experimental.do_not_convert
    def augment_images(epoch, start, images, *rest):
        if on_device:
            shape = tf.shape(images)
            params = tf.numpy_function(params_numpy, [epoch, start, shape[0], shape[1], shape[2]], tf.float32, stateful=False)
            params.set_shape([images.shape[0], len(PARAMS)])
            return ((images, params), *rest)
        if augment.mixes:  # the targets change too: one-hot rows (the run's plan one-hot-encodes them when mixing is on)
            targets, *weights = rest
            out, mixed = tf.numpy_function(mix_numpy, [images, tf.cast(targets, tf.float32), epoch, start], [tf.float32, tf.float32], stateful=False)
            out.set_shape(images.shape)
            mixed.set_shape(targets.shape)
            return (out, mixed, *weights)
        out = tf.numpy_function(augment_numpy, [images, epoch, start], tf.float32, stateful=False)
        out.set_shape(images.shape)
        return (out, *rest)

    return dataset.map(augment_images, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def augment_dataset(dataset: Any, augment: Any, seed: int, epoch_variable: Any = None) -> Any:
    """Any ``tf.data`` dataset of batches (images 0..255 [, labels, weights]) with the images augmented; as is when nothing is on.

    The epoch of each pass is ``epoch_variable`` read at the pass's start (by default the one
    ``trainer.data.pipeline.make_dataset`` gave this dataset); without one, passes are counted as
    they start (exact within one uninterrupted process only). Positions count the examples from
    each pass's start. ``make_dataset(augment=...)`` augments its own batches from their place.
    """
    if augment is None or not augment.active:
        return dataset
    import tensorflow as tf

    from trainer.data.passes import epoch_variable_of, tag_passes

    epoch_variable = epoch_variable if epoch_variable is not None else epoch_variable_of(dataset)
    return augment_tagged(tag_passes(dataset, epoch_variable), augment, seed).prefetch(tf.data.AUTOTUNE)
