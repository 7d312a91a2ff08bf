"""Tests of the dataset file readers in trainer.data.formats and the catalog."""
from __future__ import annotations

import gzip
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.datagen import (
    cifar10_members,
    make_images,
    python2_pickle,
    write_cifar10_dir,
    write_cifar10_targz,
    write_cifar100_dir,
    write_cifar100_targz,
    write_idx,
    write_idx_dir,
    write_image_folders,
    write_mnist_npz,
)
from trainer.catalogue.datasets import DATASETS, get_dataset_info
from trainer.data.formats import (
    Splits,
    check_lengths,
    detect_and_load,
    load_cifar,
    load_idx_dir,
    load_npz,
    normalize_images,
    normalize_labels,
    read_idx,
)
from trainer.errors import ConfigError, DataError

REPO_ROOT = Path(__file__).resolve().parents[2]


def assert_splits_equal(splits: Splits, x_train, y_train, x_test, y_test) -> None:
    for name, got, expected in (
        ("x_train", splits.x_train, x_train),
        ("y_train", splits.y_train, y_train),
        ("x_test", splits.x_test, x_test),
        ("y_test", splits.y_test, y_test),
    ):
        np.testing.assert_array_equal(got, expected, err_msg=name)
    assert splits.x_train.dtype == np.uint8 and splits.x_test.dtype == np.uint8
    assert splits.y_train.dtype == np.int64 and splits.y_test.dtype == np.int64


def save_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def valid_arrays(n_train: int = 12, n_test: int = 4) -> dict[str, np.ndarray]:
    x_train, y_train = make_images(n_train, 3, (8, 8), seed=1)
    x_test, y_test = make_images(n_test, 3, (8, 8), seed=2)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


# --------------------------------------------------------------------------- import cost


