"""Image files as datasets: class folders in one of two layouts, or a CSV table of files, decoded with Pillow.

Folder layouts (``detect_layout``): ``DIR/train/<class>/`` with ``val/`` or ``validation/`` and
``test/`` beside it, each optional (Ultralytics' train/val/test, and trainer's train/test); or
``DIR/<class>/<image>`` (Keras's ``image_dataset_from_directory``), whose validation and test
splits are fractions (``data.validation``, ``data.test``). A CSV (``data.dataset: csv``,
``trainer.readers.csv_files``) names its files and labels row by row. Either way the files
become ``ImageFiles`` below.

Every image is decoded, converted to ``color_mode`` and resized to ``image_size``. A split is
either held in memory as one uint8 array (N, H, W, C) like the other readers return
(``data.cache: memory``), or kept as its list of files (``ImageFiles``), which the input
pipeline decodes as it streams (``disk``, ``none``): memory then does not grow with the number
of images.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.errors import DataError
from trainer.catalogue.datasets import FOLDER_DEFAULT_COLOR_MODE as DEFAULT_COLOR_MODE
from trainer.catalogue.datasets import FOLDER_DEFAULT_IMAGE_SIZE as DEFAULT_IMAGE_SIZE

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
PIL_MODES = {"rgb": "RGB", "grayscale": "L"}


@dataclass
class FolderSplits:
    """The splits of an image-file dataset; ``x_val`` is None without a val/ or validation/ folder (or split rows),
    ``x_test`` None without a test/ folder (or split rows)."""

    class_names: list[str]
    x_train: "np.ndarray | ImageFiles"
    y_train: np.ndarray
    x_test: "np.ndarray | ImageFiles | None"
    y_test: np.ndarray | None
    x_val: "np.ndarray | ImageFiles | None" = None
    y_val: np.ndarray | None = None
    layout: "FolderLayout | None" = None
    root: Path | None = None  # file names are recorded relative to this folder (test_split's digest)
    description: str = ""  # the layout in words, for the run's notices and trainer validate


SPLIT_FOLDERS = ("train", "val", "validation", "test")
VALIDATION_FOLDERS = ("validation", "val")


@dataclass(frozen=True)
class FolderLayout:
    """How a dataset folder is laid out: ``splits`` (train/ with optional val|validation/ and test/) or ``classes``."""

    kind: str  # "splits" or "classes"
    train: Path  # splits: DIR/train; classes: DIR itself
    validation: Path | None = None
    test: Path | None = None

    def describe(self) -> str:
        if self.kind == "classes":
            return "class folders (DIR/<class>/<image>); validation and test are fractions of them (data.validation, data.test)"
        found = ["train/", *([f"{self.validation.name}/"] if self.validation else []), *(["test/"] if self.test else [])]
        absent = "" if self.test else "; no test/ folder"
        return f"split folders {' + '.join(found)}, each with one subfolder per class{absent}"


def describe_layout(data_config: Any) -> str | None:
    """What ``trainer validate`` says of an image-file dataset's ``data.path``: its layout, or why it cannot be read.

    None for other datasets and for a path that does not exist (yet); a CSV is read and every row
    checked (its images are not decoded).
    """
    from trainer.catalogue.datasets import CSV_DATASET, IMAGE_FILE_DATASETS

    if data_config.dataset not in IMAGE_FILE_DATASETS or data_config.path is None or not os.path.lexists(data_config.path):
        return None
    try:
        if data_config.dataset == CSV_DATASET:
            from trainer.readers.csv_files import read_image_table

            return f"CSV table: {read_image_table(Path(data_config.path), allow_outside=data_config.allow_outside).describe()}"
        return detect_layout(Path(data_config.path)).describe()
    except DataError as error:
        return f"cannot be read: {error.message}"


def _subfolders(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise DataError(f"{path}: cannot be listed ({exc.strerror or exc}).") from None


def _holds_images(folder: Path) -> bool:
    """Whether ``folder`` directly holds an image file (stops at the first)."""
    try:
        with os.scandir(folder) as entries:
            return any(
                entry.name.lower().endswith(IMAGE_EXTENSIONS) and not entry.name.startswith(".") and entry.is_file()
                for entry in entries
            )
    except OSError:
        return False


def detect_layout(path: Path) -> FolderLayout:
    """The layout of a folder dataset, or a DataError naming what was found and the two layouts allowed.

    ``train/`` (optionally with ``val/`` or ``validation/`` and ``test/``) is the split layout;
    a folder whose subfolders are all class folders, none named train, val, validation or test,
    is the class layout. ``train/`` beside folders of images is both at once and refused.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(
            f"{path}: not a folder; dataset: folder expects a folder holding train/ (+ val/ or validation/, test/) "
            "or one subfolder of images per class."
        )
    subfolders = _subfolders(path)
    named = {p.name: p for p in subfolders if p.name in SPLIT_FOLDERS}
    others = [p for p in subfolders if p.name not in SPLIT_FOLDERS]
    if "train" in named:
        classes = [p.name for p in others if _holds_images(p)]
        if classes:
            shown = ", ".join(f"{name}/" for name in classes[:5]) + (" ..." if len(classes) > 5 else "")
            raise DataError(
                f"{path}: is ambiguous: it holds train/ (the split layout: train/<class>/) and class folders of images "
                f"({shown}; the class layout: <class>/<image>); move those into train/ or train/ out of the folder."
            )
        if "val" in named and "validation" in named:
            raise DataError(f"{path}: holds both val/ and validation/; keep one validation folder.")
        validation = named.get("validation") or named.get("val")
        return FolderLayout("splits", named["train"], validation, named.get("test"))
    if named:
        raise DataError(
            f"{path}: holds {', '.join(f'{name}/' for name in named)} but no train/; the split layout needs train/<class>/ "
            "(+ val/ or validation/, test/), the class layout only <class>/ folders of images."
        )
    if not others:
        raise DataError(
            f"{path}: holds no subfolders; dataset: folder expects train/ (+ val/ or validation/, test/) with one "
            f"subfolder per class, or one subfolder of images per class, e.g. {path}/cat/."
        )
    return FolderLayout("classes", path)


