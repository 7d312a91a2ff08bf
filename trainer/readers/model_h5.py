"""The training state in a finished run's ``last.h5`` / ``model.h5``, read back for ``--resume`` after completion.

A completed run keeps no checkpoint ``.npz`` (``trainer.run.best``): a resume with more epochs
continues from the last epoch's ``.h5`` (weights and optimizer state, as ``model.save`` wrote
them). The file is untrusted like everything in a run directory: a regular file inside it, at
most ``limit`` bytes (read whole into memory, so HDF5 never opens the path itself), every dataset
stored uncompressed and no bigger than the file, each array the shape the model needs; anything
else is a ``RunDirError`` naming the file.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from trainer.errors import DataError, RunDirError
from trainer.readers import read_bytes


def _refuse(path: Path, reason: str) -> RunDirError:
    return RunDirError(f"{path} is not a model file trainer writes ({reason}); this run cannot be resumed.")


def load_h5_state(model: Any, path: Path, run_dir: Path, *, limit: int, optimizer: bool = True) -> None:
    """Put the weights (and, with ``optimizer``, the optimizer's variables) of ``path`` into ``model``."""
    import h5py

    path = Path(path)
    data = read_bytes(path, limit=limit, folder=run_dir, what="a Keras .h5 model as trainer run writes it")
    try:
        handle = h5py.File(io.BytesIO(data), "r")
    except (OSError, ValueError) as exc:
        raise _refuse(path, str(exc)[:160]) from None
    with handle:
        _check_datasets(handle, path, len(data))
        if "model_weights" not in handle:
            raise _refuse(path, "no model_weights group")
        from keras.src.legacy.saving.legacy_h5_format import load_weights_from_hdf5_group

        try:
            load_weights_from_hdf5_group(handle["model_weights"], model)
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise _refuse(path, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__) from None
        if not optimizer:
            return
        variables = list(model.optimizer.variables)
        group = handle.get("optimizer_weights")
        names = list(group.attrs.get("weight_names", [])) if isinstance(group, h5py.Group) else []
        if len(names) != len(variables):
            raise _refuse(path, f"{len(names)} optimizer arrays, the model's optimizer has {len(variables)}")
        for variable, name in zip(variables, names):
            name = name.decode("utf8") if isinstance(name, bytes) else str(name)
            try:
                value = _read_dataset(group, name, tuple(variable.shape), path)
            except DataError as exc:
                raise _refuse(path, exc.message) from None
            variable.assign(value)


def _read_dataset(group: Any, name: str, shape: tuple[int, ...], path: Path):
    from trainer.readers.decoders import read_h5_dataset

    if name not in group:
        raise _refuse(path, f"optimizer array {name[:80]!r} is missing")
    return read_h5_dataset(group[name], shape, f"{path}: {name[:80]}")


def _check_datasets(handle: Any, path: Path, size: int) -> None:
    """Every dataset stored plainly (no compression filter) and no bigger than the file: nothing expands on reading."""
    import h5py

    problems: list[str] = []

    def visit(name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset) and not problems:
            if item.compression is not None or item.dtype.hasobject or item.dtype.kind not in "biuf":
                problems.append(f"{name[:80]} is compressed or not numbers")
            elif item.size * item.dtype.itemsize > size:
                problems.append(f"{name[:80]} declares more bytes than the file holds")

    handle.visititems(visit)
    if problems:
        raise _refuse(path, problems[0])
