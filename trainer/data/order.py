"""The order of each epoch and every per-example random draw: pure functions of (seed, epoch, position), NumPy only.

One definition that the ``tf.data`` pipeline, the ``PyDataset`` batches of the other backends,
the streamed folder path and augmentation all use, so a run sees the same batches and the same
augmentation on every backend, and a resumed run the same as an uninterrupted one. Below every
other module of ``trainer.data`` (docs/architecture.md).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

# Added to the run's seed so the augmentation draws differ from the model's own (dropout, init).
SEED_OFFSET = 7919

# One random number per (example, slot): a change keeps its numbers when another is switched on or off.
# New slots are appended at the end (drawn from a second counter space, see ``example_uniforms``),
# so the first nine keep the numbers runs trained before them drew.
RAND_AUGMENT_MAX_LAYERS = 8
_FIRST_SLOTS = ("flip_h", "flip_v", "rotation", "zoom", "translate_y", "translate_x", "contrast", "crop_y", "crop_x")
_LATER_SLOTS = (
    "erase", "erase_area", "erase_aspect", "erase_y", "erase_x",
    "mix_choice", "mix_lambda", "cutmix_y", "cutmix_x",
    *(f"rand_augment_op_{k}" for k in range(RAND_AUGMENT_MAX_LAYERS)),
    *(f"rand_augment_sign_{k}" for k in range(RAND_AUGMENT_MAX_LAYERS)),
)
SLOTS = {name: index for index, name in enumerate(_FIRST_SLOTS + _LATER_SLOTS)}
_FIRST_STRIDE = len(_FIRST_SLOTS) + 1  # counters of the first slots: position * 10 + slot + 1 (as before the later ones)
_LATER_STRIDE = 64  # counters of the later slots (another key): room to append up to 64 without renumbering
_LATER_KEY = np.uint64(0xD1B54A32D192ED03)
assert len(_LATER_SLOTS) <= _LATER_STRIDE

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective scramble of 64-bit integers (arrays; wrap-around intended)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def example_uniforms(seed: int, epoch: int, positions: np.ndarray, slots: int = len(SLOTS)) -> np.ndarray:
    """Uniform numbers in [0, 1), shape (len(positions), slots): a pure function of (seed, epoch, position, slot)."""
    with np.errstate(over="ignore"):
        key = _mix(np.array([(int(seed) + SEED_OFFSET) % 2**64], dtype=np.uint64) * _GOLDEN + np.uint64(1))
        key = _mix(key ^ (np.array([int(epoch) % 2**64], dtype=np.uint64) + np.uint64(1)) * _GOLDEN)
        positions = np.asarray(positions, dtype=np.uint64)[:, None]
        first = min(slots, len(_FIRST_SLOTS))
        counters = positions * np.uint64(_FIRST_STRIDE) + np.arange(1, first + 1, dtype=np.uint64)[None, :]
        bits = _mix(key ^ _mix(counters * _GOLDEN))
        if slots > first:
            later = positions * np.uint64(_LATER_STRIDE) + np.arange(1, slots - first + 1, dtype=np.uint64)[None, :]
            bits = np.concatenate([bits, _mix(_mix(key ^ _LATER_KEY) ^ _mix(later * _GOLDEN))], axis=1)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


# Added to the run's seed so the epoch order draws differ from augmentation's.
ORDER_SEED_OFFSET = 104729


def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the ``count`` examples in epoch ``epoch``: ``argsort`` of a counter-based uniform draw keyed by (seed, epoch).

    Pure NumPy, no generator state: the one definition both the ``tf.data`` and the ``PyDataset`` paths use.
    """
    keys = example_uniforms(int(seed) + ORDER_SEED_OFFSET, int(epoch), np.arange(int(count)), slots=1)[:, 0]
    return np.argsort(keys, kind="stable").astype(np.int32)


class EpochOrders:
    """``epoch_order(count, seed, epoch)`` for any epoch, the two latest kept (an endless stream's epoch reads two passes;
    thread-safe: parallel batch makers share it)."""

    def __init__(self, count: int, seed: int):
        self.count, self.seed = int(count), int(seed)
        self._kept: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __call__(self, epoch: int) -> np.ndarray:
        epoch = int(epoch)
        with self._lock:
            order = self._kept.get(epoch)
            if order is None:
                order = epoch_order(self.count, self.seed, epoch)
                self._kept = {**{k: v for k, v in self._kept.items() if abs(k - epoch) == 1}, epoch: order}
            return order


@dataclass(frozen=True)
class EpochStream:
    """Where each training step's batch comes from when the input is endless (``train.steps_per_epoch``).

    Step k of epoch N is batch N * steps_per_epoch + k of an endless stream of passes over the
    data, pass p in ``epoch_order(count, seed, p)`` and augmented as pass p: a pure function of
    (seed, N, k), so a resumed run (``initial_epoch``) continues the very stream an uninterrupted
    one reads, and read-ahead cannot change a batch. Keras runs whole executions of
    ``steps_per_execution`` steps, so an epoch reads ``read_per_epoch`` batches (the last
    execution runs on into the next epoch's first batches, which that epoch then reads again).
    """

    steps_per_epoch: int
    batches: int  # in one pass over the data
    initial_epoch: int = 0
    steps_per_execution: int = 1

    @property
    def read_per_epoch(self) -> int:
        return -(-self.steps_per_epoch // self.steps_per_execution) * self.steps_per_execution

    def place(self, epoch: int, step: int) -> tuple[int, int]:
        """(the pass, the batch within it) of step ``step`` of epoch ``epoch``."""
        return divmod(int(epoch) * self.steps_per_epoch + int(step), self.batches)
