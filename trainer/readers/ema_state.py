"""The ``train.ema`` part of a checkpoint: the average of the weights and its step count, checked before use (NumPy only).

A checkpoint's weights file (``checkpoint-epochNNNN.weights.npz``, bounded by
``trainer.run.checkpoint.read_arrays``) stores the optimizer's variables in order; with
``train.ema`` the average of each averaged weight and an ``int32`` step count are among them
(``trainer.run.ema``). Before any of it is assigned: each average has its weight's shape, a float
dtype and only finite values, and the step count is a whole number from 0 to 2**31 - 1; anything
else is a ``RunDirError`` (exit 2) naming the file, the array and, for an average, the weight.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from trainer.errors import RunDirError

MAX_STEPS = 2**31 - 1  # the step count is an int32 variable


def check_average_state(path: Path | str, stored: Sequence[Any], slots: Sequence[int], weights: Sequence[Any], step_slot: int) -> None:
    """Refuse ``stored`` (the checkpoint's optimizer arrays) unless the averages at ``slots`` and the count at ``step_slot`` are sound.

    ``weights``: the model's variables the averages belong to (their shapes and names).
    """
    import numpy as np

    def refuse(array: int, problem: str) -> RunDirError:
        return RunDirError(f"{path}: optimizer/{array:06d} {problem}; the checkpoint's train.ema state is not one trainer writes, so this run cannot be resumed.")

    needed = max([*slots, step_slot], default=-1)
    if len(stored) <= needed:
        raise RunDirError(f"{path} holds {len(stored)} optimizer arrays, too few for the train.ema state; this run cannot be resumed.")
    for slot, weight in zip(slots, weights):
        value = np.asarray(stored[slot])
        name = f"(the average of {getattr(weight, 'path', 'a weight')})"
        if tuple(value.shape) != tuple(weight.shape):
            raise refuse(slot, f"{name} is {tuple(value.shape)}, but the weight is {tuple(weight.shape)}")
        if value.dtype.kind != "f":
            raise refuse(slot, f"{name} holds {value.dtype} values, not floating-point numbers")
        if not np.all(np.isfinite(value)):
            raise refuse(slot, f"{name} holds NaN or infinite values")
    count = np.asarray(stored[step_slot])
    if count.shape != () or count.dtype.kind not in "iu" or not 0 <= int(count) <= MAX_STEPS:
        raise refuse(step_slot, f"(the step count of the average) is {count.dtype} {count.shape} {count.ravel()[:1].tolist()}, expected one whole number from 0 to {MAX_STEPS}")
