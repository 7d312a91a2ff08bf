"""The reader of ``data.dataset: csv``: a table of ``path,label[,split]`` rows naming image files (stdlib only).

The CSV is an untrusted data file like any other: a regular file (no FIFO, folder or device) of
at most ``TABLE_LIMIT`` bytes and ``MAX_ROWS`` rows, strict UTF-8 (a leading byte-order mark, as
Excel writes, is dropped; ``\\r\\n`` line ends are CSV's own; ``data.path`` may be a link, and
rows are then relative to the folder of the file it names), parsed with Python's ``csv`` module
with every field at most ``FIELD_LIMIT`` characters. Each row names an image by a path relative to
the CSV's folder; an absolute path, a ``..`` part or a link that leads out of that folder is
refused unless ``data.allow_outside: true`` says the table may point anywhere. Every bad row is
one line naming ``file:line``, what was received and what is allowed (the first ``SHOWN_PROBLEMS``
are listed); the images themselves are decoded later by the folder machinery
(``trainer.data.folder``), with its format allow-list and pixel bound.
"""
from __future__ import annotations

import csv
import io
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from trainer.errors import DataError
from trainer.readers import KiB, MiB, read_bytes

TABLE_LIMIT = 64 * MiB  # ~1 million rows of 60-byte lines
MAX_ROWS = 1_000_000
FIELD_LIMIT = 4 * KiB  # PATH_MAX; a label or split is far shorter
MAX_CLASSES = 100_000
SHOWN_PROBLEMS = 5
COLUMNS = ("path", "label", "split")  # path and label required
# split column values -> the split they name (Ultralytics' train/val/test, Keras's validation)
SPLIT_NAMES = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
WHAT = "a CSV of path,label[,split] rows (a header row first; paths relative to the CSV's folder)"
_INTEGER = re.compile(r"[0-9]+")


@dataclass
class ImageTable:
    """The rows of an image CSV, checked: one entry per image, in file order."""

    source: Path  # the CSV file
    root: Path  # its folder: relative paths are taken from here
    names: list[str]  # each path as written in the file
    paths: list[str]  # each image file (root/name, or the absolute path allow_outside permits)
    labels: list[int]  # index into class_names
    class_names: list[str]
    splits: list[str] | None  # train / validation / test per row, or None without a split column
    lines: list[int]  # the line of the file each row came from

    def describe(self) -> str:
        """``120 images, 3 classes, split column: train 80, validation 20, test 20`` (for notices and validate)."""
        text = f"{len(self.paths):,} images, {len(self.class_names)} classes"
        if self.splits is None:
            return f"{text}, no split column"
        counts = {name: self.splits.count(name) for name in ("train", "validation", "test")}
        return f"{text}, split column: " + ", ".join(f"{name} {count:,}" for name, count in counts.items())


def read_image_table(path: Path | str, *, allow_outside: bool = False) -> ImageTable:
    """The CSV at ``path`` parsed and every row checked; a ``DataError`` naming ``file:line`` for each bad row (exit 2)."""
    source = Path(path)
    if source.is_dir():  # read_bytes says so too; this names what a csv dataset expects
        raise DataError(f"{source}: is a folder; dataset: csv expects {WHAT} (dataset: folder reads class folders).")
    # data.path is the user's own choice: a link there is followed, and rows are relative to the folder of the file it names
    real = source.resolve() if source.is_symlink() else source
    data = read_bytes(real, limit=TABLE_LIMIT, folder=real.parent, error=DataError, what=WHAT)
    text = _decode(source, data)
    root = real.parent
    header, rows = _parse(source, text)
    columns = _columns(source, header)
    problems: list[str] = []
    names: list[str] = []
    paths: list[str] = []
    raw_labels: list[str] = []
    splits: list[str] = []
    lines: list[int] = []
    seen: dict[str, int] = {}
    rows_root = _RowsRoot(os.path.abspath(root))
    for line, row in rows:
        if len(problems) > SHOWN_PROBLEMS:
            break
        if len(row) != len(header):
            problems.append(f"{source}:{line}: {len(row)} field(s), expected {len(header)} ({','.join(header)}).")
            continue
        values = {name: row[index].strip() for name, index in columns.items()}
        problem, image = _check_row(values, rows_root, allow_outside)
        if problem is None:
            key = os.path.normpath(image)
            if key in seen:
                problem = f"{_shown(values['path'])} is already listed on line {seen[key]}; each image belongs to one row (and one split)."
            else:
                seen[key] = line
        if problem is not None:
            problems.append(f"{source}:{line}: {problem}")
            continue
        names.append(values["path"])
        paths.append(image)
        raw_labels.append(values["label"])
        splits.append(SPLIT_NAMES[values["split"].lower()] if "split" in columns else "train")
        lines.append(line)
    if problems:
        _raise(source, problems)
    if not paths:
        raise DataError(f"{source}: holds a header but no rows; expected {WHAT}.")
    labels, class_names = _labels(source, raw_labels, lines)
    return ImageTable(source, root, names, paths, labels, class_names, splits if "split" in columns else None, lines)


