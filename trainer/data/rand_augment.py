"""RandAugment (Cubuk et al., 2020) on uint8 images in NumPy: ``layers`` ops per image, each at one ``magnitude``.

Each image draws, per layer, one op uniformly from ``OPS`` and a sign (the direction of the signed
ops); every op runs at the same magnitude ``M`` on timm's scale 0..10 (``rand-m9-n2`` is M=9, 2
layers; 10 is the strongest). The ops and their strength at M follow timm's ``rand_augment``
"increasing" set, with PIL's definitions (ImageEnhance blends, ImageOps.equalize/autocontrast):

- identity, autocontrast, equalize;
- rotate: up to 30 degrees; shear_x / shear_y: up to 0.3; translate_x / translate_y: up to 0.45 of
  the side (nearest pixel, the uncovered area filled with grey 128, as timm fills);
- solarize: pixels >= 256 - 25.6 M are inverted; posterize: keeps 8 - round(0.4 M) bits;
- color, contrast, brightness, sharpness: PIL's enhancers at factor 1 +- 0.09 M.

At M = 0 every op is the identity. An op runs once over all the images that drew it (vectorised),
and each layer's result is rounded back to uint8, as PIL hands each op an 8-bit image.
"""
from __future__ import annotations

import numpy as np

OPS = (
    "identity", "autocontrast", "equalize", "rotate", "solarize", "color", "posterize", "contrast",
    "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y",
)
MAX_MAGNITUDE = 10.0
FILL = 128  # what the geometric ops put where no source pixel lands (timm's fill)


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def _grey(images: np.ndarray) -> np.ndarray:
    """PIL's "L" conversion (ITU-R 601-2 luma) per pixel, shape (n, h, w, 1), float32; single-channel images as they are."""
    if images.shape[-1] != 3:
        return images[..., :1].astype(np.float32)
    weights = np.array([299, 587, 114], dtype=np.float32) / 1000.0
    return (images.astype(np.float32) @ weights)[..., None]


