"""Use a finished run on people's own images: collect inputs, convert them as training data was, predict.

Inputs are image files (PNG, JPEG, BMP, GIF), folders of them, and ``.npy`` arrays holding one
image or a batch. Images are converted to the model's input: greyscale or RGB, resized to the
trained size, raw 0..255 pixels (the model scales them itself). ``.npy`` arrays must already
have the trained height and width; they hold raw pixel values 0..255 (uint8, other integers or
floats); a float array whose maximum is <= 1.0 is taken as pixels scaled to 0..1 and multiplied
by 255, with a notice. Nothing here prints.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer.errors import ConfigError, DataError
from trainer.inference.probabilities import probabilities

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
NPY_SUFFIX = ".npy"
OUTPUT_SUFFIXES = (".json", ".csv")
CSV_COLUMNS = ("input", "index", "predicted", "name", "probability")


@dataclass
class Inputs:
    """Images ready for the model plus where each came from."""

    images: np.ndarray  # float32 (N, H, W, C), raw 0..255
    sources: list[tuple[str, int | None]]  # (file, position in an .npy batch or None for an image file)
    notices: list[str] = field(default_factory=list)


def display_name(path: str | Path) -> str:
    """A file name as text that is always valid UTF-8: bytes that are not (``os.fsdecode``'s surrogates) as ``\\xNN``.

    Used for every input name a prediction record carries, so JSON, CSV and the console show the same text.
    """
    import os

    text = os.fspath(path)
    try:
        raw = os.fsencode(text) if isinstance(text, str) else text
    except UnicodeEncodeError:  # a lone surrogate that no file system name decodes to (from the Python API)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def collect_files(paths: list[Path]) -> list[Path]:
    """The image and .npy files named, folders expanded (recursively, sorted); anything else is refused."""
    files: list[Path] = []
    allowed = ", ".join((*IMAGE_SUFFIXES, NPY_SUFFIX))
    from trainer.paths import user_path

    for path in (user_path(p, "input") for p in paths):
        if not path.exists():
            raise DataError(f"input {path} does not exist; expected an image file ({allowed}), a folder of images or a .npy file.")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (*IMAGE_SUFFIXES, NPY_SUFFIX))
            if not found:
                raise DataError(f"input folder {path} holds no image or .npy files; expected files ending in {allowed}.")
            files.extend(found)
        elif path.suffix.lower() in (*IMAGE_SUFFIXES, NPY_SUFFIX):
            files.append(path)
        else:
            raise DataError(f"input {path}: unsupported file type {path.suffix or '(none)'!r}; expected one of {allowed}, or a folder.")
    return files


def load_image(path: Path, input_shape: tuple[int, ...], changes: list[str] | None = None) -> np.ndarray:
    """One image file as uint8 (H, W, C) of the model's shape, decoded exactly as folder datasets are (``changes``: what
    was converted, as ``decode_image`` lists it)."""
    from trainer.data.folder import decode_image

    height, width, channels = input_shape
    return decode_image(path, (height, width), "grayscale" if channels == 1 else "rgb", changes)


def conversion_notice(changes: list[str], images: int, input_shape: tuple[int, ...]) -> list[str]:
    """One notice for a command's image conversions (``"2 of 5 images: colour to greyscale, resized to 28x28"``), or none."""
    if not changes:
        return []
    height, width, channels = input_shape
    counted = {change: changes.count(change) for change in dict.fromkeys(changes)}
    parts = [f"{count} of {images} {'image' if images == 1 else 'images'} {change}" + (f" to {width}x{height}" if change == "resized" else "")
             for change, count in counted.items()]
    return [
        f"converted to what the model takes ({height}x{width}, {'greyscale' if channels == 1 else 'colour'}): {'; '.join(parts)}. "
        "The model still answers with one of its own classes, whatever the picture shows."
    ]