def test_importing_formats_and_catalog_does_not_import_tensorflow():
    code = (
        "import sys, trainer.data.formats, trainer.catalogue.datasets; "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------- catalog


def test_catalog_shapes_and_class_names():
    assert set(DATASETS) == {"mnist", "fashion_mnist", "cifar10", "cifar100"}
    for name, info in DATASETS.items():
        assert info.name == name and info.keras_module == name
        assert info.num_classes == len(info.class_names) == len(set(info.class_names))
    assert DATASETS["mnist"].class_names == [str(d) for d in range(10)]
    assert DATASETS["mnist"].image_shape == (28, 28, 1)
    assert DATASETS["fashion_mnist"].class_names[0] == "T-shirt/top"
    assert DATASETS["fashion_mnist"].class_names[-1] == "Ankle boot"
    assert DATASETS["cifar10"].class_names[0] == "airplane"
    assert DATASETS["cifar10"].class_names[-1] == "truck"
    cifar100 = DATASETS["cifar100"].class_names
    assert cifar100 == sorted(cifar100)
    assert cifar100[:4] == ["apple", "aquarium_fish", "baby", "bear"]
    assert DATASETS["cifar100"].image_shape == (32, 32, 3)


def test_catalog_mnist_accepted_formats_text():
    assert DATASETS["mnist"].accepted_formats == (
        "a Keras-format .npz with x_train, y_train, x_test, y_test; "
        "a folder with the four IDX files (gzipped or not)"
    )


def test_unknown_dataset_name_suggests_closest():
    with pytest.raises(ConfigError, match=r"'minst'.*did you mean 'mnist'"):
        get_dataset_info("minst")


# --------------------------------------------------------------------------- normalisation


def test_images_without_channel_axis_get_one():
    x = np.zeros((5, 6, 7), np.uint8)
    assert normalize_images(x, "f").shape == (5, 6, 7, 1)


def test_float_images_in_unit_range_are_scaled_to_255():
    x = np.array([0.0, 0.5, 1.0]).reshape(1, 1, 3, 1)
    np.testing.assert_array_equal(normalize_images(x, "f").ravel(), [0, 128, 255])


def test_float_images_in_0_255_pass_rounded():
    x = np.array([0.0, 12.4, 254.6]).reshape(1, 1, 3, 1)
    np.testing.assert_array_equal(normalize_images(x, "f").ravel(), [0, 12, 255])


def test_wider_integer_images_within_range_are_accepted():
    x = np.array([0, 7, 255], np.int32).reshape(1, 1, 3, 1)
    out = normalize_images(x, "f")
    assert out.dtype == np.uint8 and out.ravel().tolist() == [0, 7, 255]


def test_nan_pixels_are_refused_with_count_and_file():
    x = np.zeros((2, 3, 3), np.float32)
    x[0, 0, 0] = np.nan
    x[1, 2, 2] = np.inf
    with pytest.raises(DataError, match=r"pixels.npz: 2 pixel value\(s\) are NaN or infinite"):
        normalize_images(x, "pixels.npz")


@pytest.mark.parametrize(
    "values, found",
    [(np.array([-3, 10], np.int16), "-3 to 10"), (np.array([0.0, 300.0]), "0.0 to 300.0")],
)
def test_pixels_out_of_range_are_refused_with_range_found(values, found):
    with pytest.raises(DataError, match=f"range from {found}; expected 0..255"):
        normalize_images(values.reshape(1, 1, 2), "f")


def test_images_of_wrong_rank_are_refused():
    with pytest.raises(DataError, match=r"images have shape \(4, 5\)"):
        normalize_images(np.zeros((4, 5), np.uint8), "f")


def test_labels_of_shape_n_by_1_are_flattened():
    y = normalize_labels(np.array([[1], [0], [2]], np.uint8), "f")
    assert y.dtype == np.int64 and y.tolist() == [1, 0, 2]


def test_one_hot_labels_become_indices():
    y = normalize_labels(np.eye(4, dtype=np.float32)[[3, 1, 0]], "f")
    assert y.tolist() == [3, 1, 0]


def test_integral_float_labels_are_accepted_and_fractional_refused():
    assert normalize_labels(np.array([2.0, 0.0]), "f").tolist() == [2, 0]
    with pytest.raises(DataError, match=r"f: 1 label\(s\) are not whole numbers"):
        normalize_labels(np.array([2.0, 0.5]), "f")


@pytest.mark.parametrize(
    "labels",
    [np.zeros((3, 2, 2)), np.array([[0.2, 0.8], [1.0, 0.0]]), np.array([[1, 1], [0, 1]])],
)
def test_other_label_shapes_are_refused_with_shape(labels):
    with pytest.raises(DataError, match=rf"labels have shape \({labels.shape[0]}, "):
        normalize_labels(labels, "f")


def test_check_lengths_names_both_lengths():
    with pytest.raises(DataError, match="x_train has 100 examples but y_train has 99"):
        check_lengths(np.zeros(100), np.zeros(99), "train", "data.npz")
    check_lengths(np.zeros(3), np.zeros(3), "test", "data.npz")


# --------------------------------------------------------------------------- npz


def test_npz_round_trip(tmp_path):
    path = write_mnist_npz(tmp_path / "mnist.npz", n_train=30, n_test=10, seed=3)
    with np.load(path) as raw:
        expected = {key: raw[key] for key in raw.files}
    splits = load_npz(path)
    assert_splits_equal(
        splits,
        expected["x_train"][..., None],
        expected["y_train"],
        expected["x_test"][..., None],
        expected["y_test"],
    )
    assert splits.class_names is None


def test_npz_label_offset(tmp_path):
    splits = load_npz(write_mnist_npz(tmp_path, n_train=20, n_test=10, label_offset=1))
    assert splits.y_train.min() == 1 and splits.y_train.max() == 10


def test_npz_missing_keys_names_missing_and_found(tmp_path):
    arrays = valid_arrays()
    path = save_npz(tmp_path / "partial.npz", x_train=arrays["x_train"], y_train=arrays["y_train"])
    with pytest.raises(DataError) as caught:
        load_npz(path)
    message = str(caught.value)
    assert "partial.npz" in message
    assert "missing key(s) x_test, y_test" in message
    assert "found x_train, y_train" in message


def test_npz_mismatched_lengths(tmp_path):
    arrays = valid_arrays(n_train=12)
    arrays["y_train"] = arrays["y_train"][:11]
    path = save_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=r"bad.npz.*x_train has 12 examples but y_train has 11"):
        load_npz(path)


def test_npz_nan_pixels(tmp_path):
    arrays = valid_arrays()
    x = arrays["x_test"].astype(np.float32)
    x[0, 0, 0] = np.nan
    arrays["x_test"] = x
    with pytest.raises(DataError, match=r"nan.npz \[x_test\]: 1 pixel value\(s\) are NaN"):
        load_npz(save_npz(tmp_path / "nan.npz", **arrays))