def _decode(source: Path, data: bytes) -> str:
    """Strict UTF-8 (a leading BOM dropped); a bad byte or a NUL is named with its line."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{source}:{line}: byte {data[exc.start]:#04x} is not UTF-8 text; save the CSV as UTF-8.") from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise DataError(f"{source}:{line}: holds a NUL byte; expected {WHAT}.")
    return text


def _parse(source: Path, text: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line, fields)]) with blank lines left out; bounded fields and rows."""
    previous = csv.field_size_limit()
    csv.field_size_limit(FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, list[str]]] = []
    header: list[str] | None = None
    line = 1
    try:
        for row in reader:
            if all(not field.strip() for field in row):  # a blank line (or only commas)
                line = reader.line_num + 1
                continue
            if header is None:
                header = row
            else:
                if len(rows) >= MAX_ROWS:
                    raise DataError(f"{source}:{line}: more than {MAX_ROWS:,} rows, trainer's limit for a CSV dataset.")
                rows.append((line, row))
            line = reader.line_num + 1
    except csv.Error as exc:
        reason = str(exc)
        if "field larger than field limit" in reason:
            reason = f"a field longer than {FIELD_LIMIT:,} characters (paths, labels and splits are shorter)"
        raise DataError(f"{source}:{line}: not a CSV row ({reason}); expected {WHAT}.") from None
    finally:
        csv.field_size_limit(previous)
    if header is None:
        raise DataError(f"{source}: is empty; expected {WHAT}.")
    return header, rows


def _columns(source: Path, header: list[str]) -> dict[str, int]:
    """The position of path, label and (optional) split; an unknown, repeated or missing column is named."""
    from trainer.catalogue.registry import unknown_choice_message

    columns: dict[str, int] = {}
    for index, raw in enumerate(header):
        name = raw.strip().lower()
        if name not in COLUMNS:
            hint = unknown_choice_message("column", raw.strip(), list(COLUMNS)).split(": ", 1)[1]
            raise DataError(f"{source}:1: the header names column {raw.strip()!r}: {hint}; the header is path,label[,split].")
        if name in columns:
            raise DataError(f"{source}:1: the header names column {name!r} twice (columns {columns[name] + 1} and {index + 1}); each column once: path,label[,split].")
        columns[name] = index
    missing = [name for name in ("path", "label") if name not in columns]
    if missing:
        raise DataError(
            f"{source}:1: the header {','.join(header)!r} has no {' and no '.join(missing)} column; "
            "the first row names the columns: path,label[,split]."
        )
    return columns


def _shown(text: str, limit: int = 120) -> str:
    """A value from the file as it appears in a message: quoted, at most ``limit`` characters."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


class _RowsRoot:
    """The CSV's folder as typed and as resolved, with the resolved form of every folder the rows name (looked up once)."""

    def __init__(self, folder: str):
        self.folder = folder
        real = os.path.realpath(folder)
        self.inside = real.rstrip(os.sep) + os.sep
        self._real_dirs: dict[str, str] = {}

    def real_path(self, image: str) -> str:
        """``image`` with every link in its folders resolved (the folders of 60,000 rows are a handful: cached)."""
        folder, name = os.path.split(image)
        real = self._real_dirs.get(folder)
        if real is None:
            real = self._real_dirs[folder] = os.path.realpath(folder)
        return os.path.join(real, name)


