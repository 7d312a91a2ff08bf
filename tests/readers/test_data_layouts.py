"""Folder datasets where users keep them: train/ + val/ or validation/ (+ test/), one folder of class folders, data.test.

Fast: layouts detected and splits loaded directly (nothing decoded but tiny PNGs). Slow: each layout
trains one epoch through the CLI, and eval --split test of a run without a test split, or whose files changed.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tiny_config
from tests.datagen import write_image_folders
from trainer.config.schema import DataConfig
from trainer.data.folder import detect_layout
from trainer.data.loaders import load_data
from trainer.errors import DataError

CLASSES = ("cat", "dog", "frog")


def splits_folder(root: Path, splits: tuple[str, ...], n_per_class: int = 4) -> Path:
    return write_image_folders(root, splits=splits, classes=CLASSES, n_per_class=n_per_class, size=(10, 8), formats=("png",))


def classes_folder(root: Path, n_per_class: int = 10) -> Path:
    """``root/<class>/<image>``: Keras's image_dataset_from_directory layout."""
    write_image_folders(root / "_all", splits=("x",), classes=CLASSES, n_per_class=n_per_class, size=(10, 8), formats=("png",))
    for folder in (root / "_all" / "x").iterdir():
        shutil.move(str(folder), str(root / folder.name))
    shutil.rmtree(root / "_all")
    return root


def folder_config(path: Path, **keys) -> DataConfig:
    return DataConfig(dataset="folder", path=str(path), image_size=[8, 8], **keys)


# --------------------------------------------------------------------------- layout detection


@pytest.mark.parametrize(
    "splits, validation, test",
    [
        (("train", "test"), None, "test"),
        (("train", "val"), "val", None),
        (("train", "validation"), "validation", None),
        (("train", "val", "test"), "val", "test"),
        (("train",), None, None),
    ],
)
def test_split_layouts_are_detected(tmp_path, splits, validation, test):
    layout = detect_layout(splits_folder(tmp_path / "d", splits, n_per_class=1))
    assert layout.kind == "splits" and layout.train.name == "train"
    assert (layout.validation.name if layout.validation else None) == validation
    assert (layout.test.name if layout.test else None) == test
    assert ("no test/ folder" in layout.describe()) == (test is None)


def test_a_folder_of_class_folders_is_the_class_layout(tmp_path):
    layout = detect_layout(classes_folder(tmp_path / "d", 1))
    assert layout.kind == "classes" and layout.train == tmp_path / "d"


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda root: (splits_folder(root, ("train",), 1), classes_folder(root, 1)), ["ambiguous", "train/", "cat/", "class layout"]),
        (lambda root: splits_folder(root, ("train", "val", "validation"), 1), ["both val/ and validation/"]),
        (lambda root: splits_folder(root, ("test", "val"), 1), ["no train/", "test/"]),
        (lambda root: root.mkdir(), ["holds no subfolders"]),
        (lambda root: None, ["not a folder"]),
    ],
    ids=["train-and-classes", "val-and-validation", "no-train", "empty", "missing"],
)
def test_unreadable_layouts_are_one_message_naming_the_folder(tmp_path, make, expected):
    root = tmp_path / "d"
    make(root)
    with pytest.raises(DataError) as error:
        detect_layout(root)
    message = error.value.message
    assert str(root) in message and "\n" not in message
    for text in expected:
        assert text in message


# --------------------------------------------------------------------------- splits as loaded


def test_train_and_val_validate_on_val_and_have_no_test_split(tmp_path):
    data = load_data(folder_config(splits_folder(tmp_path / "d", ("train", "val"))), seed=0)
    assert data.sizes() == {"train": 12, "validation": 12, "test": 0}
    assert data.x_test is None and data.test_split is None
    assert any(text.startswith("no test split:") and "no test/ folder" in text for text in data.notices)
    with pytest.raises(DataError, match=r"there is no test split: .*no test/ folder"):
        data.split("test")


def test_val_folder_and_a_validation_fraction_are_ambiguous(tmp_path):
    with pytest.raises(DataError, match=r"has a val/ folder.*ambiguous"):
        load_data(folder_config(splits_folder(tmp_path / "d", ("train", "val")), validation=0.2), seed=0)