def test_npz_scaled_float_images_n1_and_one_hot_labels(tmp_path):
    arrays = valid_arrays()
    expected_x = arrays["x_train"][..., None]
    expected_y = arrays["y_train"]
    arrays["x_train"] = expected_x.astype(np.float64) / 255.0
    arrays["y_train"] = expected_y.reshape(-1, 1)
    arrays["y_test"] = np.eye(3, dtype=np.float32)[arrays["y_test"]]
    splits = load_npz(save_npz(tmp_path / "float.npz", **arrays))
    np.testing.assert_array_equal(splits.x_train, expected_x)
    np.testing.assert_array_equal(splits.y_train, expected_y)
    np.testing.assert_array_equal(splits.y_test, valid_arrays()["y_test"])


def test_npz_object_arrays_are_refused_without_unpickling(tmp_path):
    arrays = valid_arrays()
    arrays["y_train"] = np.array([{"a": 1}] * len(arrays["y_train"]), dtype=object)
    np.savez(tmp_path / "obj.npz", **arrays)  # savez pickles object arrays
    with pytest.raises(DataError, match=r"obj.npz \[y_train\]: holds Python objects"):
        load_npz(tmp_path / "obj.npz")


def test_npz_that_is_not_a_zip(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_text("not a zip")
    with pytest.raises(DataError, match="junk.npz: cannot be read"):
        load_npz(path)


def test_npz_that_is_a_lone_npy_array(tmp_path):
    path = tmp_path / "single.npz"
    with open(path, "wb") as handle:
        np.save(handle, np.zeros((3, 28, 28), dtype=np.uint8))  # np.load would return this array, not an archive
    with pytest.raises(DataError, match="single.npz: cannot be read as a .npz archive .*not a zip"):
        load_npz(path)


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_dir_round_trip(tmp_path, gz):
    folder = write_idx_dir(tmp_path / "mnist", n_train=40, n_test=20, gz=gz, seed=5)
    x_train, y_train = make_images(40, 10, (28, 28), seed=5)
    x_test, y_test = make_images(20, 10, (28, 28), seed=6)
    assert_splits_equal(
        load_idx_dir(folder), x_train[..., None], y_train, x_test[..., None], y_test
    )


def test_read_idx_header_and_values(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "cube-idx3-ubyte", array, gz=False)
    assert path.read_bytes()[:4] == bytes([0, 0, 0x08, 3])
    read = read_idx(path)
    np.testing.assert_array_equal(read, array)
    assert read.flags.writeable


def test_read_idx_other_dtypes_big_endian(tmp_path):
    values = np.array([1.5, -2.0, 3.25], dtype=">f4")
    path = tmp_path / "floats-idx1"
    path.write_bytes(bytes([0, 0, 0x0D, 1]) + (3).to_bytes(4, "big") + values.tobytes())
    np.testing.assert_array_equal(read_idx(path), [1.5, -2.0, 3.25])


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_idx_is_refused_with_expected_and_found(tmp_path, gz):
    folder = write_idx_dir(tmp_path, n_train=10, n_test=5, gz=False)
    images = folder / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    if gz:
        images.with_name(images.name + ".gz").write_bytes(gzip.compress(images.read_bytes()))
        images.unlink()
        images = images.with_name(images.name + ".gz")
    with pytest.raises(DataError) as caught:
        load_idx_dir(folder)
    message = str(caught.value)
    assert str(images) in message
    assert "shape (10, 28, 28)" in message
    assert f"{10 * 28 * 28} bytes" in message and f"holds {10 * 28 * 28 - 100}" in message


def test_garbled_idx_header(tmp_path):
    path = tmp_path / "garbage"
    path.write_bytes(b"\x89PNG not idx")
    with pytest.raises(DataError, match=r"garbage: not an IDX file \(header bytes 89504e47\)"):
        read_idx(path)


def test_truncated_gzip_is_a_data_error(tmp_path):
    path = write_idx(tmp_path / "labels", np.arange(200, dtype=np.uint8), gz=True)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match="labels.gz: cannot be read or decompressed"):
        read_idx(path)


def test_idx_dir_missing_file_names_it(tmp_path):
    folder = write_idx_dir(tmp_path, n_train=10, n_test=5)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"missing IDX file\(s\) t10k-labels-idx1-ubyte"):
        detect_and_load(folder, "mnist")


def test_idx_mismatched_counts(tmp_path):
    folder = write_idx_dir(tmp_path, n_train=10, n_test=5)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8), gz=True)
    with pytest.raises(DataError, match="x_test has 5 examples but y_test has 4"):
        load_idx_dir(folder)


# --------------------------------------------------------------------------- CIFAR


