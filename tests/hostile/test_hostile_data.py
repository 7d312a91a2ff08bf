"""Data that used to give silently wrong results or a traceback: class-ordered folders, 16-bit and float
images, empty splits, zero-sized images, decompression bombs, lying IDX headers, NUL bytes.

Fast: the loaders are called directly, nothing trains.
"""
from __future__ import annotations

import gzip
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.datagen import write_image_folders, write_mnist_npz
from trainer.config.schema import DataConfig
from trainer.data.loaders import load_data
from trainer.data.selection import select_stratified, split_stratified
from trainer.errors import BadInputError, DataError

# --------------------------------------------------------------------------- stratified selection


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_split_keeps_every_class_in_proportion(seed):
    labels = np.repeat(np.arange(5), [40, 40, 20, 10, 10])  # class order, as a folder listing gives
    held = split_stratified(labels, 0.2, seed)
    assert len(held.chosen) == 24 and len(held.rest) == 96
    assert np.bincount(labels[held.chosen]).tolist() == [8, 8, 4, 2, 2]
    assert sorted(np.concatenate([held.chosen, held.rest]).tolist()) == list(range(120))


def test_selection_is_seeded_and_pure():
    labels = np.repeat(np.arange(3), 10)
    first, again, other = (select_stratified(labels, 9, s).chosen for s in (3, 3, 4))
    assert first.tolist() == again.tolist()
    assert first.tolist() != other.tolist()
    assert np.bincount(labels[first]).tolist() == [3, 3, 3]


def test_uneven_shares_sum_exactly():
    labels = np.array([0] * 7 + [1] * 5 + [2] * 1)
    taken = select_stratified(labels, 4, 0)
    assert len(taken.chosen) == 4 and sum(taken.per_class.values()) == 4
    assert set(labels[taken.chosen].tolist()) >= {0, 1}


@pytest.fixture
def class_folders(tmp_path) -> Path:
    return write_image_folders(tmp_path / "folders", classes=("a", "b", "c", "d"), n_per_class=10, size=(12, 10))


def test_folder_validation_fraction_is_stratified_and_announced(class_folders):
    data = load_data(DataConfig(dataset="folder", path=str(class_folders), validation=0.2, image_size=[10, 12]), seed=1)
    assert np.bincount(data.y_val, minlength=4).tolist() == [2, 2, 2, 2]
    assert np.bincount(data.y_train, minlength=4).tolist() == [8, 8, 8, 8]
    assert any("stratified by class" in n and "data.validation" in n for n in data.notices)


def test_folder_limit_is_stratified_and_announced(class_folders):
    data = load_data(DataConfig(dataset="folder", path=str(class_folders), limit=12, validation="test", image_size=[10, 12]), seed=1)
    assert np.bincount(data.y_train, minlength=4).tolist() == [3, 3, 3, 3]
    assert any("data.limit: 12 of 40" in n and "stratified" in n for n in data.notices)


def test_array_files_hold_out_validation_stratified_even_when_sorted_by_class(tmp_path):
    path = tmp_path / "sorted.npz"
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 20).astype(np.uint8)
    x = rng.integers(0, 255, (200, 28, 28), dtype=np.uint8)
    np.savez(path, x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])
    data = load_data(DataConfig(dataset="mnist", path=str(path), validation=0.2))
    assert np.bincount(data.y_val, minlength=10).tolist() == [4] * 10  # not the last 40 examples (class 8 and 9 only)
    assert any("stratified by class" in n for n in data.notices)


# --------------------------------------------------------------------------- wide images