def load_npy(path: Path, input_shape: tuple[int, ...]) -> tuple[np.ndarray, bool, list[str]]:
    """An .npy file as uint8 (N, H, W, C): (images, is_batch, notices). Its shape must fit the model.

    The header is checked first and the data memory-mapped, so a file of any declared size costs
    nothing until its shape fits the model and its images, as float32, fit the decode bound.
    """
    from trainer.readers.decoders import open_npy

    return array_images(open_npy(path), input_shape, str(path))


def array_images(array: np.ndarray, input_shape: tuple[int, ...], source: str) -> tuple[np.ndarray, bool, list[str]]:
    """One image or a batch of raw pixels as uint8 (N, H, W, C): (images, is_batch, notices). Its shape must fit the model."""
    from trainer.data.formats import normalize_images
    from trainer.readers.decoders import check_decoded_size

    height, width, channels = input_shape
    if not isinstance(array, np.ndarray):
        try:
            array = np.asarray(array)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{source}: not an array of pixels ({str(exc)[:160]}); expected a NumPy array of raw 0..255 images.") from None
    image_shapes = [(height, width, channels)] + ([(height, width)] if channels == 1 else [])
    expected = ", ".join(str(s) for s in [*image_shapes, *((None, *s) for s in image_shapes)]).replace("None", "N")
    if tuple(array.shape) in image_shapes:
        batch, is_batch = array[np.newaxis], False
    elif array.ndim >= 3 and tuple(array.shape[1:]) in image_shapes:
        batch, is_batch = array, True
    else:
        raise DataError(
            f"{source}: array of shape {tuple(array.shape)} does not fit the model, which takes {height}x{width} images "
            f"with {channels} channel(s); expected one of {expected}."
        )
    if not (np.issubdtype(batch.dtype, np.number) or batch.dtype == np.bool_):
        raise DataError(f"{source}: holds {batch.dtype} values; expected numbers (raw pixel values 0..255).")
    check_decoded_size(len(batch) * height * width * channels * 4, source, f"{len(batch)} images as float32")
    notices = []
    if np.issubdtype(batch.dtype, np.floating) and batch.size and np.isfinite(batch).all() and batch.max() <= 1.0:
        notices.append(f"{source}: float values are all <= 1.0, so they were read as pixels scaled to 0..1 and multiplied by 255.")
    images = normalize_images(np.asarray(batch).reshape(len(batch), height, width, channels), source)
    return images, is_batch, notices


def inputs_from_array(array: np.ndarray, input_shape: tuple[int, ...]) -> Inputs:
    """A NumPy array of raw 0..255 images (one image or a batch) as model inputs; sources are ``<array>``."""
    if len(input_shape) != 3:
        raise DataError(f"the model takes inputs of shape {input_shape}; trainer predict handles image models (height, width, channels).")
    images, is_batch, notices = array_images(array, input_shape, "<array>")
    if len(images) == 0:
        raise DataError("no images to predict: the array holds no images.")
    return Inputs(images.astype(np.float32), [("<array>", i if is_batch else None) for i in range(len(images))], notices)


def load_inputs(paths: list[Path], input_shape: tuple[int, ...]) -> Inputs:
    """Every input converted to the model's input shape, in the order given (folders sorted)."""
    if len(input_shape) != 3:
        raise DataError(f"the model takes inputs of shape {input_shape}; trainer predict handles image models (height, width, channels).")
    arrays: list[np.ndarray] = []
    sources: list[tuple[str, int | None]] = []
    notices: list[str] = []
    changes: list[str] = []
    files = 0
    for path in collect_files(paths):
        if path.suffix.lower() == NPY_SUFFIX:
            images, is_batch, found = load_npy(path, input_shape)
            notices += found
            arrays.append(images)
            sources += [(display_name(path), i if is_batch else None) for i in range(len(images))]
        else:
            arrays.append(load_image(path, input_shape, changes)[np.newaxis])
            sources.append((display_name(path), None))
            files += 1
    if not arrays or sum(len(a) for a in arrays) == 0:
        raise DataError("no images to predict: the inputs hold no images.")
    from trainer.readers.decoders import check_decoded_size

    count = sum(len(a) for a in arrays)
    check_decoded_size(count * int(np.prod(input_shape)) * 4, "the inputs", f"{count} images as float32")
    notices += conversion_notice(changes, files, input_shape)
    return Inputs(np.concatenate(arrays).astype(np.float32), sources, notices)


