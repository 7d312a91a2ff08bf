"""data.dataset: csv: a table of path,label[,split] rows, read as an untrusted data file (trainer.readers.csv_files).

Fast: the reader and the splits it gives (nothing trains); hostile tables are each one DataError naming file:line.
Slow: a CSV with a split column and one split by fractions train one epoch through the CLI.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import tiny_config
from tests.datagen import write_image_folders
from trainer.config.schema import DataConfig
from trainer.data.loaders import load_data
from trainer.errors import DataError
from trainer.readers.csv_files import FIELD_LIMIT, SHOWN_PROBLEMS, read_image_table

CLASSES = ("cat", "dog", "frog")


@pytest.fixture
def images(tmp_path) -> Path:
    """``tmp_path/data/images/<class>/<class>_00N.png``, 6 per class; the CSV goes in ``tmp_path/data``."""
    root = tmp_path / "data"
    write_image_folders(root, splits=("images",), classes=CLASSES, n_per_class=6, size=(10, 8), formats=("png",))
    return root


def rows(split: bool = False) -> list[str]:
    """``images/cat/cat_000.png,cat[,train]`` rows: images 0-3 train, 4 val, 5 test."""
    out = []
    for name in CLASSES:
        for index in range(6):
            which = ",train" if index < 4 else ",val" if index == 4 else ",test"
            out.append(f"images/{name}/{name}_{index:03d}.png,{name}{which if split else ''}")
    return out


def write_csv(folder: Path, lines: list[str], name: str = "labels.csv", header: str = "path,label", ending: str = "\n") -> Path:
    path = folder / name
    path.write_bytes((ending.join([header, *lines]) + ending).encode())
    return path


def csv_config(path: Path, **keys) -> DataConfig:
    return DataConfig(dataset="csv", path=str(path), image_size=[8, 8], **keys)


# --------------------------------------------------------------------------- what a good table gives


def test_names_become_sorted_classes_and_paths_stay_relative_to_the_csv(images):
    table = read_image_table(write_csv(images, list(reversed(rows()))))
    assert table.class_names == list(CLASSES)
    assert table.names[0] == "images/frog/frog_005.png" and table.paths[0] == str(images / "images/frog/frog_005.png")
    assert table.labels[0] == 2 and table.lines[0] == 2 and table.splits is None


def test_integer_labels_are_class_numbers(images):
    lines = [f"images/cat/cat_00{i}.png,{i % 3}" for i in range(6)]
    table = read_image_table(write_csv(images, lines))
    assert table.class_names == ["0", "1", "2"] and table.labels == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("prefix, ending", [(b"\xef\xbb\xbf", "\n"), (b"", "\r\n"), (b"\xef\xbb\xbf", "\r\n")], ids=["bom", "crlf", "bom-crlf"])
def test_a_byte_order_mark_and_crlf_line_ends_read_like_plain_lines(images, prefix, ending):
    """Excel writes both; they are CSV, not an attack, so they read the same as plain UTF-8 with \\n."""
    path = write_csv(images, rows(split=True), header="path,label,split", ending=ending)
    path.write_bytes(prefix + path.read_bytes())
    table = read_image_table(path)
    assert len(table.paths) == 18 and table.class_names == list(CLASSES)
    assert table.splits.count("train") == 12 and table.splits.count("validation") == 3 and table.lines[-1] == 19


def test_the_split_column_gives_train_validation_and_test(images):
    data = load_data(csv_config(write_csv(images, rows(split=True), header="path,label,split")), seed=0)
    assert data.sizes() == {"train": 12, "validation": 3, "test": 3}
    assert np.bincount(data.y_test).tolist() == [1, 1, 1] and data.test_split is None


def test_without_a_split_column_test_and_validation_are_stratified_fractions(images):
    data = load_data(csv_config(write_csv(images, rows()), test=0.34, validation=0.25), seed=2)
    assert np.bincount(data.y_test).tolist() == [2, 2, 2] and np.bincount(data.y_val).tolist() == [1, 1, 1]
    assert data.sizes() == {"train": 9, "validation": 3, "test": 6}
    assert data.test_split["test"] == 6 and data.test_split["seed"] == 2


def test_a_split_column_with_test_rows_and_data_test_is_ambiguous(images):
    with pytest.raises(DataError, match=r"rows with split test.*ambiguous"):
        load_data(csv_config(write_csv(images, rows(split=True), header="path,label,split"), test=0.1), seed=0)


def test_allow_outside_reads_absolute_and_parent_paths(images, tmp_path):
    inner = images / "tables"
    inner.mkdir()
    lines = [f"../images/cat/cat_000.png,cat", f"{images}/images/dog/dog_000.png,dog"]
    with pytest.raises(DataError):
        read_image_table(write_csv(inner, lines))
    table = read_image_table(write_csv(inner, lines), allow_outside=True)
    assert [Path(path).name for path in table.paths] == ["cat_000.png", "dog_000.png"]


def test_a_linked_data_path_reads_rows_from_the_folder_of_the_file_it_names(images, tmp_path):
    """data.path is the user's own choice: its link is followed (a link *in* a row is still checked)."""
    write_csv(images, rows())
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "table.csv").symlink_to(images / "labels.csv")
    table = read_image_table(tmp_path / "elsewhere" / "table.csv")
    assert table.root == images and len(table.paths) == 18