def test_validation_test_without_a_test_split_validates_nothing_and_says_so(tmp_path):
    data = load_data(folder_config(splits_folder(tmp_path / "d", ("train",))), seed=0)
    assert data.x_val is None and data.x_test is None and data.sizes()["train"] == 12
    assert any("no test split, so nothing is validated" in text for text in data.notices)


def test_class_layout_holds_out_stratified_test_and_validation_fractions(tmp_path):
    root = classes_folder(tmp_path / "d", n_per_class=10)
    data = load_data(folder_config(root, test=0.2, validation=0.25), seed=5)
    assert np.bincount(data.y_test, minlength=3).tolist() == [2, 2, 2]
    assert np.bincount(data.y_val, minlength=3).tolist() == [2, 2, 2]
    assert np.bincount(data.y_train, minlength=3).tolist() == [6, 6, 6]
    assert data.test_split["fraction"] == 0.2 and data.test_split["seed"] == 5
    assert (data.test_split["test"], data.test_split["train"]) == (6, 24) and len(data.test_split["digest"]) == 64
    assert any("data.test: 0.2 held out 6 of 30 images" in text for text in data.notices)
    # every image in exactly one split: the pixels are distinct per image
    rows = [bytes(image) for x in (data.x_train, data.x_val, data.x_test) for image in np.asarray(x)]
    assert len(rows) == 30 and len(set(rows)) == 30


def test_the_test_split_is_seeded_and_its_digest_follows_the_files(tmp_path):
    root = classes_folder(tmp_path / "d", n_per_class=10)
    first, again, other = (load_data(folder_config(root, test=0.2), seed=s).test_split for s in (1, 1, 2))
    assert first == again and first["digest"] != other["digest"]
    shutil.copy(root / "cat" / "cat_000.png", root / "cat" / "cat_100.png")
    assert load_data(folder_config(root, test=0.2), seed=1).test_split["digest"] != first["digest"]


def test_data_test_beside_a_test_folder_is_ambiguous(tmp_path):
    with pytest.raises(DataError, match=r"data.test: .* has its own test split \(a test/ folder\).*ambiguous"):
        load_data(folder_config(splits_folder(tmp_path / "d", ("train", "test")), test=0.1), seed=0)


def test_a_class_layout_without_data_test_has_no_test_split(tmp_path):
    data = load_data(folder_config(classes_folder(tmp_path / "d", 4), validation=0.25), seed=0)
    assert data.x_test is None and data.sizes() == {"train": 9, "validation": 3, "test": 0}


@pytest.mark.parametrize(
    "data_keys, message",
    [
        ({"dataset": "mnist", "test": 0.1}, "mnist has its own test split, so remove data.test"),
        ({"dataset": "folder", "path": "d", "test": 1.0}, "data.test: must be a fraction strictly between 0 and 1"),
        ({"dataset": "folder", "path": "d", "test": True}, "data.test: must be a fraction"),
        ({"dataset": "folder", "path": "d", "tset": 0.1}, "did you mean 'test'?"),
        ({"dataset": "folder", "path": "d", "allow_outside": True}, "allow_outside only applies to dataset: csv"),
    ],
)
def test_data_test_and_allow_outside_are_checked_in_the_config(cli, write_config, data_keys, message):
    result = cli("validate", write_config(tiny_config(None, data=data_keys)))
    assert result.exit_code == 2 and message in result.text and "Traceback" not in result.output


@pytest.mark.parametrize(
    "make, shown",
    [
        (lambda root: splits_folder(root, ("train", "val"), 1), "split folders train/ + val/, each with one subfolder per class; no test/ folder"),
        (lambda root: classes_folder(root, 1), "class folders (DIR/<class>/<image>)"),
        (lambda root: (splits_folder(root, ("train",), 1), classes_folder(root, 1)), "cannot be read:"),
    ],
)
def test_validate_shows_the_layout_it_detected(cli, write_config, tmp_path, make, shown):
    make(tmp_path / "d")
    result = cli("validate", write_config(tiny_config(None, data={"dataset": "folder", "path": str(tmp_path / "d")})))
    assert result.exit_code == 0 and f"data.path {tmp_path / 'd'}: {shown}" in result.text


# --------------------------------------------------------------------------- end to end


def run_config(path: Path, **data_keys) -> dict:
    return tiny_config(None, data={"dataset": "folder", "path": str(path), "image_size": [8, 8], **data_keys}, train={"epochs": 1, "batch_size": 8})


