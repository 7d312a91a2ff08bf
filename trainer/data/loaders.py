"""Loading a dataset by name: a local copy in a published format, or Keras's download/cache.

Returns NumPy arrays (uint8 images, int64 labels) already split into train / validation / test,
with every label checked against the class range. TensorFlow is imported only for a download.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer.config.schema import DataConfig
from trainer.errors import DataError
from trainer.catalogue.datasets import CSV_DATASET, DATASETS, IMAGE_FILE_DATASETS
from trainer.data.formats import Splits, detect_and_load, normalize_images, normalize_labels
from trainer.data.folder import check_headers, in_memory
from trainer.data.selection import select_stratified, split_stratified


@dataclass
class LoadedData:
    """Arrays for each split plus what the run needs to know about the classes."""

    dataset: str
    num_classes: int
    class_names: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    x_test: np.ndarray | None  # None: the dataset has no test split (a folder without test/, data.test not set)
    y_test: np.ndarray | None
    source: str
    notices: list[str] = field(default_factory=list)
    # data.validation: FRACTION: which rows of the (limited) training examples train (the rest validate), and the
    # split's record (fraction, seed, sizes, digest) that manifest.json keeps and eval --split validation compares
    train_rows: np.ndarray | None = None
    validation_split: dict[str, Any] | None = None
    # data.test: FRACTION: the record of the held-out test split (fraction, seed, sizes, digest of its file names)
    test_split: dict[str, Any] | None = None
    no_test_reason: str = ""  # why there is no test split (x_test None), for messages

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The arrays of ``train``, ``validation`` or ``test``."""
        if name == "train":
            return self.x_train, self.y_train
        if name == "test":
            if self.x_test is None:
                raise DataError(
                    f"there is no test split: {self.no_test_reason or 'the dataset has none'}; the run measured no test "
                    "numbers (--split validation or train can be measured)."
                )
            return self.x_test, self.y_test
        if name == "validation":
            if self.x_val is None:
                raise DataError("there is no validation split: data.validation is none.")
            return self.x_val, self.y_val
        raise DataError(f"unknown split {name!r}; valid: train, validation, test")

    def sizes(self) -> dict[str, int]:
        return {
            "train": len(self.x_train),
            "validation": 0 if self.x_val is None else len(self.x_val),
            "test": 0 if self.x_test is None else len(self.x_test),
        }


def _download(dataset: str) -> Splits:
    """Keras's own loader (download or ``~/.keras/datasets`` cache); failure names ``data.path``."""
    info = DATASETS[dataset]
    try:
        import keras

        loader = getattr(keras.datasets, info.keras_module)
        (x_train, y_train), (x_test, y_test) = loader.load_data()
    except Exception as exc:  # noqa: BLE001 - any download failure becomes one clear message
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"data.path is null, so Keras tried to download {dataset} and failed ({reason[:200]}). "
            f"Set data.path to a local copy: {info.accepted_formats}."
        ) from None
    source = f"keras.datasets.{info.keras_module}"
    return Splits(
        normalize_images(x_train, source),
        normalize_labels(y_train, source),
        normalize_images(x_test, source),
        normalize_labels(y_test, source),
    )


def check_label_range(y: np.ndarray, num_classes: int, what: str) -> None:
    """Labels must be 0..num_classes-1; say the range found and the one expected."""
    if len(y) == 0:
        return
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= num_classes:
        hint = " (labels that start at 1? subtract 1 from them)" if low == 1 and high == num_classes else ""
        raise DataError(
            f"{what}: labels range from {low} to {high}, but {num_classes} classes need labels 0 to {num_classes - 1}{hint}."
        )


LIMIT_STREAM, VALIDATION_STREAM, TEST_STREAM = 0, 1, 2  # independent seeded choices for data.limit, data.validation, data.test


def check_not_empty(x_train: np.ndarray, x_test: np.ndarray | None, source: str) -> None:
    """Refuse empty splits and images with a zero-sized dimension (TensorFlow's native code crashes on them)."""
    for name, x in (("train", x_train), *((("test", x_test),) if x_test is not None else ())):
        if len(x) == 0:
            raise DataError(
                f"{source}: the {name} split is empty (shape {tuple(x.shape)}); "
                f"trainer needs {'training examples' if name == 'train' else 'test examples to measure the model at the end'}."
            )
        if 0 in x.shape[1:]:
            raise DataError(f"{source}: {name} images have shape {tuple(x.shape[1:])}, with a dimension of size 0; each image needs at least one pixel.")


def missing_classes_notice(whole: np.ndarray, taken: np.ndarray, what: str) -> list[str]:
    """Say so when a selection from an array file leaves out classes the whole split has."""
    classes = lambda y: set(np.unique(y.argmax(-1) if y.ndim > 1 else y).tolist())  # noqa: E731
    missing = sorted(classes(whole) - classes(taken)) if len(whole) else []
    if not missing:
        return []
    shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
    return [f"{what} hold no example of class(es) {shown}; the file is ordered by class? shuffle it first."]


