"""Decoders bounded before they allocate (issue 19): zip bombs in .npz, lying .npy headers, image bombs and
foreign image formats, images that go bad while streaming, weights files of another architecture or
missing attributes, image sizes and crops that cannot be, non-UTF-8 file names in predictions; plus
property tests that mutate valid files of every data format and expect one DataError, never another exception.
"""
from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import tiny_config
from tests.datagen import cifar10_members, idx_bytes, write_image_folders, write_mnist_npz
from trainer.errors import BadInputError, ConfigError, DataError


def npy_bytes(shape: tuple[int, ...], descr: str = "|u1", data: bytes = b"") -> bytes:
    """A .npy file's bytes: a version 1.0 header declaring ``shape`` of ``descr``, then ``data`` (which may lie)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def write_npz_members(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return path


def small_members(**replace: bytes) -> dict[str, bytes]:
    members = {
        "x_train": npy_bytes((2, 2, 2), "|u1", bytes(8)),
        "y_train": npy_bytes((2,), "<i8", bytes(16)),
        "x_test": npy_bytes((2, 2, 2), "|u1", bytes(8)),
        "y_test": npy_bytes((2,), "<i8", bytes(16)),
    }
    return {**members, **replace}


def no_traceback(result) -> None:
    assert "Traceback" not in result.output, result.output


# --------------------------------------------------------------------------- 1. .npz members bounded before inflating


def test_an_npz_member_whose_header_declares_terabytes_is_refused_before_allocating(tmp_path):
    from trainer.data.formats import load_npz

    path = write_npz_members(tmp_path / "bomb.npz", small_members(x_train=npy_bytes((10**7, 10**6))))
    with pytest.raises(DataError) as info:
        load_npz(path)
    assert "bomb.npz [x_train]" in info.value.message and "refused before reading" in info.value.message


def test_an_npz_member_that_inflates_past_the_bound_is_refused_from_the_zip_directory(tmp_path, monkeypatch):
    """A real zip bomb: 64 MiB of zeros compress to 64 KiB; the declared size is checked before inflating."""
    import trainer.readers.decoders as decoders
    from trainer.data.formats import load_npz

    zeros = npy_bytes((64, 1024, 1024), "|u1", bytes(64 * 2**20))
    path = write_npz_members(tmp_path / "bomb.npz", small_members(x_train=zeros))
    assert path.stat().st_size < 2**20
    inflated = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: inflated.append(name) or real_open(self, name, *a, **k))
    monkeypatch.setattr(decoders, "array_limit", lambda: 32 * 2**20)
    with pytest.raises(DataError, match=r"bomb.npz \[x_train\]: the archive declares 64.0 MiB.*before inflating"):
        load_npz(path)
    assert inflated == []  # not one member was opened


def test_an_npz_bomb_is_exit_2_from_the_cli(cli, tmp_path, write_config):
    path = write_npz_members(tmp_path / "bomb.npz", small_members(x_train=npy_bytes((10**7, 10**6))))
    result = cli("run", write_config(tiny_config(path)), "--run-dir", tmp_path / "run")
    assert result.exit_code == 2, result.output
    no_traceback(result)
    assert "bomb.npz [x_train]" in result.unwrapped
    assert not (tmp_path / "run").exists()


def test_an_npz_member_with_more_bytes_than_its_header_declares_is_refused(tmp_path):
    from trainer.data.formats import load_npz

    path = write_npz_members(tmp_path / "long.npz", small_members(y_test=npy_bytes((2,), "<i8", bytes(24))))
    with pytest.raises(DataError, match=r"long.npz \[y_test\].*truncated or garbled"):
        load_npz(path)


# --------------------------------------------------------------------------- 2. .npy: header first, then a memory map


def test_a_predict_npy_declaring_more_than_memory_is_refused_by_name(tmp_path):
    from trainer.inference.predict import load_inputs

    path = tmp_path / "huge.npy"
    path.write_bytes(npy_bytes((10**7, 10**6, 28, 1), "<f8"))
    with pytest.raises(DataError) as info:
        load_inputs([path], (28, 28, 1))
    assert str(path) in info.value.message


def test_a_truncated_predict_npy_is_refused_by_name(tmp_path):
    from trainer.inference.predict import load_inputs

    path = tmp_path / "short.npy"
    path.write_bytes(npy_bytes((3, 28, 28), "|u1", bytes(28 * 28)))
    with pytest.raises(DataError, match=r"short.npy.*truncated"):
        load_inputs([path], (28, 28, 1))


def test_a_predict_npy_is_memory_mapped_and_its_shape_checked_before_it_is_read(tmp_path, monkeypatch):
    import trainer.readers.decoders as decoders
    from trainer.inference import predict

    path = tmp_path / "batch.npy"
    np.save(path, np.zeros((5, 28, 28), np.uint8))
    assert isinstance(decoders.open_npy(path), np.memmap)
    with pytest.raises(DataError, match=r"batch.npy: array of shape \(5, 28, 28\) does not fit"):
        predict.load_inputs([path], (32, 32, 1))
    monkeypatch.setattr(decoders, "array_limit", lambda: 4 * 28 * 28 * 4)  # four images as float32
    with pytest.raises(DataError, match=r"batch.npy: 5 images as float32 would take"):
        predict.load_inputs([path], (28, 28, 1))
    monkeypatch.undo()
    assert predict.load_inputs([path], (28, 28, 1)).images.shape == (5, 28, 28, 1)


def test_sample_weights_npy_is_read_through_the_bounded_reader(tmp_path):
    from trainer.config.loading import load_config
    from trainer.run.fit_settings import load_sample_weights

    path = tmp_path / "w.npy"
    path.write_bytes(npy_bytes((10**9, 10**6), "<f8"))
    config = load_config(None, [f"train.sample_weights={path}"])
    with pytest.raises(DataError, match=r"train.sample_weights: .*w.npy"):
        load_sample_weights(config, 10, 0)


# --------------------------------------------------------------------------- 3. images that go bad while streaming


CALLBACK_MODULE = '''
import os
import keras


class DeleteAfterFirstEpoch(keras.callbacks.Callback):
    def __init__(self, victim="", replace=False):
        super().__init__()
        self.victim, self.replace = victim, replace

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            os.remove(self.victim)
            if self.replace:
                with open(self.victim, "wb") as handle:
                    handle.write(b"no longer an image")
'''


def folder_config(path: Path, **data) -> dict:
    config = tiny_config(path, train={"epochs": 3, "batch_size": 8})
    config["data"] = {"dataset": "folder", "path": str(path), "image_size": [10, 12], "validation": "test", **data}
    return config


@pytest.mark.slow
@pytest.mark.parametrize("replace", [False, True], ids=["deleted", "replaced"])
def test_an_image_deleted_or_replaced_while_streaming_fails_the_run_by_name_and_keeps_the_checkpoint(cli, tmp_path, replace):
    images = write_image_folders(tmp_path / "images", classes=("a", "b"), n_per_class=8, size=(12, 10))
    victim = sorted((images / "train" / "a").iterdir())[0]
    project = tmp_path / "project"
    project.mkdir()
    (project / "deleter.py").write_text(CALLBACK_MODULE)
    config = folder_config(images, cache="none")
    config["callbacks"] = [{"name": "deleter:DeleteAfterFirstEpoch", "victim": str(victim), "replace": replace}]
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    result = cli("run", project / "config.yaml", "--run-dir", tmp_path / "run")
    no_traceback(result)
    assert result.exit_code == 1, result.output
    assert str(victim) in result.unwrapped
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and str(victim) in metrics["reason"]
    assert json.loads((tmp_path / "run" / "checkpoint.json").read_text())["epoch"] == 1


def _cut_png(path: Path) -> bytes:
    """A real PNG cut in the middle of its data: a sound header, the pixels cut short."""
    data = path.read_bytes()
    return data[: len(data) // 2]


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["none", "disk", "memory"])
@pytest.mark.parametrize("damage", ["garbage", "cut_png", "not_png"])
def test_an_undecodable_image_is_refused_before_the_run_directory_with_every_cache(cli, tmp_path, write_config, cache, damage):
    """Every cache gives the same exit 2 naming the file, before anything is written (issue 27, class 7)."""
    images = write_image_folders(tmp_path / "images", classes=("a", "b"), n_per_class=8, size=(12, 10), formats=("png",))
    bad = images / "train" / "b" / "zz_bad.png"
    bad.write_bytes({
        "garbage": b"\x89PNG\r\n\x1a\n" + b"garbage" * 10,
        "cut_png": _cut_png(sorted((images / "train" / "a").iterdir())[0]),
        "not_png": b"%!PS-Adobe-3.0 EPSF-3.0\n",
    }[damage])
    result = cli("run", write_config(folder_config(images, cache=cache)), "--run-dir", tmp_path / "run")
    no_traceback(result)
    assert result.exit_code == 2, result.output
    assert str(bad) in result.unwrapped and "cannot decode this image" in result.text
    assert not (tmp_path / "run").exists()


def test_an_undecodable_image_while_evaluating_a_streamed_split_is_a_data_error(tmp_path):
    """Outside a run (trainer eval), the DataError raised inside the tf.data pipeline comes out as itself."""
    from trainer.data.folder import ImageFiles
    from trainer.data.streaming import streamed_batches, surfacing_data_errors

    images = write_image_folders(tmp_path / "images", classes=("a",), n_per_class=4, size=(12, 10), splits=("train",))
    files = sorted((images / "train" / "a").iterdir())
    files[2].write_bytes(b"not an image")
    dataset = streamed_batches(ImageFiles(files, (10, 12), "rgb", "none"), (np.zeros(4, np.int64),), batch_size=2,
                               shuffle=False, seed=0, epoch_variable=None, drop_remainder=False)
    with pytest.raises(DataError, match=str(files[2])):
        with surfacing_data_errors():
            for _ in dataset:
                pass


# --------------------------------------------------------------------------- 4. image decoders bounded


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` greyscale pixels, with a few bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")


def test_the_pixel_bound_holds_even_when_pillows_own_limit_is_switched_off(tmp_path, monkeypatch):
    from PIL import Image

    from trainer.data.folder import decode_image

    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(20_000, 20_000))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # what some libraries do on import
    with pytest.raises(DataError) as info:
        decode_image(path, (8, 8), "grayscale")
    assert str(path) in info.value.message and "20000 x 20000" in info.value.message and "refused" in info.value.message


def test_only_the_documented_image_formats_are_decoded(tmp_path):
    """Pillow picks a decoder by content: an EPS file named .png would run Ghostscript; it is refused unopened."""
    from trainer.data.folder import decode_image

    path = tmp_path / "vector.png"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    with pytest.raises(DataError, match=r"vector.png: cannot decode this image"):
        decode_image(path, (8, 8), "grayscale")
    from PIL import Image

    icon = tmp_path / "icon.png"
    Image.new("L", (8, 8)).save(icon, format="ICO")
    with pytest.raises(DataError, match=r"icon.png: cannot decode this image"):
        decode_image(icon, (8, 8), "grayscale")


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
@pytest.mark.parametrize("fmt", ["png", "jpg", "bmp", "gif", "tif", "webp"])
def test_a_truncated_image_is_one_data_error(tmp_path, fmt, cut):
    from PIL import Image

    from trainer.data.folder import decode_image

    path = tmp_path / f"image.{fmt}"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(DataError, match=str(path)):
        decode_image(path, (8, 8), "rgb")


def test_predict_inputs_use_the_same_bounded_decoder(tmp_path, monkeypatch):
    from PIL import Image

    from trainer.inference.predict import load_inputs

    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(30_000, 30_000))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(DataError, match=r"bomb.png: refused"):
        load_inputs([path], (28, 28, 1))


# --------------------------------------------------------------------------- 5, 6. weights files


@pytest.fixture(scope="module")
def vgg16():
    import keras

    keras.utils.set_random_seed(3)
    return keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))


def write_legacy_h5(model, path: Path, skip_attr: str | None = None) -> Path:
    import h5py

    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        for layer in model.layers:
            group = handle.create_group(layer.name)
            names = [f"{layer.name}_{i}:0".encode() for i in range(len(layer.weights))]
            if not (skip_attr == "weight_names" and layer.name == "block2_conv1"):
                group.attrs["weight_names"] = names
            for name, weight in zip(names, layer.get_weights()):
                group.create_dataset(name.decode(), data=weight)
    return path


def test_a_legacy_weights_file_missing_weight_names_is_refused_by_name(tmp_path, vgg16):
    from trainer.models.vgg16_head import load_backbone_weights

    path = write_legacy_h5(vgg16, tmp_path / "w.h5", skip_attr="weight_names")
    with pytest.raises(BadInputError) as info:
        load_backbone_weights(vgg16, path)
    assert "model.weights" in info.value.message and str(path) in info.value.message
    assert "block2_conv1" in info.value.message and "weight_names" in info.value.message


def test_a_weights_dataset_of_an_absurd_shape_is_refused_before_it_is_read(tmp_path, vgg16):
    import h5py

    from trainer.models.vgg16_head import load_backbone_weights

    path = write_legacy_h5(vgg16, tmp_path / "w.h5")
    with h5py.File(path, "r+") as handle:
        group = handle["block1_conv1"]
        name = group.attrs["weight_names"][0]
        name = name.decode() if isinstance(name, bytes) else str(name)
        del group[name]
        group.create_dataset(name, shape=(10**6, 10**6), dtype="f4", chunks=(1, 1024))  # 4 TB declared, nothing stored
    assert path.stat().st_size < 200 * 2**20
    with pytest.raises(BadInputError, match=r"model.weights: .*w.h5.*block1_conv1.*\(1000000, 1000000\)"):
        load_backbone_weights(vgg16, path)


@pytest.mark.slow
def test_vgg19_weights_do_not_load_into_a_vgg16(tmp_path, vgg16):
    import keras

    from trainer.models.vgg16_head import load_backbone_weights

    vgg19 = keras.applications.VGG19(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = write_legacy_h5(vgg19, tmp_path / "vgg19.h5")
    with pytest.raises(BadInputError) as info:
        load_backbone_weights(vgg16, path)
    assert str(path) in info.value.message and "block3_conv4" in info.value.message
    keras3 = tmp_path / "vgg19.weights.h5"
    vgg19.save_weights(keras3)
    with pytest.raises(BadInputError, match=r"vgg19.weights.h5"):
        load_backbone_weights(vgg16, keras3)


def test_a_vgg16_file_still_loads(tmp_path, vgg16):
    from trainer.models.vgg16_head import load_backbone_weights

    path = write_legacy_h5(vgg16, tmp_path / "w.h5")
    written = vgg16.get_weights()
    vgg16.set_weights([np.zeros_like(w) for w in written])
    try:
        load_backbone_weights(vgg16, path)  # the file's weights, every layer's, back into the model
        loaded = vgg16.get_weights()
    finally:
        vgg16.set_weights(written)  # the module's other tests keep their model
    assert len(loaded) == len(written) == 26 and any(w.any() for w in written)
    for got, want in zip(loaded, written):
        np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- 7, 8. image_size and crop


@pytest.mark.parametrize("size", [[100000, 100000], [16384, 16384], [9000, 9000]])
def test_an_image_size_too_large_to_build_is_refused_naming_the_key(cli, tmp_path, write_config, size):
    images = write_image_folders(tmp_path / "images", classes=("a", "b"), n_per_class=2, size=(12, 10))
    config = folder_config(images, image_size=size)
    result = cli("validate", write_config(config))
    no_traceback(result)
    assert result.exit_code == 2, result.output
    assert "data.image_size" in result.text


def test_image_size_bound_in_the_python_api_too(tmp_path, write_config):
    import trainer

    images = write_image_folders(tmp_path / "images", classes=("a", "b"), n_per_class=2, size=(12, 10))
    with pytest.raises(ConfigError, match="data.image_size"):
        trainer.load_config(write_config(folder_config(images, image_size=[12000, 12000])))


@pytest.mark.parametrize("crop, size", [(28, None), (40, None), (10, [10, 12]), (12, [30, 12])])
def test_a_crop_as_large_as_the_image_is_refused_naming_the_key_and_sizes(cli, tmp_path, write_config, mnist_npz, crop, size):
    if size is None:
        config = tiny_config(None)  # a download: the catalogue knows the size before any file is read
        config["data"]["augment"] = {"crop": crop}
        shown = "28x28"
    else:
        images = write_image_folders(tmp_path / "images", classes=("a", "b"), n_per_class=2, size=(12, 10))
        config = folder_config(images, image_size=size, augment={"crop": crop})
        shown = f"{size[0]}x{size[1]}"
    result = cli("validate", write_config(config))
    no_traceback(result)
    assert result.exit_code == 2, result.output
    assert "data.augment.crop" in result.text and str(crop) in result.text and shown in result.text


def test_a_crop_smaller_than_the_image_is_accepted(cli, write_config, mnist_npz):
    config = tiny_config(mnist_npz)
    config["data"]["augment"] = {"crop": 4}
    assert cli("validate", write_config(config)).exit_code == 0


def test_a_crop_larger_than_array_file_images_is_refused_when_the_data_is_read(cli, tmp_path, write_config):
    """mnist from a file whose images are 8x8: pre-flight cannot know the size, reading the file refuses it."""
    path = write_mnist_npz(tmp_path / "small.npz", n_train=64, n_test=16, seed=0, shape=(8, 8))
    config = tiny_config(path)
    config["data"]["augment"] = {"crop": 8}
    assert cli("validate", write_config(config)).exit_code == 0
    result = cli("run", write_config(config), "--run-dir", tmp_path / "run")
    no_traceback(result)
    assert result.exit_code == 2, result.output
    assert "data.augment.crop: 8" in result.text and "8x8" in result.text and "small.npz" in result.unwrapped
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- 9. non-UTF-8 file names in predictions


def test_prediction_files_write_non_utf8_names_escaped_alike(tmp_path):
    from trainer.inference.predict import display_name, write_predictions

    name = os.fsdecode(b"\xffcat.png")
    shown = display_name(str(tmp_path / name))
    assert shown.endswith("\\xffcat.png") and shown.encode("utf-8")
    record = {"input": str(tmp_path / name), "index": None, "predicted": 1, "name": "b", "probability": 0.5, "top_k": []}
    write_predictions([record], tmp_path / "p.csv")
    write_predictions([record], tmp_path / "p.json")
    assert shown in (tmp_path / "p.csv").read_text(encoding="utf-8")
    assert json.loads((tmp_path / "p.json").read_text(encoding="utf-8"))[0]["input"] == shown


@pytest.mark.slow
def test_predict_on_a_real_non_utf8_file_name(cli, tmp_path, write_config, mnist_npz):
    from PIL import Image

    assert cli("run", write_config(tiny_config(mnist_npz)), "--run-dir", tmp_path / "run").exit_code == 0
    folder = tmp_path / "inputs"
    folder.mkdir()
    raw = os.path.join(os.fsencode(folder), b"\xff\xfe.png")
    Image.new("L", (28, 28)).save(os.fsdecode(raw), format="PNG")
    for output in ("p.csv", "p.json"):
        result = cli("predict", tmp_path / "run", folder, "--output", tmp_path / output)
        no_traceback(result)
        assert result.exit_code == 0, result.output
    text = (tmp_path / "p.csv").read_text(encoding="utf-8")
    assert "\\xff\\xfe.png" in text
    assert json.loads((tmp_path / "p.json").read_text(encoding="utf-8"))[0]["input"].endswith("\\xff\\xfe.png")


# --------------------------------------------------------------------------- property tests: mutated files


def mutate(data: bytes, edits: list[tuple[int, int, int]], cut: int | None) -> bytes:
    """``data`` with bytes overwritten (position, value), runs inserted or deleted, and optionally truncated."""
    buffer = bytearray(data)
    for kind, position, value in edits:
        if not buffer:
            break
        position %= len(buffer)
        if kind == 0:
            buffer[position] = value
        elif kind == 1:
            buffer[position:position] = bytes([value]) * (value % 7 + 1)
        else:
            del buffer[position:position + value % 9 + 1]
    if cut is not None:
        buffer = buffer[: cut % (len(buffer) + 1)]
    return bytes(buffer)


EDITS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2**31), st.integers(0, 255)), min_size=1, max_size=6)
CUTS = st.none() | st.integers(0, 2**31)
MUTATIONS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def valid_npz(tmp_path_factory) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x_train=rng.integers(0, 255, (6, 4, 4), dtype=np.uint8), y_train=np.arange(6) % 3,
                        x_test=rng.integers(0, 255, (3, 4, 4), dtype=np.uint8), y_test=np.arange(3))
    return buffer.getvalue()


def expect_data_error_or_splits(load, path):
    from trainer.data.formats import Splits

    try:
        result = load(path)
    except DataError as exc:
        assert exc.message and "Traceback" not in exc.message
        return
    assert isinstance(result, Splits)


@given(edits=EDITS, cut=CUTS)
@MUTATIONS
def test_mutated_npz_files_are_a_data_error_or_load(valid_npz, tmp_path_factory, edits, cut):
    from trainer.data.formats import load_npz

    path = tmp_path_factory.mktemp("npz") / "data.npz"
    path.write_bytes(mutate(valid_npz, edits, cut))
    expect_data_error_or_splits(load_npz, path)


@given(header=st.fixed_dictionaries({
    "descr": st.sampled_from(["|u1", "<i8", ">f4", "<f8", "|b1", "<U4", "|O", "V8", "<c16", "<M8[s]"]),
    "fortran_order": st.booleans(),
    "shape": st.lists(st.integers(0, 2**40), max_size=5).map(tuple),
}), payload=st.binary(max_size=256))
@MUTATIONS
def test_npz_members_with_any_declared_header_are_a_data_error_or_load(tmp_path_factory, header, payload):
    from trainer.data.formats import load_npz

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    path = write_npz_members(tmp_path_factory.mktemp("npz") / "data.npz", small_members(x_train=buffer.getvalue() + payload))
    expect_data_error_or_splits(load_npz, path)


@given(edits=EDITS, cut=CUTS)
@MUTATIONS
def test_mutated_npy_predict_inputs_are_a_data_error_or_load(tmp_path_factory, edits, cut):
    from trainer.inference.predict import load_inputs

    buffer = io.BytesIO()
    np.save(buffer, np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28))
    path = tmp_path_factory.mktemp("npy") / "x.npy"
    path.write_bytes(mutate(buffer.getvalue(), edits, cut))
    try:
        inputs = load_inputs([path], (28, 28, 1))
    except DataError:
        return
    assert inputs.images.shape[1:] == (28, 28, 1)


@given(edits=EDITS, cut=CUTS, gz=st.booleans())
@MUTATIONS
def test_mutated_idx_files_are_a_data_error_or_load(tmp_path_factory, edits, cut, gz):
    import gzip

    from trainer.data.formats import read_idx

    raw = idx_bytes(np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4))
    data = mutate(gzip.compress(raw) if gz else raw, edits, cut)
    path = tmp_path_factory.mktemp("idx") / "train-images-idx3-ubyte"
    path.write_bytes(data)
    try:
        values = read_idx(path)
    except DataError:
        return
    assert values.nbytes <= len(raw) * 64 + 2**20


@pytest.fixture(scope="module")
def cifar_members() -> dict[str, bytes]:
    return cifar10_members(n_per_batch=2, n_test=2, seed=0)


@given(edits=EDITS, cut=CUTS, member=st.sampled_from(["data_batch_1", "test_batch", "batches.meta"]))
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))  # each example writes and loads a CIFAR folder
def test_mutated_cifar_batches_are_a_data_error_or_load(tmp_path_factory, cifar_members, edits, cut, member):
    from trainer.data.formats import load_cifar

    folder = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py"
    folder.mkdir()
    for name, data in cifar_members.items():
        (folder / name).write_bytes(mutate(data, edits, cut) if name == member else data)
    expect_data_error_or_splits(lambda p: load_cifar(p, "cifar10"), folder)


@pytest.fixture(scope="module")
def valid_images() -> dict[str, bytes]:
    from PIL import Image

    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8))
    encoded = {}
    for fmt in ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM"):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        encoded[fmt] = buffer.getvalue()
    return encoded


@given(edits=EDITS, cut=CUTS, fmt=st.sampled_from(["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM"]),
       mode=st.sampled_from(["rgb", "grayscale"]))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_mutated_images_are_a_data_error_or_decode(tmp_path_factory, valid_images, edits, cut, fmt, mode):
    from trainer.data.folder import decode_image

    path = tmp_path_factory.mktemp("img") / f"image.{fmt.lower()}"
    path.write_bytes(mutate(valid_images[fmt], edits, cut))
    try:
        pixels = decode_image(path, (6, 5), mode)
    except DataError as exc:
        assert str(path) in exc.message
        return
    assert pixels.shape == (6, 5, 3 if mode == "rgb" else 1) and pixels.dtype == np.uint8