# --------------------------------------------------------------------------- hostile tables


def _bad(images: Path, case: str) -> tuple[Path, str]:
    """Write the table of ``case``; return it and the ``file:line`` (or file) its message must start with."""
    good = rows()[:3]
    outside = images.parent / "outside.png"
    outside.write_bytes((images / "images/cat/cat_000.png").read_bytes())
    line3 = {
        "dotdot": "../outside.png,cat",
        "absolute": f"{outside},cat",
        "missing": "images/cat/nope.png,cat",
        "empty-label": "images/cat/cat_004.png,",
        "empty-path": ",cat",
        "not-an-image": "labels.csv,cat",
        "too-many-fields": "images/cat/cat_004.png,cat,extra",
        "folder-row": "images/cat.png,cat",
        "duplicate-row": good[0],
    }
    if case in line3:
        if case == "folder-row":
            (images / "images/cat.png").mkdir()
        return write_csv(images, [good[0], line3[case], *good[1:]]), ":3:"
    if case == "symlink-out":
        os.symlink(outside, images / "images/cat/link.png")
        return write_csv(images, [good[0], "images/cat/link.png,cat"]), ":3:"
    if case == "unknown-split":
        return write_csv(images, ["images/cat/cat_000.png,cat,train", "images/cat/cat_001.png,cat,holdout"], header="path,label,split"), ":3:"
    if case == "huge-line":
        return write_csv(images, [good[0], "images/" + "a" * 10_000_000 + ".png,cat"]), ":3:"
    if case == "duplicate-header":
        return write_csv(images, good, header="path,label,label"), ":1:"
    if case == "unknown-column":
        return write_csv(images, good, header="path,lable"), ":1:"
    if case == "no-header":
        return write_csv(images, [], header=""), ""
    if case == "non-utf8":
        path = write_csv(images, good)
        path.write_bytes(path.read_bytes() + "images/cat/caf\u00e9.png,cat\n".encode("latin-1"))
        return path, ":5:"
    if case == "nul":
        path = write_csv(images, good)
        path.write_bytes(path.read_bytes() + b"images/cat/cat_004.png\x00,cat\n")
        return path, ":5:"
    if case == "unclosed-quote":
        return write_csv(images, [good[0], '"images/cat/cat_004.png,cat', *good[1:]]), ":3:"
    if case == "fifo":
        os.mkfifo(images / "labels.csv")
        return images / "labels.csv", ""
    if case == "directory":
        (images / "labels.csv").mkdir()
        return images / "labels.csv", ""
    raise AssertionError(case)


HOSTILE = [
    "dotdot", "absolute", "symlink-out", "missing", "empty-label", "empty-path", "not-an-image", "too-many-fields",
    "folder-row", "duplicate-row", "unknown-split", "huge-line", "duplicate-header", "unknown-column", "no-header",
    "non-utf8", "nul", "unclosed-quote", "fifo", "directory",
]


@pytest.mark.parametrize("case", HOSTILE)
def test_each_hostile_table_is_one_message_naming_file_and_line(images, case):
    path, where = _bad(images, case)
    with pytest.raises(DataError) as error:
        read_image_table(path)
    message = error.value.message
    assert message.startswith(f"{path}{where}"), message[:300]
    assert "\n" not in message and len(message) < 600


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink-out"])
def test_paths_out_of_the_folder_name_the_key_that_allows_them(images, case):
    path, _ = _bad(images, case)
    with pytest.raises(DataError, match="data.allow_outside: true"):
        read_image_table(path)