def split_record(fraction: float, seed: int, held: Any) -> dict[str, Any]:
    """What manifest.json records of a ``data.validation: FRACTION`` split: enough to tell a different split later."""
    import hashlib

    digest = hashlib.sha256(np.ascontiguousarray(held.chosen, dtype="<i8").tobytes()).hexdigest()
    return {"fraction": fraction, "seed": seed, "validation": int(len(held.chosen)), "train": int(len(held.rest)), "digest": digest}


def test_split_record(fraction: float, seed: int, held: Any, x: Any, y: np.ndarray, root: Any) -> dict[str, Any]:
    """What manifest.json records of a ``data.test: FRACTION`` split; its digest covers the test files' names and labels,
    so ``trainer eval --split test`` refuses when the files (and so the split) changed."""
    import hashlib
    import os

    digest = hashlib.sha256()
    paths = getattr(x, "paths", None)
    for index in held.chosen:
        name = os.path.relpath(str(paths[index]), str(root)) if paths is not None and root is not None else str(int(index))
        digest.update(f"{name}\0{int(y[index])}\n".encode("utf-8", "surrogateescape"))
    return {"fraction": fraction, "seed": seed, "test": int(len(held.chosen)), "train": int(len(held.rest)), "digest": digest.hexdigest()}


def _hold_out_test(config: DataConfig, seed: int, folder: Any, notices: list[str]) -> tuple[Any, dict[str, Any] | None, str]:
    """An image-file dataset's test split: its own (test/ folder, split rows), ``data.test``'s fraction, or none.

    Returns (the splits to use, the test_split record, why there is no test split). The fraction
    is taken first, from all training images, stratified by class with the run's seed, so
    ``data.limit`` and ``data.validation`` choose among the images that are left.
    """
    if folder.x_test is not None:
        if config.test is not None:
            raise DataError(
                f"data.test: {config.path} has its own test split ({_own_test(config)}), so data.test: {config.test} "
                "(a fraction of train) is ambiguous; remove data.test, or the test split from the data."
            )
        return folder, None, ""
    if config.test is None:
        reason = f"{config.path} has {_own_test(config, absent=True)} and data.test is not set"
        notices.append(
            f"no test split: {reason}, so the run reports no test numbers; data.test: 0.1 holds a test split out of "
            "the training images."
        )
        return folder, None, reason
    held = split_stratified(folder.y_train, config.test, (seed, TEST_STREAM))
    if len(held.chosen) < 1 or len(held.rest) < 1:
        raise DataError(
            f"data.test: a fraction of {config.test} of {len(folder.y_train)} images leaves {len(held.chosen)} for test "
            f"and {len(held.rest)} for training; both need at least one."
        )
    record = test_split_record(config.test, seed, held, folder.x_train, folder.y_train, folder.root)
    notices.append(
        f"data.test: {config.test} held out {len(held.chosen)} of {len(folder.y_train)} images for test, stratified by "
        f"class (seed {seed}): {held.describe()}."
    )
    from dataclasses import replace

    folder = replace(
        folder, x_train=folder.x_train[held.rest], y_train=folder.y_train[held.rest],
        x_test=folder.x_train[held.chosen], y_test=folder.y_train[held.chosen],
    )
    return folder, record, ""


def _own_test(config: DataConfig, absent: bool = False) -> str:
    if config.dataset == CSV_DATASET:
        return "no row with split test" if absent else "rows with split test"
    return "no test/ folder" if absent else "a test/ folder"


