"""A model's class probabilities, plain or with test-time augmentation: averaged over a few views of each image (NumPy only).

The views of ``mode`` (``trainer.config.evaluate.TTA_MODES``):

- ``none``: the images as they are (one view).
- ``flip``: the images and their horizontal mirror (two views).
- ``flip_translate``: those two, each also shifted by ``TRANSLATE_PIXELS`` pixels down-right and
  up-left, the uncovered border filled by reflection (six views).

Each view goes through the model; its outputs become probabilities (a softmax for logits models)
and the probabilities of the views are averaged with equal weights. The arithmetic is NumPy on the
model's ``predict`` output, so it is the same on every Keras backend and for exported models.
Nothing here prints.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from trainer.config.evaluate import TTA_MODES, check_tta_mode
from trainer.errors import DataError
from trainer.inference.scores import test_figures

__all__ = ["TTA_MODES", "TRANSLATE_PIXELS", "views", "view_count", "tta_probabilities", "tta_scores"]

TRANSLATE_PIXELS = 2  # flip_translate: how far each translated view is shifted, down-right and up-left
CHUNK = 1024  # images per chunk at most: the views of one chunk are in memory at a time (ImageFiles are decoded per chunk)
CHUNK_BYTES = 64 * 2**20  # and at most this much float32 pixels per view of a chunk (6 views of 224x224 RGB: ~110 images)
PROBABILITY_FLOOR = 1e-7  # the loss of averaged probabilities clips them here, as Keras's cross-entropy does


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large scores."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


@contextlib.contextmanager
def one_batch_per_call(model: Any) -> Iterator[None]:
    """``model.predict`` one batch per compiled call while inside: a compiled run's ``steps_per_execution`` (93 on MNIST)
    would be unrolled into predict's graph (Keras's TensorFlow trainer loops over the batches in Python while tracing):
    about 1.5 s of tracing for 0.05 s of work on a 2,000-image test split. On the way out the setting is restored
    and the one-batch predict function dropped, so that a later ``predict`` (which groups its batches by the restored
    setting) builds a function that takes them all."""
    steps = getattr(model, "steps_per_execution", 1)
    if not isinstance(steps, int) or steps <= 1 or getattr(model, "predict_function", True) is not None:
        yield  # an export, a one-step model, or a predict function already built (its batches grouped to match)
        return
    model.steps_per_execution = 1
    try:
        yield
    finally:
        model.steps_per_execution = steps
        model.predict_function = None


def probabilities(model: Any, images: np.ndarray, model_output: str, batch_size: int = 256) -> np.ndarray:
    """True class probabilities (float64 rows that sum to 1) whether the model ends in softmax or logits."""
    with one_batch_per_call(model):
        outputs = np.asarray(model.predict(images, batch_size=batch_size, verbose=0), dtype=np.float64)
    return softmax(outputs) if model_output == "logits" else outputs


def translate(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``images`` (N, H, W, C) moved ``dy`` pixels down and ``dx`` right; the uncovered border is reflected."""
    pad = max(abs(dy), abs(dx))
    if pad == 0:
        return images
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect" if min(images.shape[1:3]) > 1 else "edge")
    height, width = images.shape[1:3]
    return padded[:, pad - dy: pad - dy + height, pad - dx: pad - dx + width]


def views(images: np.ndarray, mode: str) -> list[np.ndarray]:
    """The views ``mode`` averages over, each shaped like ``images`` (N, H, W, C)."""
    check_tta_mode(mode)
    images = np.asarray(images)
    if images.ndim != 4:
        raise DataError(f"test-time augmentation takes a batch of images (N, H, W, C); got an array of shape {images.shape}.")
    if mode == "none":
        return [images]
    bases = [images, images[:, :, ::-1]]
    if mode == "flip":
        return bases
    shift = TRANSLATE_PIXELS
    return [view for base in bases for view in (base, translate(base, shift, shift), translate(base, -shift, -shift))]


def view_count(mode: str) -> int:
    check_tta_mode(mode)
    return {"none": 1, "flip": 2, "flip_translate": 6}[mode]


def tta_probabilities(model: Any, images: Any, model_output: str, mode: str, batch_size: int = 256) -> np.ndarray:
    """Probabilities (float64, rows sum to 1) averaged over the views of ``mode``; ``images`` may be ``ImageFiles``."""
    check_tta_mode(mode)
    per_image = 4 * int(np.prod(images.shape[1:])) if len(getattr(images, "shape", ())) > 1 else 4
    size = max(1, min(CHUNK, CHUNK_BYTES // max(1, per_image)))
    parts = []
    for start in range(0, len(images), size):
        chunk = np.asarray(images[start: start + size], dtype=np.float32)
        per_view = [probabilities(model, view, model_output, batch_size) for view in views(chunk, mode)]
        parts.append(np.mean(per_view, axis=0))
    if not parts:
        raise DataError("test-time augmentation: there are no images.")
    return np.concatenate(parts)


def tta_scores(model: Any, images: Any, labels: np.ndarray, model_output: str, mode: str, batch_size: int = 256) -> dict[str, Any]:
    """``{mode, views, examples, accuracy, loss}`` of the averaged probabilities against integer ``labels``, and
    ``inference.scores.test_figures`` of them (macro / weighted precision, recall, F1, balanced accuracy).

    ``loss`` is the cross-entropy of the averaged probabilities (clipped at 1e-7), whatever loss
    the model was trained with; ``accuracy`` is top-1.
    """
    labels = np.asarray(labels).astype(np.int64)
    probs = tta_probabilities(model, images, model_output, mode, batch_size)
    chosen = probs[np.arange(len(labels)), labels]
    return {
        "mode": mode,
        "views": view_count(mode),
        "examples": int(len(labels)),
        "accuracy": float(np.mean(probs.argmax(axis=1) == labels)),
        "loss": float(-np.mean(np.log(np.clip(chosen, PROBABILITY_FLOOR, 1.0)))),
        **test_figures(probs, labels),
    }