def _check_row(values: dict[str, str], root: _RowsRoot, allow_outside: bool) -> tuple[str | None, str]:
    """(what is wrong with one row, or None; the image file it names).

    Strings and ``os`` calls, no ``pathlib``: one ``lstat`` a row, and a folder's links resolved
    once for all its rows (``Path.resolve`` on each row made 60,000 rows take 19 s; this, 3.4 s at a load of 15 on 2 cores, about what listing the same class folders takes).
    """
    label = values["label"]
    text = values["path"]
    shown = _shown(text)
    if not text:
        return "the path is empty; each row names an image file relative to the CSV's folder.", ""
    if not label:
        return f"the label of {shown} is empty; each row needs a class name or a class number 0..K-1.", ""
    if "split" in values and values["split"].lower() not in SPLIT_NAMES:
        return f"split is {_shown(values['split'], 40)}; allowed: train, val, validation, test.", ""
    if "\x00" in text or len(text) > FIELD_LIMIT:
        return "the path is not a file name.", ""
    outside = "set data.allow_outside: true to read images outside the CSV's folder"
    absolute = os.path.isabs(text) or re.match(r"^[A-Za-z]:[\\/]", text) is not None or text.startswith("\\")
    if absolute and not allow_outside:
        return f"the path {shown} is absolute; paths are relative to the CSV's folder {root.folder} ({outside}).", ""
    if ".." in re.split(r"[\\/]", text) and not allow_outside:
        return f"the path {shown} goes up with '..'; paths stay inside the CSV's folder {root.folder} ({outside}).", ""
    if os.path.splitext(text)[1].lower() not in IMAGE_EXTENSIONS:
        return f"{shown} is not an image file name; allowed extensions: {', '.join(IMAGE_EXTENSIONS)}.", ""
    image = os.path.normpath(os.path.join(root.folder, text))  # an absolute text stays itself
    try:
        info = os.lstat(image)
        real = os.path.realpath(image) if stat.S_ISLNK(info.st_mode) else root.real_path(image)
        if stat.S_ISLNK(info.st_mode):
            info = os.stat(real)  # what the decoder will read
    except FileNotFoundError:
        folder = os.path.dirname(image)
        return f"the image {shown} is missing (no such file in {folder if len(folder) < 200 else root.folder}).", ""
    except OSError as exc:
        return f"the image {shown} cannot be read ({exc.strerror or exc}).", ""
    if not stat.S_ISREG(info.st_mode):
        return f"{shown} is not a regular file (a folder, FIFO, device or socket); each row names an image file.", ""
    if not allow_outside and not real.startswith(root.inside):
        return f"{shown} is a link to {_shown(real)}, outside the CSV's folder {root.folder} ({outside}).", ""
    return None, image


def _labels(source: Path, raw: list[str], lines: list[int]) -> tuple[list[int], list[str]]:
    """Labels as class indices: all whole numbers -> classes 0..max; otherwise class names in sorted order."""
    if all(_INTEGER.fullmatch(label) for label in raw):
        numbers = [int(label) for label in raw]
        largest = max(numbers)
        if largest >= MAX_CLASSES:
            line = lines[numbers.index(largest)]
            raise DataError(
                f"{source}:{line}: label {largest} implies {largest + 1:,} classes, more than the {MAX_CLASSES:,} trainer "
                "trains; integer labels are class numbers 0..K-1."
            )
        return numbers, [str(number) for number in range(largest + 1)]
    class_names = sorted(set(raw))
    if len(class_names) > MAX_CLASSES:
        raise DataError(f"{source}: {len(class_names):,} different labels, more than the {MAX_CLASSES:,} classes trainer trains.")
    index = {name: position for position, name in enumerate(class_names)}
    return [index[label] for label in raw], class_names


def _raise(source: Path, problems: list[str]) -> None:
    shown = problems[:SHOWN_PROBLEMS]
    more = " (and more; the first are shown)" if len(problems) > SHOWN_PROBLEMS else ""
    if len(shown) == 1 and not more:
        raise DataError(shown[0])
    raise DataError(f"{source}: {len(shown)} bad rows{more}:\n" + "\n".join(f"  {text}" for text in shown))