def test_several_bad_rows_are_listed_one_line_each_up_to_a_few(images):
    lines = [f"images/cat/missing_{i}.png,cat" for i in range(SHOWN_PROBLEMS + 3)]
    path = write_csv(images, lines)
    with pytest.raises(DataError) as error:
        read_image_table(path)
    shown = error.value.message.splitlines()
    assert shown[0] == f"{path}: {SHOWN_PROBLEMS} bad rows (and more; the first are shown):"
    assert [line.strip().split(": ", 1)[0] for line in shown[1:]] == [f"{path}:{n}" for n in range(2, 2 + SHOWN_PROBLEMS)]


def test_a_field_at_the_limit_is_read_and_one_past_it_refused(images):
    name = "/".join(["a" * 200] * 25)[: FIELD_LIMIT - 4] + ".png"
    assert len(name) == FIELD_LIMIT
    with pytest.raises(DataError, match=r":2: the image 'a+\.\.\.' (is missing|cannot be read)") as error:  # parsed, refused by name, shortened
        read_image_table(write_csv(images, [f"{name},cat"]))
    assert len(error.value.message) < 600
    with pytest.raises(DataError, match=rf":2: not a CSV row \(a field longer than {FIELD_LIMIT:,} characters"):
        read_image_table(write_csv(images, [f"a{name},cat"]))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_tables_either_read_or_are_refused_by_name(images, data):
    """Property: any mutation of a valid table reads, or is one DataError naming the file; nothing else escapes."""
    path = write_csv(images, rows(split=True), header="path,label,split")
    original = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(original) - 1))
        kind = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        byte = data.draw(st.integers(0, 255))
        if kind == "flip":
            original[at] = byte
        elif kind == "insert":
            original.insert(at, byte)
        elif len(original) > 1:
            del original[at]
    path.write_bytes(bytes(original))
    try:
        table = read_image_table(path)
    except DataError as error:
        assert error.message.startswith(str(path))
    else:
        assert len(table.paths) == len(table.labels) >= 1


# --------------------------------------------------------------------------- through the CLI


def run_config(path: Path, **data_keys) -> dict:
    return tiny_config(None, data={"dataset": "csv", "path": str(path), "image_size": [8, 8], **data_keys}, train={"epochs": 1, "batch_size": 8})


@pytest.mark.parametrize("case", ["dotdot", "non-utf8", "directory"])
def test_a_hostile_table_stops_the_run_with_exit_2_before_a_run_directory(cli, write_config, images, tmp_path, case):
    path, where = _bad(images, case)
    result = cli("run", write_config(run_config(path, validation=0.2)), "--run-dir", tmp_path / "r")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{path}{where}" in result.unwrapped.replace(" ", "") or f"{path}{where}" in result.text
    assert not (tmp_path / "r").exists()


def test_validate_shows_the_table(cli, write_config, images):
    path = write_csv(images, rows(split=True), header="path,label,split")
    result = cli("validate", write_config(run_config(path)))
    assert result.exit_code == 0
    text = " ".join(result.text.split())  # a long tmp path (pytest-xdist's) may wrap the line
    assert "CSV table: 18 images, 3 classes, split column: train 12, validation 3, test 3" in text, result.text
    squeezed = "".join(result.text.split())  # rich folds a long path anywhere, even inside a word
    assert f"data.path{path}:CSVtable:18images" in squeezed


@pytest.mark.slow
@pytest.mark.parametrize(
    "split_column, data_keys, sizes",
    [
        (True, {}, {"train": 12, "validation": 3, "test": 3}),
        (False, {"test": 0.34, "validation": 0.25}, {"train": 9, "validation": 3, "test": 6}),
    ],
    ids=["split-column", "fractions"],
)
def test_a_csv_dataset_trains_one_epoch(cli, write_config, images, tmp_path, split_column, data_keys, sizes):
    path = write_csv(images, rows(split=split_column), header="path,label,split" if split_column else "path,label")
    result = cli("run", write_config(run_config(path, **data_keys)), "--run-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert f"train {sizes['train']} validation {sizes['validation']} test {sizes['test']}" in result.text
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert manifest["dataset"] == "csv" and manifest["class_names"] == list(CLASSES)
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    assert ("test_split" in manifest) == (not split_column)
    result = cli("eval", tmp_path / "r", "--split", "test")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "eval-test.json").read_text())["examples"] == sizes["test"]