def load_data(config: DataConfig, seed: int = 0) -> LoadedData:
    """Read the configured dataset and split off validation (and, for image files, test) as ``data`` says."""
    info = DATASETS.get(config.dataset)
    folder = None
    test_split = None
    no_test_reason = ""
    notices: list[str] = []
    if config.dataset in IMAGE_FILE_DATASETS:
        folder = _load_folder(config)
        notices.append(f"{config.path}: {folder.description}.")
        folder, test_split, no_test_reason = _hold_out_test(config, seed, folder, notices)
        splits = Splits(folder.x_train, folder.y_train, folder.x_test, folder.y_test, folder.class_names)
        source = str(config.path)
    elif config.path is None:
        splits = _download(config.dataset)
        source = f"keras.datasets.{info.keras_module}"
    else:
        splits = detect_and_load(Path(config.path), config.dataset)
        source = config.path
    num_classes = info.num_classes if info is not None else len(splits.class_names or [])
    x_train, y_train = splits.x_train, splits.y_train
    notices += list(splits.notices)
    check_not_empty(splits.x_train, splits.x_test, source)
    if config.limit is not None and config.limit < len(x_train):
        if folder is not None:  # class folders are listed class by class: take every class's share
            taken = select_stratified(y_train, config.limit, (seed, LIMIT_STREAM))
            x_train, y_train = x_train[taken.chosen], y_train[taken.chosen]
            notices.append(
                f"data.limit: {config.limit} of {len(splits.y_train)} training images, stratified by class "
                f"(seed {seed}): {taken.describe()}."
            )
        else:  # an array file's order is the file's: keep its first examples, as documented
            x_train, y_train = x_train[: config.limit], y_train[: config.limit]
            notices += missing_classes_notice(splits.y_train, y_train, f"data.limit: the first {config.limit} examples")
    check_label_range(y_train, num_classes, f"{source} (train)")
    if splits.y_test is not None:
        check_label_range(splits.y_test, num_classes, f"{source} (test)")
    if splits.x_test is not None and splits.x_test.shape[1:] != x_train.shape[1:]:
        raise DataError(
            f"{source}: train images are {tuple(x_train.shape[1:])} but test images are {tuple(splits.x_test.shape[1:])}; "
            "both splits must have the same image shape."
        )

    x_val = y_val = None
    train_rows = validation_split = None
    if folder is not None and folder.x_val is not None and config.validation != "none":
        x_val, y_val = folder.x_val, folder.y_val
    elif config.validation == "test" and splits.x_test is None:
        notices.append(
            "data.validation: test, but there is no test split, so nothing is validated while training; "
            "data.validation: 0.1 holds validation out of the training images."
        )
    elif config.validation == "test":
        x_val, y_val = splits.x_test, splits.y_test
    elif isinstance(config.validation, float):
        # Stratified by class and seeded (trainer.data.selection), for class folders and array files alike:
        # every class keeps its share in validation, and the same (labels, fraction, seed) give the same split.
        held = split_stratified(y_train, config.validation, (seed, VALIDATION_STREAM))
        if len(held.chosen) < 1 or len(held.rest) < 1:
            raise DataError(
                f"data.validation: a fraction of {config.validation} of {len(x_train)} training examples "
                f"leaves {len(held.chosen)} for validation and {len(held.rest)} for training; both need at least one."
            )
        x_train, x_val = x_train[held.rest], x_train[held.chosen]
        y_train, y_val = y_train[held.rest], y_train[held.chosen]
        train_rows = held.rest
        validation_split = split_record(config.validation, seed, held)
        notices.append(
            f"data.validation: {config.validation} held out {len(y_val)} of {len(y_val) + len(y_train)} training examples "
            f"for validation, stratified by class (seed {seed}): {held.describe()}."
        )
    if x_val is not None and x_val is splits.x_test:
        notices.append(
            "data.validation: test: validation is the test split, so the model is selected on the test set "
            "(model.h5's epoch by train.monitor, early stopping, a sweep's objective) and its test numbers are not a "
            "held-out estimate; data.validation: 0.1 holds validation out of the training data instead."
        )
    if len(x_train) == 0:
        raise DataError(f"{source}: the training split is empty.")
    if config.augment is not None and config.augment.crop:
        from trainer.config.checks import check_crop

        check_crop(config.augment.crop, tuple(x_train.shape[1:]), f"{source}")
    class_names = splits.class_names or list(info.class_names)
    if info is not None and tuple(x_train.shape[1:]) != tuple(info.image_shape):
        # Allowed (the model adapts to the data), but a sign of a mislabelled file: say so.
        notices.append(
            f"{source}: images are {'x'.join(map(str, x_train.shape[1:]))}, not {'x'.join(map(str, info.image_shape))} "
            f"as in {config.dataset}; training on them as they are (is data.dataset right?)."
        )
    x_test = splits.x_test
    if folder is not None:  # data.cache: memory decodes now, after data.limit and data.validation chose the files
        decoded: dict[int, Any] = {}  # validation: test is the test split itself: decode it once, keep it one object
        for x in (x_train, x_val, x_test):
            if x is not None and id(x) not in decoded:
                check_headers(x)  # disk, none: a bad file is exit 2 naming it before the run starts, as memory's decode gives
                decoded[id(x)] = in_memory(x)
        x_train, x_val, x_test = (None if x is None else decoded[id(x)] for x in (x_train, x_val, x_test))
    return LoadedData(
        config.dataset, num_classes, class_names, x_train, y_train, x_val, y_val,
        x_test, splits.y_test, source, notices, train_rows, validation_split, test_split, no_test_reason,
    )


def _load_folder(config: DataConfig):
    """Class folders or a CSV table under ``data.path``; its own validation split and a fraction in data.validation conflict."""
    from trainer.data.folder import load_folder, load_image_table

    if config.dataset == CSV_DATASET:
        folder = load_image_table(
            Path(config.path), config.image_size, config.color_mode, config.cache, lazy=True, allow_outside=config.allow_outside,
        )
        own = "rows with split val or validation"
    else:
        folder = load_folder(Path(config.path), config.image_size, config.color_mode, config.cache, lazy=True)
        own = f"a {folder.layout.validation.name if folder.layout and folder.layout.validation else 'validation'}/ folder"
    if folder.x_val is not None and isinstance(config.validation, float):
        raise DataError(
            f"data.validation: {config.path} has {own}, so data.validation: {config.validation} "
            f"(a fraction of train) is ambiguous; set data.validation: test to validate on those, or remove them."
        )
    return folder