def _blend(degenerate: np.ndarray, images: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """PIL's ImageEnhance: degenerate + factor * (image - degenerate), clipped to 0..255, per image factor."""
    factor = factor.astype(np.float32).reshape(-1, 1, 1, 1)
    return _to_uint8(degenerate + factor * (images.astype(np.float32) - degenerate))


def autocontrast(images: np.ndarray) -> np.ndarray:
    """Each channel stretched to 0..255 (its darkest pixel to 0, its brightest to 255); flat channels as they are."""
    low = images.min(axis=(1, 2), keepdims=True).astype(np.float32)
    high = images.max(axis=(1, 2), keepdims=True).astype(np.float32)
    span = high - low
    scale = np.where(span > 0, 255.0 / np.maximum(span, 1.0), 1.0)
    offset = np.where(span > 0, low, 0.0)
    return _to_uint8((images - offset) * scale)


def equalize(images: np.ndarray) -> np.ndarray:
    """PIL's ImageOps.equalize per image and channel (a lookup table from the histogram, the last bin left out)."""
    out = images.copy()
    for index in range(len(images)):
        for channel in range(images.shape[-1]):
            plane = images[index, :, :, channel]
            histogram = np.bincount(plane.ravel(), minlength=256)
            nonzero = histogram[histogram > 0]
            step = (nonzero.sum() - nonzero[-1]) // 255
            if not step:
                continue
            lut = np.clip((np.cumsum(histogram) - histogram + step // 2) // step, 0, 255).astype(np.uint8)
            out[index, :, :, channel] = lut[plane]
    return out


def solarize(images: np.ndarray, threshold: int) -> np.ndarray:
    """Pixels at or above ``threshold`` inverted (255 - p)."""
    return np.where(images >= threshold, 255 - images, images).astype(np.uint8)


def posterize(images: np.ndarray, bits: int) -> np.ndarray:
    """Only the ``bits`` highest bits of each pixel kept."""
    return images & np.uint8((0xFF << (8 - bits)) & 0xFF)


def sharpness(images: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """PIL's ImageEnhance.Sharpness: a blend with the image smoothed by [[1,1,1],[1,5,1],[1,1,1]]/13 (borders kept)."""
    values = images.astype(np.float32)
    smooth = values.copy()
    if images.shape[1] > 2 and images.shape[2] > 2:
        total = sum(values[:, 1 + dy : values.shape[1] - 1 + dy, 1 + dx : values.shape[2] - 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        smooth[:, 1:-1, 1:-1] = np.rint((total + 4.0 * values[:, 1:-1, 1:-1]) / 13.0)
    return _blend(smooth, images, factor)


def affine_nearest(images: np.ndarray, matrices: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Output pixel p takes the source pixel nearest to c + A (p - c) + t (A, t per image, (row, col)); outside: grey 128."""
    batch, height, width, channels = images.shape
    centre = np.array([(height - 1) / 2.0, (width - 1) / 2.0])
    rows, cols = np.meshgrid(np.arange(height, dtype=np.float64) - centre[0], np.arange(width, dtype=np.float64) - centre[1], indexing="ij")
    source_y = centre[0] + matrices[:, 0, 0, None, None] * rows + matrices[:, 0, 1, None, None] * cols + shifts[:, 0, None, None]
    source_x = centre[1] + matrices[:, 1, 0, None, None] * rows + matrices[:, 1, 1, None, None] * cols + shifts[:, 1, None, None]
    y, x = np.rint(source_y).astype(np.int64), np.rint(source_x).astype(np.int64)
    inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
    flat = images.reshape(-1, channels)
    index = (np.arange(batch)[:, None, None] * height + np.clip(y, 0, height - 1)) * width + np.clip(x, 0, width - 1)
    out = flat.take(index.ravel(), axis=0).reshape(images.shape)
    out[~inside] = FILL
    return out


def apply_op(name: str, images: np.ndarray, magnitude: float, signs: np.ndarray) -> np.ndarray:
    """One op on uint8 images (n, h, w, c) at ``magnitude`` (0..10); ``signs`` (+1 or -1 per image) turn the signed ops."""
    level = float(magnitude) / MAX_MAGNITUDE
    n = len(images)
    if name == "identity" or not n:
        return images
    if name == "autocontrast":
        return autocontrast(images)
    if name == "equalize":
        return equalize(images)
    if name == "solarize":
        return solarize(images, int(256 - level * 256))
    if name == "posterize":
        return posterize(images, 8 - int(round(level * 4)))
    factor = 1.0 + signs * 0.9 * level
    if name == "color":
        return _blend(_grey(images), images, factor) if images.shape[-1] == 3 else images
    if name == "contrast":
        mean = _grey(images).mean(axis=(1, 2, 3), keepdims=True)
        return _blend(np.rint(mean), images, factor)
    if name == "brightness":
        return _blend(np.zeros((n, 1, 1, 1), np.float32), images, factor)
    if name == "sharpness":
        return sharpness(images, factor)
    matrices = np.tile(np.eye(2), (n, 1, 1))
    shifts = np.zeros((n, 2))
    if name == "rotate":
        angle = np.deg2rad(signs * 30.0 * level)
        matrices = np.stack([np.stack([np.cos(angle), -np.sin(angle)], -1), np.stack([np.sin(angle), np.cos(angle)], -1)], -2)
    elif name == "shear_x":
        matrices[:, 1, 0] = signs * 0.3 * level  # column moves with the row
    elif name == "shear_y":
        matrices[:, 0, 1] = signs * 0.3 * level
    elif name == "translate_x":
        shifts[:, 1] = signs * 0.45 * level * images.shape[2]
    elif name == "translate_y":
        shifts[:, 0] = signs * 0.45 * level * images.shape[1]
    else:
        raise ValueError(f"unknown RandAugment op {name!r}")
    return affine_nearest(images, matrices, shifts)


def rand_augment(images: np.ndarray, magnitude: float, layers: int, u_ops: np.ndarray, u_signs: np.ndarray) -> np.ndarray:
    """``layers`` ops per image, op k chosen by ``u_ops[:, k]`` and its sign by ``u_signs[:, k]`` (draws in [0, 1)); uint8 out."""
    out = _to_uint8(images) if images.dtype != np.uint8 else images.copy()
    for layer in range(int(layers)):
        chosen = np.minimum((u_ops[:, layer] * len(OPS)).astype(np.int64), len(OPS) - 1)
        signs = np.where(u_signs[:, layer] < 0.5, -1.0, 1.0)
        for op_index in np.unique(chosen):
            picked = chosen == op_index
            out[picked] = apply_op(OPS[op_index], out[picked], magnitude, signs[picked])
    return out
