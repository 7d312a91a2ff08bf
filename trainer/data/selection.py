"""Which examples ``data.limit`` keeps and which ``data.validation: FRACTION`` holds out: stratified by class, seeded.

Pure functions of (labels, count or fraction, seed) returning indices, so the in-memory loaders
and a streaming file list make the same choice. Taking the first files of a class-ordered listing
would leave whole classes out; here every class keeps its share (largest-remainder rounding, so
the total is exact), and which examples of a class are taken is a seeded random choice.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Selection:
    """Indices chosen (sorted, so the original order is kept) and the ones left, plus how many per class."""

    chosen: np.ndarray
    rest: np.ndarray
    per_class: dict[int, int]

    def describe(self) -> str:
        """``5-6 per class (10 classes)`` or ``0: 3, 1: 5`` for a few uneven classes."""
        counts = list(self.per_class.values())
        if not counts:
            return "nothing"
        if len(counts) > 6:
            low, high = min(counts), max(counts)
            return f"{low}{'' if low == high else f'-{high}'} per class ({len(counts)} classes)"
        return ", ".join(f"class {label}: {count}" for label, count in self.per_class.items())


def _shares(sizes: np.ndarray, total: int) -> np.ndarray:
    """``total`` split over classes in proportion to ``sizes`` (largest remainder: sums to ``total`` exactly)."""
    exact = sizes * (total / sizes.sum())
    shares = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - shares), kind="stable")
    shares[order[: total - int(shares.sum())]] += 1
    return np.minimum(shares, sizes)


def select_stratified(labels: np.ndarray, count: int, seed: int | tuple[int, ...], leave_one: bool = False) -> Selection:
    """``count`` indices of ``labels`` with every class in proportion; the same (labels, count, seed) give the same answer.

    ``leave_one``: every class keeps at least one example out of the selection (a class of one
    example is never chosen), so a validation split never takes a class away from training; the
    total may then fall short of ``count``.
    """
    labels = np.asarray(labels)
    if labels.ndim > 1:  # one-hot rows
        labels = labels.argmax(axis=-1)
    count = max(0, min(int(count), len(labels)))
    classes, inverse = np.unique(labels, return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(classes))
    shares = _shares(sizes, count) if len(labels) else np.zeros(0, np.int64)
    if leave_one:
        shares = np.minimum(shares, np.maximum(sizes - 1, 0))
    rng = np.random.default_rng(list(seed) if isinstance(seed, tuple) else seed)
    chosen = []
    per_class = {}
    for position, label in enumerate(classes):
        members = np.flatnonzero(inverse == position)
        picked = rng.permutation(members)[: shares[position]]
        chosen.append(picked)
        per_class[int(label) if np.issubdtype(classes.dtype, np.integer) else label] = int(shares[position])
    chosen_idx = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    rest = np.setdiff1d(np.arange(len(labels)), chosen_idx, assume_unique=True)
    return Selection(chosen_idx.astype(np.int64), rest.astype(np.int64), per_class)


def split_stratified(labels: np.ndarray, fraction: float, seed: int | tuple[int, ...]) -> Selection:
    """Hold out ``round(len * fraction)`` examples for validation (``chosen``), stratified; ``rest`` trains (every class in it)."""
    return select_stratified(labels, int(round(len(labels) * fraction)), seed, leave_one=True)
