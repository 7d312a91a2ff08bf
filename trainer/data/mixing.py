"""Mixup (Zhang et al., 2018) and CutMix (Yun et al., 2019) of a training batch: images and their one-hot targets.

One draw per batch, as timm's default ``mode="batch"``: the batch's partner is the batch reversed
(example i mixes with example n-1-i; the middle one of an odd batch, and a batch of one, with
itself), and one lambda ~ Beta(alpha, alpha) applies to the whole batch:

- mixup: images and targets are ``lambda * own + (1 - lambda) * partner``;
- cutmix: a box of ``sqrt(1 - lambda)`` of each side, centred at a random pixel and clipped to the
  image, is pasted from the partner; the targets' weight is the area actually kept
  (``1 - box area / image area``), as timm corrects it.

With both on, each batch picks one of them with probability 1/2. Every draw comes from the batch's
first position (``trainer.data.order.example_uniforms``), so a batch mixes the same way whatever
ran before it (batches are the same on every backend and after a resume).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def beta_draw(alpha: float, u: float) -> float:
    """One Beta(alpha, alpha) value from the uniform ``u`` in [0, 1) (the key of a one-draw generator)."""
    generator = np.random.Generator(np.random.Philox(key=int(u * 2**53)))
    return float(generator.beta(alpha, alpha))


def cutmix_box(height: int, width: int, lam: float, u_y: float, u_x: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the pasted box: sides sqrt(1 - lam) of the image's, centre drawn, clipped to the image."""
    ratio = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    centre_y = min(int(u_y * height), height - 1)
    centre_x = min(int(u_x * width), width - 1)
    top, bottom = np.clip([centre_y - cut_h // 2, centre_y + cut_h // 2], 0, height)
    left, right = np.clip([centre_x - cut_w // 2, centre_x + cut_w // 2], 0, width)
    return int(top), int(bottom), int(left), int(right)


@dataclass(frozen=True)
class MixPlan:
    """One batch's mix: cutmix or mixup, lambda, the pasted box (top, bottom, left, right) and the targets' weight."""

    cutmix: bool
    lam: float  # mixup's image weight (cutmix: the Beta draw the box was sized from)
    box: tuple[int, int, int, int]  # cutmix's box; (0, 0, 0, 0) for mixup
    target_lambda: float  # the own targets' weight: lam for mixup, the area kept for cutmix


def mix_plan(augment: Any, u_first: np.ndarray, slots: dict[str, int], height: int, width: int) -> MixPlan:
    """The batch's mix from its first example's draws (what ``mix_batch`` applies on the host and the device applies in the step)."""
    use_cutmix = bool(augment.cutmix) and (not augment.mixup or u_first[slots["mix_choice"]] < 0.5)
    alpha = float(augment.cutmix if use_cutmix else augment.mixup)
    lam = beta_draw(alpha, u_first[slots["mix_lambda"]])
    if not use_cutmix:
        return MixPlan(False, lam, (0, 0, 0, 0), lam)
    top, bottom, left, right = cutmix_box(height, width, lam, u_first[slots["cutmix_y"]], u_first[slots["cutmix_x"]])
    return MixPlan(True, lam, (top, bottom, left, right), 1.0 - (bottom - top) * (right - left) / float(height * width))


def mix_batch(images: np.ndarray, targets: np.ndarray, augment: Any, u_first: np.ndarray, slots: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(images, targets) of one batch mixed as ``augment.mixup`` / ``augment.cutmix`` say; ``u_first``: the first example's draws.

    ``images`` float32 (n, h, w, c); ``targets`` one-hot float32 rows (n, classes). Returns new arrays.
    """
    targets = np.asarray(targets, dtype=np.float32)
    if targets.ndim != 2:
        raise ValueError(f"mixup and cutmix mix one-hot targets (batch, classes); got targets of shape {targets.shape}")
    plan = mix_plan(augment, u_first, slots, *images.shape[1:3])
    partner = slice(None, None, -1)
    if plan.cutmix:
        top, bottom, left, right = plan.box
        out = images.copy()
        out[:, top:bottom, left:right] = images[partner][:, top:bottom, left:right]
    else:
        out = np.float32(plan.lam) * images + np.float32(1.0 - plan.lam) * images[partner]
        np.clip(out, 0.0, 255.0, out=out)  # float32 rounding: 255 mixed with 255 can come out as 255.00002
    lam = plan.target_lambda
    mixed = np.float32(lam) * targets + np.float32(1.0 - lam) * targets[partner]
    return out.astype(np.float32, copy=False), mixed