def predict_records(run: Any, inputs: Inputs, top_k: int = 3, tta: str = "none") -> list[dict[str, Any]]:
    """One record per image: input, index, predicted class, name, probability and the top K classes.

    ``tta``: average the probabilities over the views of a test-time augmentation mode (``trainer.inference.probabilities``).
    """
    from trainer.config.evaluate import check_tta_mode

    if top_k < 1:
        raise ConfigError(f"--top-k: must be at least 1; got {top_k}")
    if check_tta_mode(tta) == "none":
        probs = probabilities(run.model, inputs.images, run.model_output)
    else:
        from trainer.inference.probabilities import tta_probabilities

        probs = tta_probabilities(run.model, inputs.images, run.model_output, tta)
    k = min(top_k, probs.shape[1])
    records = []
    for (source, index), row in zip(inputs.sources, probs):
        order = np.argsort(-row, kind="stable")[:k]
        best = int(order[0])
        records.append({
            "input": source,
            "index": index,
            "predicted": best,
            "name": run.class_name(best),
            "probability": float(row[best]),
            "top_k": [{"class": int(c), "name": run.class_name(int(c)), "probability": float(row[c])} for c in order],
        })
    return records


def is_predictions_file(path: Path) -> bool:
    """Whether ``path`` holds predictions as ``trainer predict --output`` writes them: the output rule's recogniser.

    JSON: the list of records exactly as ``predictions_text`` begins and ends it; CSV: the exact header line.
    Only those bytes are read, so a file of any size is recognised at once.
    """
    from trainer.readers import starts_and_ends_with

    if Path(path).suffix.lower() == ".json":
        return starts_and_ends_with(path, b'[\n  {\n    "input": ', b"\n  }\n]\n")
    return starts_and_ends_with(path, (",".join(CSV_COLUMNS) + "\n").encode())


def check_output_path(path: Path, *, overwrite: bool = False) -> str:
    """``json`` or ``csv`` from the file's suffix, and the output rule (``trainer.outputs``); checked before any work so a typo costs nothing."""
    from trainer.outputs import check_output_file

    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ConfigError(f"--output {path}: unsupported file type {suffix or '(none)'!r}; expected a .json or .csv file.")
    check_output_file(Path(path), "--output", overwrite=overwrite, is_own=is_predictions_file, expected="a .json or .csv file name")
    return suffix[1:]


def predictions_text(records: list[dict[str, Any]], kind: str) -> str:
    """Records as JSON (everything) or CSV (input, index, predicted, name, probability; cells spreadsheet-safe)."""
    from trainer.outputs import spreadsheet_safe

    records = [{**record, "input": display_name(record["input"])} if isinstance(record.get("input"), str) else record for record in records]
    if kind == "json":
        return json.dumps(records, indent=2) + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for record in records:
        writer.writerow(["" if record[c] is None else (repr(record[c]) if isinstance(record[c], float) else spreadsheet_safe(record[c])) for c in CSV_COLUMNS])
    return buffer.getvalue()


def write_predictions(records: list[dict[str, Any]], path: Path, *, overwrite: bool = False) -> Path:
    """Write records as JSON or CSV (by the suffix) under the output rule: a new file or trainer's own, else only with ``overwrite``."""
    from trainer.outputs import write_file

    kind = check_output_path(path, overwrite=overwrite)
    return write_file(Path(path), predictions_text(records, kind), "--output", overwrite=overwrite, is_own=is_predictions_file,
                      expected="a .json or .csv file name")