@pytest.mark.slow
@pytest.mark.parametrize(
    "layout, data_keys, sizes, test_split",
    [
        ("train-val", {}, {"train": 12, "validation": 12, "test": 0}, None),
        ("train-val-test", {}, {"train": 12, "validation": 12, "test": 12}, None),
        ("classes", {"test": 0.2, "validation": 0.25}, {"train": 18, "validation": 6, "test": 6}, (6, 24)),
    ],
)
def test_each_layout_trains_one_epoch(cli, write_config, tmp_path, layout, data_keys, sizes, test_split):
    root = tmp_path / "d"
    if layout == "classes":
        classes_folder(root, 10)
    else:
        splits_folder(root, tuple(["train", "val", "test"][: layout.count("-") + 1]))
    result = cli("run", write_config(run_config(root, **data_keys)), "--run-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert f"train {sizes['train']} validation {sizes['validation']}" in result.text
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["class_names"] == list(CLASSES)
    if sizes["test"]:
        assert f"test {sizes['test']}" in result.text and 0.0 <= metrics["test"]["accuracy"] <= 1.0
    else:
        assert "test none (no test split)" in result.text and "none (the data has no test split)" in result.text
        assert metrics["status"] == "completed" and not metrics.get("test")
    if test_split is None:
        assert "test_split" not in manifest
    else:
        assert (manifest["test_split"]["test"], manifest["test_split"]["train"]) == test_split


@pytest.mark.slow
def test_a_run_without_a_test_split_skips_tta_and_eval_names_the_missing_folder(cli, write_config, tmp_path):
    root = splits_folder(tmp_path / "d", ("train", "val"))
    config = run_config(root)
    config["evaluate"] = {"tta": "flip"}
    result = cli("run", write_config(config), "--run-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert not metrics.get("test") and not metrics.get("test_tta")
    result = cli("eval", tmp_path / "r", "--split", "test")
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert "there is no test split" in result.text and f"{root} has no test/ folder" in result.text
    assert len(" ".join(lines)) == len(result.text)  # one message (Rich may wrap it)
    assert cli("eval", tmp_path / "r", "--split", "validation").exit_code == 0
    # a fraction set only for eval would measure images the model trained on
    result = cli("eval", tmp_path / "r", "--split", "test", "--set", "data.test=0.2")
    assert result.exit_code == 2 and "takes images the model trained on" in result.text


@pytest.mark.slow
def test_eval_split_test_rederives_the_fraction_and_refuses_changed_files(cli, write_config, tmp_path):
    root = classes_folder(tmp_path / "d", 10)
    assert cli("run", write_config(run_config(root, test=0.2, validation=0.2)), "--run-dir", tmp_path / "r").exit_code == 0
    result = cli("eval", tmp_path / "r", "--split", "test")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "eval-test.json").read_text())["examples"] == 6
    shutil.copy(root / "dog" / "dog_000.png", root / "dog" / "dog_100.png")
    result = cli("eval", tmp_path / "r", "--split", "test")
    assert result.exit_code == 2 and "--split test: the run held out data.test 0.2 with seed 1" in result.text


@pytest.mark.parametrize(
    "test_split, ok",
    [
        ({"fraction": 0.2, "seed": 1, "test": 6, "train": 24, "digest": "a" * 64}, True),
        ({"fraction": 1.5, "seed": 1, "test": 6, "train": 24, "digest": "a" * 64}, False),
        ({"fraction": 0.2, "seed": 1, "validation": 6, "train": 24, "digest": "a" * 64}, False),
        ({"fraction": 0.2, "seed": 1, "test": 6, "train": 24, "digest": "not hex"}, False),
        ("0.2", False),
    ],
)
def test_manifest_test_split_is_typed(test_split, ok):
    from trainer.errors import RunDirError
    from trainer.readers.records import Manifest

    data = {"dataset": "folder", "num_classes": 3, "class_names": list(CLASSES), "input_shape": [8, 8, 3], "test_split": test_split}
    if ok:
        assert Manifest.from_dict(data).to_dict()["test_split"] == test_split
    else:
        with pytest.raises(RunDirError, match="test_split is .*expected \\{fraction"):
            Manifest.from_dict(data)
