"""The training state in a checkpoint: model and optimizer variables as ``.npz`` arrays, written and read back.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.errors import RunDirError
from trainer.readers.run_files import FINISHED_WEIGHTS
from trainer.readers.run_files import read_checkpoint_arrays as read_arrays  # what write_arrays wrote, bounded
from trainer.run.rundir import atomic_path


def training_state(model, averager: Any = None) -> dict[str, list[Any]]:
    """Copies of the model's weights and the optimizer's variables (taken on the training thread).

    ``Variable.numpy()`` returns a new array on both backends (TensorFlow copies the buffer, JAX
    ``np.array``s it), so training on does not change what the writer thread is writing. With
    ``averager`` (``train.ema``) the model's weights are the raw ones training continues from.
    """
    weights = averager.raw_weights(model) if averager is not None else [v.numpy() for v in model.weights]
    return {"model": weights, "optimizer": [v.numpy() for v in model.optimizer.variables]}


def load_training_state(model, path: Path, check: Any = None) -> None:
    """Put a checkpoint's weights and optimizer state back (``.weights.npz``; ``.weights.h5`` of version 1).

    ``check(path, optimizer_arrays)``: refuses what the arrays hold before anything is assigned (``train.ema``'s state).
    """
    if path.name in FINISHED_WEIGHTS:  # a completed run: the last epoch's model file (weights and optimizer state)
        from trainer.readers.model_h5 import load_h5_state

        load_h5_state(model, path, path.parent, limit=h5_read_limit(model))
        return
    if path.name.endswith(".weights.h5"):
        if check is not None:  # version 1 checkpoints predate train.ema
            raise RunDirError(f"{path} is a checkpoint from before train.ema (no average of the weights in it); this run cannot be resumed with train.ema.")
        model.load_weights(path)
        return
    groups = read_arrays(path, grouped=True)
    if check is not None:
        check(path, groups.get("optimizer", []))
    for group, variables in (("model", model.weights), ("optimizer", model.optimizer.variables)):
        values = groups.get(group, [])
        if len(values) != len(variables):
            raise RunDirError(f"{path} holds {len(values)} {group} arrays but the model has {len(variables)}; this run cannot be resumed.")
        for variable, value in zip(variables, values):
            if tuple(variable.shape) != tuple(value.shape):
                raise RunDirError(f"{path}: {variable.path} is {tuple(value.shape)} in the checkpoint but {tuple(variable.shape)} in the model.")
            variable.assign(value)


def h5_read_limit(model) -> int:
    """The most bytes a run's own ``.h5`` of ``model`` can take (twice the estimate, plus room for the saved config)."""
    from trainer.run.rundir import h5_size_estimate

    return 2 * h5_size_estimate(model) + 64 * 2**20


def write_arrays(path: Path, groups: dict[str, list[Any]]) -> None:
    """Arrays in order, as an uncompressed ``.npz`` (``model/000000``, ...), written atomically."""
    import numpy as np

    named = {f"{group}/{index:06d}": array for group, arrays in groups.items() for index, array in enumerate(arrays)}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **named)