def expected_cifar10(n_per_batch: int, n_test: int, seed: int):
    parts = [make_images(n_per_batch, 10, (32, 32, 3), seed + i) for i in range(1, 6)]
    x_test, y_test = make_images(n_test, 10, (32, 32, 3), seed)
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        x_test,
        y_test,
    )


@pytest.mark.parametrize("where", ["folder", "parent", "targz"])
def test_cifar10_round_trip(tmp_path, where):
    if where == "targz":
        path = write_cifar10_targz(tmp_path, n_per_batch=8, n_test=6, seed=2)
    else:
        folder = write_cifar10_dir(tmp_path, n_per_batch=8, n_test=6, seed=2)
        path = folder if where == "folder" else folder.parent
    splits = load_cifar(path, "cifar10")
    assert_splits_equal(splits, *expected_cifar10(8, 6, 2))
    assert splits.class_names == DATASETS["cifar10"].class_names
    assert splits.x_train.flags.c_contiguous


@pytest.mark.parametrize("where", ["folder", "parent", "targz"])
def test_cifar100_round_trip(tmp_path, where):
    if where == "targz":
        path = write_cifar100_targz(tmp_path / "c.tar.gz", n_train=30, n_test=10, seed=4)
    else:
        folder = write_cifar100_dir(tmp_path, n_train=30, n_test=10, seed=4)
        path = folder if where == "folder" else folder.parent
    splits = detect_and_load(path, "cifar100")
    x_train, y_train = make_images(30, 100, (32, 32, 3), seed=4)
    x_test, y_test = make_images(10, 100, (32, 32, 3), seed=5)
    assert_splits_equal(splits, x_train, y_train, x_test, y_test)
    assert splits.class_names == DATASETS["cifar100"].class_names


def test_cifar_rows_are_channel_first():
    x = np.zeros((1, 32, 32, 3), np.uint8)
    x[0, 0, 1, 2] = 7  # row 0, column 1, blue
    batch = pickle.loads(cifar10_members(1, 1)["test_batch"], encoding="bytes")
    assert batch[b"data"].shape == (1, 3072)
    from tests.datagen import _cifar_rows

    assert _cifar_rows(x)[0, 2 * 1024 + 0 * 32 + 1] == 7


def test_cifar_pickles_look_like_python2_files(tmp_path):
    raw = (write_cifar10_dir(tmp_path, 2, 2) / "data_batch_1").read_bytes()
    assert raw.startswith(b"\x80\x02") and b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    assert b"_codecs" not in raw
    batch = pickle.loads(raw, encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}


def test_cifar_missing_batch_in_folder(tmp_path):
    folder = write_cifar10_dir(tmp_path, 2, 2)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"missing CIFAR file\(s\) data_batch_3"):
        detect_and_load(tmp_path, "cifar10")


def test_cifar_missing_member_in_tarball(tmp_path):
    path = tmp_path / "short.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        archive.add(write_cifar10_dir(tmp_path / "src", 2, 2) / "batches.meta",
                    arcname="cifar-10-batches-py/batches.meta")
    with pytest.raises(
        DataError,
        match=r"short.tar.gz: the archive lacks "
        r"cifar-10-batches-py/data_batch_1",
    ):
        load_cifar(path, "cifar10")


def test_cifar_batch_with_wrong_row_length(tmp_path):
    folder = write_cifar10_dir(tmp_path, 2, 2)
    bad = {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}
    (folder / "test_batch").write_bytes(python2_pickle(bad))
    with pytest.raises(
        DataError,
        match=r"test_batch: data has shape \("
        r"2, 100\); expected \(N, 3072\)",
    ):
        load_cifar(folder, "cifar10")


def test_cifar_batch_missing_labels_key(tmp_path):
    folder = write_cifar100_dir(tmp_path, 5, 5)
    (folder / "test").write_bytes(python2_pickle({b"data": np.zeros((2, 3072), np.uint8)}))
    with pytest.raises(DataError, match=r"test: missing key\(s\) fine_labels; found b'data'"):
        load_cifar(folder, "cifar100")


def test_cifar_pickle_naming_other_globals_is_refused(tmp_path):
    folder = write_cifar10_dir(tmp_path, 2, 2)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": print}, protocol=2))
    with pytest.raises(
        DataError,
        match=r"batches.meta: cannot be unpickled."
        r"*refusing to load __builtin__.print",
    ):
        load_cifar(folder, "cifar10")