def _wide_images(folder: Path) -> dict[str, Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    ramp16 = (np.arange(16 * 16).reshape(16, 16) * 257).astype(np.uint16)  # 0..65535
    ramp_float = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
    paths = {}
    for name, array, mode, ext in (
        ("png16", ramp16, None, "png"), ("tif16", ramp16, None, "tif"), ("float01", ramp_float, "F", "tif"),
        ("float255", ramp_float * 255, "F", "tif"),
    ):
        paths[name] = folder / f"{name}.{ext}"
        Image.fromarray(array, mode).save(paths[name]) if mode else Image.fromarray(array).save(paths[name])
    return paths


@pytest.mark.parametrize("name", ["png16", "tif16", "float01", "float255"])
@pytest.mark.parametrize("color_mode", ["grayscale", "rgb"])
def test_16_bit_and_float_images_are_scaled_not_clipped(name, color_mode, tmp_path):
    from trainer.data.folder import decode_image

    path = _wide_images(tmp_path)[name]
    pixels = decode_image(path, (16, 16), color_mode)
    assert pixels.dtype == np.uint8
    assert pixels.min() == 0 and pixels.max() == 255
    assert 120 < pixels.mean() < 135  # a ramp: mid-grey on average (clipping gave ~254, zeroing gave 0)


@pytest.mark.parametrize("values, expected", [((-1.0, 1.0), "values from -1 to 1"), ((0.0, 300.0), "values from 0 to 300"), ((0.0, np.nan), "NaN")])
def test_float_images_outside_a_pixel_range_are_refused_by_name(values, expected, tmp_path):
    from PIL import Image

    from trainer.data.folder import decode_image

    path = tmp_path / "odd.tif"
    Image.fromarray(np.array([[values[0], values[1]]], dtype=np.float32), "F").save(path)
    with pytest.raises(DataError) as info:
        decode_image(path, (1, 2), "grayscale")
    assert str(path) in info.value.message and expected in info.value.message


def test_predict_reads_16_bit_images_as_training_does(tmp_path):
    from trainer.inference.predict import load_inputs

    paths = _wide_images(tmp_path)
    inputs = load_inputs([paths["png16"], paths["tif16"]], (16, 16, 1))
    assert inputs.images.max() == 255 and 120 < inputs.images.mean() < 135


def test_a_decompression_bomb_is_refused_by_name(tmp_path):
    from PIL import Image

    from trainer.data.folder import decode_image

    path = tmp_path / "bomb.png"
    Image.new("L", (1, 1)).save(path)
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 0.4  # the file declares 1 pixel: over the lowered limit it is a bomb (and > 2x: the error form)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(DataError) as info:
                decode_image(path, (8, 8), "grayscale")
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    assert str(path) in info.value.message and "decompression bomb" in info.value.message


def test_a_large_but_not_huge_image_warning_is_refused_too(tmp_path):
    from PIL import Image

    from trainer.data.folder import decode_image

    path = tmp_path / "big.png"
    Image.new("L", (10, 10)).save(path)
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 60  # 100 pixels: over the limit, under twice it (Pillow only warns)
    try:
        with pytest.raises(DataError, match="decompression bomb"):
            decode_image(path, (8, 8), "grayscale")
    finally:
        Image.MAX_IMAGE_PIXELS = previous


# --------------------------------------------------------------------------- empty and zero-sized arrays


@pytest.mark.parametrize(
    "shapes, expected",
    [
        ({"x_test": (0, 28, 28), "y_test": (0,)}, "the test split is empty"),
        ({"x_train": (64, 0, 28), "x_test": (8, 0, 28)}, "dimension of size 0"),
        ({"x_train": (64, 28, 28, 0), "x_test": (8, 28, 28, 0)}, "dimension of size 0"),
    ],
)
def test_empty_splits_and_zero_sized_images_are_refused(shapes, expected, tmp_path):
    arrays = {"x_train": (64, 28, 28), "y_train": (64,), "x_test": (8, 28, 28), "y_test": (8,), **shapes}
    path = tmp_path / "odd.npz"
    np.savez(path, **{k: np.zeros(v, np.uint8) for k, v in arrays.items()})
    with pytest.raises(DataError, match=expected):
        load_data(DataConfig(dataset="mnist", path=str(path)))


def test_an_empty_test_split_is_refused_before_the_run_directory_exists(cli, tmp_path, write_config):
    from tests.conftest import tiny_config

    path = tmp_path / "empty-test.npz"
    np.savez(path, x_train=np.zeros((64, 28, 28), np.uint8), y_train=np.zeros(64, np.uint8),
             x_test=np.zeros((0, 28, 28), np.uint8), y_test=np.zeros(0, np.uint8))
    result = cli("run", write_config(tiny_config(path)), "--run-dir", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert "the test split is empty" in result.output
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- IDX headers


def _idx(header: bytes, payload: bytes = b"") -> bytes:
    return header + payload


IDX_CASES = {
    "zero-dimensions": (bytes([0, 0, 8, 0]), "declares 0 dimensions"),
    "255-dimensions": (bytes([0, 0, 8, 255]) + b"\0" * 1020, "declares 255 dimensions"),
    "overflowing-shape": (bytes([0, 0, 8, 3]) + struct.pack(">III", 2**32 - 1, 2**32 - 1, 2**32 - 1) + b"x" * 16, "truncated or garbled"),
    "product-wraps-int64": (bytes([0, 0, 8, 3]) + struct.pack(">III", 2**32 - 1, 2**32 - 1, 2**31) + b"", "truncated or garbled"),
    "short-header": (bytes([0, 0, 8, 3, 0, 0]), "needing 16 bytes"),
    "extra-payload": (bytes([0, 0, 8, 1]) + struct.pack(">I", 3) + b"abcd", "holds more"),
    "bad-type": (bytes([0, 0, 0x42, 1]), "not an IDX file"),
}


@pytest.mark.parametrize("case", sorted(IDX_CASES))
@pytest.mark.parametrize("gz", [False, True])
def test_malformed_idx_headers_are_refused(case, gz, tmp_path):
    from trainer.data.formats import read_idx

    raw, expected = IDX_CASES[case]
    path = tmp_path / ("f.gz" if gz else "f")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(DataError, match=expected):
        read_idx(path)


def test_a_gzip_bomb_behind_a_small_idx_header_reads_only_the_declared_bytes(tmp_path):
    from trainer.data.formats import read_idx

    path = tmp_path / "bomb.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 10))
        for _ in range(64):
            handle.write(b"\0" * 2**20)
    with pytest.raises(DataError, match="holds more"):
        read_idx(path)


# --------------------------------------------------------------------------- NUL bytes


def test_nul_bytes_in_predict_inputs_are_refused(tmp_path):
    from trainer.inference.predict import load_inputs

    with pytest.raises(BadInputError, match="NUL byte"):
        load_inputs([tmp_path / "a\x00.png"], (28, 28, 1))


def test_a_valid_npz_still_loads(tmp_path):
    data = load_data(DataConfig(dataset="mnist", path=str(write_mnist_npz(tmp_path / "m.npz", n_train=32, n_test=8))))
    assert len(data.x_train) == 32 and len(data.x_test) == 8