# data.cache: auto keeps the decoded pixels in memory up to this size (all splits), else caches them on disk
MEMORY_CACHE_LIMIT = 1 << 30
MEMORY_CACHE_SHARE = 0.1  # ... and at most this share of the machine's memory
DECODE_THREADS = max(1, min(8, os.cpu_count() or 1))


class ImageFiles:
    """The image files of one split, decoded on demand; array-like, so the code around it treats it as pixels.

    ``len``, ``shape`` (N, H, W, C), ``dtype`` uint8; ``files[i]`` decodes one image, ``files[a:b]``
    or ``files[indices]`` is another ``ImageFiles`` (nothing decoded), ``np.asarray(files)``
    decodes them all (in parallel threads: Pillow releases the GIL while it decodes).
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, paths: Any, image_size: tuple[int, int], color_mode: str, cache: str = "none"):
        self.paths = np.asarray([str(p) for p in paths], dtype=object) if not isinstance(paths, np.ndarray) else paths
        self.image_size = tuple(int(d) for d in image_size)
        self.color_mode = color_mode
        self.cache = cache  # disk: the pipeline decodes once into a file of raw pixels; none: every epoch

    @property
    def channels(self) -> int:
        return 3 if self.color_mode == "rgb" else 1

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.paths), *self.image_size, self.channels)

    @property
    def image_bytes(self) -> int:
        return self.image_size[0] * self.image_size[1] * self.channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: Any) -> "np.ndarray | ImageFiles":
        if isinstance(index, (int, np.integer)):
            return decode_image(Path(self.paths[index]), self.image_size, self.color_mode)
        return ImageFiles(self.paths[index], self.image_size, self.color_mode, self.cache)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        pixels = self.decode(range(len(self)))
        return pixels if dtype is None else pixels.astype(dtype)

    def decode(self, indices: Any, out: np.ndarray | None = None) -> np.ndarray:
        """The images at ``indices`` as one uint8 array (into ``out`` when given)."""
        indices = [int(i) for i in indices]
        if out is None:
            out = np.empty((len(indices), *self.shape[1:]), np.uint8)

        def one(position: int) -> None:
            out[position] = decode_image(Path(self.paths[indices[position]]), self.image_size, self.color_mode)

        if len(indices) < 16:
            for position in range(len(indices)):
                one(position)
        else:
            list(_decode_pool().map(one, range(len(indices))))
        return out


_POOL: Any = None


def _decode_pool():
    """One thread pool for every decode in the process (created on first use)."""
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="trainer-decode")
    return _POOL


def list_classes(split_dir: Path) -> list[str]:
    """The sorted class folder names of one split; a split with none is an error."""
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: missing; a folder dataset needs train/ (+ val/ or validation/, test/) with one subfolder per class.")
    names = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DataError(f"{split_dir}: has no class folders; put each class's images in its own subfolder, e.g. {split_dir}/cat/.")
    return names


def image_files(class_dir: Path) -> list[Path]:
    """The image files of one class folder, sorted by name; an empty class folder is an error."""
    files = sorted(
        p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
    if not files:
        raise DataError(
            f"{class_dir}: class folder holds no images (looked for {', '.join(IMAGE_EXTENSIONS)}); "
            "add images or remove the folder."
        )
    return files


def decode_image(path: Path, image_size: tuple[int, int], color_mode: str, changes: list[str] | None = None) -> np.ndarray:
    """One image as uint8 (height, width, channels), converted and resized; undecodable files are named.

    Training (folder datasets) and ``trainer predict`` both read images here, so both see the same pixels.
    ``changes`` (when given) gets what was done to fit: ``"colour to greyscale"``, ``"greyscale to colour"``,
    ``"resized"``.
    """
    from PIL import Image

    from trainer.readers.decoders import open_image, undecodable_image

    height, width = image_size
    with open_image(path) as image:  # header only: format allow-listed, pixel count bounded before decoding
        try:
            image.seek(0)  # the first frame of an animated GIF
            image = to_8bit(image, path)
            if changes is not None:
                colour = _has_colour(image)
                if colour and color_mode == "grayscale":
                    changes.append("colour to greyscale")
                elif not colour and color_mode == "rgb":
                    changes.append("greyscale to colour")
                if image.size != (width, height):
                    changes.append("resized")
            image = image.convert(PIL_MODES[color_mode])
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise many types on hostile bytes
            raise undecodable_image(path, exc) from None
    return pixels.reshape(height, width, -1)


def _has_colour(image) -> bool:
    """Whether an image's pixels hold colour: a colour mode whose red, green and blue differ somewhere (a grey photo
    stored as RGB does not count)."""
    if image.mode in ("1", "L", "LA") or image.mode in WIDE_MODES:
        return False
    pixels = np.asarray(image.convert("RGB"))
    return bool((pixels[..., 0] != pixels[..., 1]).any() or (pixels[..., 1] != pixels[..., 2]).any())


WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # 16-bit, 32-bit integer and float grayscale


def to_8bit(image, path: Path):
    """A 16-bit, 32-bit or float image as 8-bit grayscale scaled by its range, never clipped.

    Pillow's ``convert`` clips these modes at 255 (a 16-bit image turns almost white) or zeroes
    floats below 1; here 16-bit values 0..65535 become 0..255, floats in 0..1 are multiplied by
    255 and floats in 0..255 kept. Anything else (negative, NaN, beyond 65535) is refused by name.
    """
    from PIL import Image

    if image.mode not in WIDE_MODES:
        return image
    values = np.asarray(image)
    if values.size == 0:
        return image
    if image.mode == "F" or np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
        if not np.isfinite(values).all():
            raise DataError(f"{path}: float image holds NaN or infinite values; trainer reads pixel values from 0 to 1 or 0 to 255.")
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 255:
            raise DataError(
                f"{path}: float image with values from {low:g} to {high:g}; trainer reads float pixels from 0 to 1 or "
                "0 to 255 and will not guess another scale. Convert it to 8-bit first."
            )
        scaled = values * 255.0 if high <= 1.0 else values
    else:
        high = int(values.max())
        low = int(values.min())
        if low < 0 or high > 65535:
            raise DataError(f"{path}: integer image with values from {low} to {high}; expected 8-bit (0..255) or 16-bit (0..65535) pixels.")
        sixteen_bit = image.mode.startswith("I;16") or high > 255
        scaled = values / 257.0 if sixteen_bit else values  # 65535 / 257 = 255 exactly
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def list_split(split_dir: Path, class_names: list[str]) -> tuple[list[Path], np.ndarray]:
    """The image files of one split in class order and their labels (indexing ``class_names``)."""
    found = list_classes(split_dir)
    unknown = [name for name in found if name not in class_names]
    if unknown:
        raise DataError(
            f"{split_dir}: has class folders the train folder lacks: {', '.join(unknown)}; "
            f"train classes are {', '.join(class_names)}."
        )
    files: list[Path] = []
    labels: list[int] = []
    for name in found:
        for file in image_files(split_dir / name):
            files.append(file)
            labels.append(class_names.index(name))
    return files, np.asarray(labels, dtype=np.int64)


def choose_cache(cache: str | None, images: int, image_bytes: int) -> str:
    """``data.cache`` resolved: ``auto`` is ``memory`` while the decoded pixels are small, else ``disk``."""
    if cache not in (None, "auto"):
        return cache
    try:
        machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        machine = 8 << 30
    return "memory" if images * image_bytes <= min(MEMORY_CACHE_LIMIT, MEMORY_CACHE_SHARE * machine) else "disk"


def load_folder(
    path: Path, image_size: tuple[int, int] | None = None, color_mode: str | None = None, cache: str | None = "memory",
    *, lazy: bool = False,
) -> FolderSplits:
    """The splits of the folder ``path`` in either layout (``detect_layout``); classes are the sorted train folders.

    The class layout is all training images here (``trainer.data.loaders`` holds out the
    validation and test fractions). Each split is an ``ImageFiles`` (nothing decoded yet) whose
    ``cache`` is ``data.cache`` resolved (``auto``/None: ``memory`` or ``disk`` by the decoded
    size). A ``memory`` split is decoded into one array here, or, ``lazy``, later by
    ``in_memory`` (after ``data.limit`` and the fractions have chosen its files).
    """
    layout = detect_layout(Path(path))
    class_names = list_classes(layout.train)
    folders = {"train": layout.train, "validation": layout.validation, "test": layout.test}
    listed = {name: list_split(folder, class_names) for name, folder in folders.items() if folder is not None}
    return _image_splits(class_names, listed, image_size, color_mode, cache, lazy, layout, Path(path), layout.describe())


def load_image_table(
    path: Path, image_size: tuple[int, int] | None = None, color_mode: str | None = None, cache: str | None = "memory",
    *, lazy: bool = False, allow_outside: bool = False,
) -> FolderSplits:
    """The splits of a CSV of ``path,label[,split]`` rows (``trainer.readers.csv_files``): its split column, else all train."""
    from trainer.readers.csv_files import read_image_table

    table = read_image_table(Path(path), allow_outside=allow_outside)
    labels = np.asarray(table.labels, dtype=np.int64)
    rows = table.splits or ["train"] * len(table.paths)
    listed: dict[str, tuple[list[Path], np.ndarray]] = {}
    for name in ("train", "validation", "test"):
        chosen = [index for index, split in enumerate(rows) if split == name]
        if chosen or name == "train":
            listed[name] = ([table.paths[index] for index in chosen], labels[chosen])
    if not len(listed["train"][0]):
        raise DataError(f"{path}: no row has split train; the split column needs train rows (and may add val and test rows).")
    return _image_splits(table.class_names, listed, image_size, color_mode, cache, lazy, None, table.root, f"CSV table: {table.describe()}")


def _image_splits(
    class_names: list[str], listed: dict[str, tuple[list[Path], np.ndarray]], image_size: Any, color_mode: Any,
    cache: Any, lazy: bool, layout: FolderLayout | None, root: Path, description: str,
) -> FolderSplits:
    """Listed files as ``ImageFiles`` splits with ``data.cache`` resolved over all of them (decoded now unless ``lazy``)."""
    size = tuple(image_size or DEFAULT_IMAGE_SIZE)
    mode = color_mode or DEFAULT_COLOR_MODE
    channels = 3 if mode == "rgb" else 1
    cache = choose_cache(cache, sum(len(files) for files, _ in listed.values()), size[0] * size[1] * channels)
    splits: dict[str, tuple[Any, np.ndarray]] = {}
    for name, (files, labels) in listed.items():
        images = ImageFiles(files, size, mode, cache)
        splits[name] = (images if lazy else in_memory(images), labels)
    x_val, y_val = splits.get("validation", (None, None))
    x_test, y_test = splits.get("test", (None, None))
    return FolderSplits(class_names, *splits["train"], x_test, y_test, x_val, y_val, layout, root, description)


def in_memory(x: Any) -> Any:
    """``x`` decoded into one array when it is ``ImageFiles`` with ``cache: memory``; anything else as it is."""
    return np.asarray(x) if isinstance(x, ImageFiles) and x.cache == "memory" else x


def check_headers(x: Any) -> None:
    """Every file of streamed ``ImageFiles`` (``data.cache: disk``, ``none``) opens as an allowed image within the pixel bound and passes Pillow's ``verify``.

    ``cache: memory`` decodes every chosen image before the run directory exists, so one bad file
    is exit 2 naming it; the streamed caches decoded theirs only while training (exit 1 and a run
    directory left behind). This gives them the same exit 2 first: each file's header is read and
    checked (format allow-listed, pixel count bounded: ``open_image``) and ``verify`` runs (a PNG's
    chunk checksums up to IEND; no pixels decoded), in the decode threads, the first failure in file
    order named. Cost: ~0.6 ms a file for CIFAR-10's 32x32 JPEGs on this 2-core machine at load 12
    (a full decode: ~1.4 ms); for larger images a smaller share of a decode. Not run for ``memory``,
    where the decode itself is the check. A file whose header and checksums are sound but whose
    compressed data is corrupt, or one deleted or replaced later, still fails the run by name when
    it is read (exit 1, checkpoints kept).
    """
    if not isinstance(x, ImageFiles) or x.cache == "memory" or not len(x):
        return
    from trainer.readers.decoders import open_image, undecodable_image

    def problem(path: str) -> DataError | None:
        try:
            with open_image(path) as image:
                image.verify()
        except DataError as error:
            return error
        except Exception as exc:  # noqa: BLE001 - Pillow's verify raises many types on hostile bytes
            return undecodable_image(path, exc)
        return None

    paths = list(x.paths)
    # map keeps file order: the first bad file in file order is the one named, whatever thread found it
    problems = map(problem, paths) if len(paths) < 16 else _decode_pool().map(problem, paths)
    for error in problems:
        if error is not None:
            raise error