def test_cifar_garbled_pickle(tmp_path):
    folder = write_cifar10_dir(tmp_path, 2, 2)
    (folder / "data_batch_2").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="data_batch_2: cannot be unpickled as a CIFAR batch"):
        load_cifar(folder, "cifar10")


def test_cifar_python3_protocol2_pickles_still_load(tmp_path):
    folder = write_cifar10_dir(tmp_path, 2, 2)
    meta = {b"label_names": [name.encode() for name in "abcdefghij"]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))  # bytes via _codecs
    assert load_cifar(folder, "cifar10").class_names == list("abcdefghij")


# --------------------------------------------------------------------------- detection


def test_detect_dispatches_on_what_the_path_is(tmp_path):
    npz = write_mnist_npz(tmp_path / "m.npz", n_train=10, n_test=5)
    idx = write_idx_dir(tmp_path / "idx", n_train=10, n_test=5)
    tgz = write_cifar10_targz(tmp_path / "c.tgz", n_per_batch=2, n_test=2)
    assert detect_and_load(npz, "mnist").x_train.shape == (10, 28, 28, 1)
    assert detect_and_load(idx, "fashion_mnist").x_test.shape == (5, 28, 28, 1)
    assert detect_and_load(tgz, "cifar10").x_train.shape == (10, 32, 32, 3)


def test_detect_missing_path(tmp_path):
    with pytest.raises(
        DataError,
        match=r"nowhere: no such file or folder; fo"
        r"r mnist expected a Keras-format .npz",
    ):
        detect_and_load(tmp_path / "nowhere", "mnist")


def test_detect_unrecognised_folder_lists_found_and_accepted(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError) as caught:
        detect_and_load(tmp_path, "mnist")
    message = str(caught.value)
    assert str(tmp_path) in message
    assert "a folder containing images/, notes.txt" in message
    assert message.endswith(
        "expected a Keras-format .npz with x_train, y_train, x_test, y_test; "
        "a folder with the four IDX files (gzipped or not)."
    )


def test_detect_refuses_formats_of_other_datasets(tmp_path):
    idx = write_idx_dir(tmp_path / "idx", n_train=10, n_test=5)
    with pytest.raises(
        DataError,
        match="not a format accepted for cifar10;"
        " expected .*cifar-10-python.tar.gz",
    ):
        detect_and_load(idx, "cifar10")
    tgz = write_cifar10_targz(tmp_path / "c.tar.gz", n_per_batch=2, n_test=2)
    with pytest.raises(
        DataError,
        match=r"a file named 'c.tar.gz', which i"
        r"s not a format accepted for mnist",
    ):
        detect_and_load(tgz, "mnist")
    with pytest.raises(DataError, match=r"found a folder containing c.tar.gz, idx/, which is not"):
        detect_and_load(tmp_path, "mnist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="found an empty folder"):
        detect_and_load(tmp_path / "empty", "mnist")


def test_detect_single_idx_file_is_refused(tmp_path):
    folder = write_idx_dir(tmp_path, n_train=10, n_test=5)
    with pytest.raises(DataError, match="a file named 'train-images-idx3-ubyte.gz'"):
        detect_and_load(folder / "train-images-idx3-ubyte.gz", "mnist")


# --------------------------------------------------------------------------- generated data


def test_generated_classes_are_separable_by_nearest_centroid():
    x_train, y_train = make_images(300, 10, (28, 28), seed=0)
    x_test, y_test = make_images(100, 10, (28, 28), seed=1)
    flat_train = x_train.reshape(len(x_train), -1).astype(float)
    centroids = np.stack([flat_train[y_train == k].mean(axis=0) for k in range(10)])
    flat_test = x_test.reshape(len(x_test), -1).astype(float)
    distances = ((flat_test[:, None, :] - centroids[None]) ** 2).sum(axis=2)
    assert (distances.argmin(axis=1) == y_test).mean() > 0.95


def test_image_folders_mix_sizes_modes_and_formats(tmp_path):
    from PIL import Image

    root = write_image_folders(tmp_path / "pets", n_per_class=6)
    files = sorted((root / "train" / "dog").iterdir())
    assert {f.suffix for f in files} == {".png", ".jpg", ".bmp"}
    with_images = [Image.open(f) for f in files]
    assert {image.mode for image in with_images} == {"RGB", "L"}
    assert len({image.size for image in with_images}) > 1
    assert sorted(p.name for p in (root / "test").iterdir()) == ["cat", "dog", "frog"]
