"""Class folders of images: ``DIR/{train,test[,validation]}/<class>/<image>``, decoded with Pillow.

Every image is decoded, converted to ``color_mode`` and resized to ``image_size``, then the
split is held in memory as one uint8 array (N, H, W, C) like the other readers return.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.errors import DataError
from trainer.data.catalog import FOLDER_DEFAULT_COLOR_MODE as DEFAULT_COLOR_MODE
from trainer.data.catalog import FOLDER_DEFAULT_IMAGE_SIZE as DEFAULT_IMAGE_SIZE

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
PIL_MODES = {"rgb": "RGB", "grayscale": "L"}


@dataclass
class FolderSplits:
    """The decoded splits of a class-folder dataset; ``x_val`` is None without a validation/ folder."""

    class_names: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None


def list_classes(split_dir: Path) -> list[str]:
    """The sorted class folder names of one split; a split with none is an error."""
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: missing; a folder dataset needs train/ and test/ folders with one subfolder per class.")
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


def decode_image(path: Path, image_size: tuple[int, int], color_mode: str) -> np.ndarray:
    """One image as uint8 (height, width, channels), converted and resized; undecodable files are named.

    Training (folder datasets) and ``trainer predict`` both read images here, so both see the same pixels.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    height, width = image_size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refused, not decoded into gigabytes
            with Image.open(path) as image:
                image.seek(0)  # the first frame of an animated GIF
                image = to_8bit(image, path)
                image = image.convert(PIL_MODES[color_mode])
                if image.size != (width, height):
                    image = image.resize((width, height), Image.Resampling.BILINEAR)
                pixels = np.asarray(image, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"{path}: refused: the image declares more pixels than Pillow's limit of {Image.MAX_IMAGE_PIXELS:,} "
            f"(a decompression bomb, or a huge image); {str(exc).splitlines()[0][:160]} Remove or shrink the file."
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise DataError(
            f"{path}: cannot decode this image ({reason}); expected a readable PNG, JPEG, BMP or GIF file "
            "(or another format Pillow reads). Remove or replace the file."
        ) from None
    return pixels.reshape(height, width, -1)


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


def read_split(split_dir: Path, class_names: list[str], image_size: tuple[int, int], color_mode: str) -> tuple[np.ndarray, np.ndarray]:
    """All images of one split as (uint8 images, int64 labels), labels indexing ``class_names``."""
    found = list_classes(split_dir)
    unknown = [name for name in found if name not in class_names]
    if unknown:
        raise DataError(
            f"{split_dir}: has class folders the train folder lacks: {', '.join(unknown)}; "
            f"train classes are {', '.join(class_names)}."
        )
    channels = 3 if color_mode == "rgb" else 1
    images: list[np.ndarray] = []
    labels: list[int] = []
    for name in found:
        for file in image_files(split_dir / name):
            images.append(decode_image(file, image_size, color_mode))
            labels.append(class_names.index(name))
    x = np.stack(images) if images else np.zeros((0, *image_size, channels), np.uint8)
    return x, np.asarray(labels, dtype=np.int64)


def load_folder(path: Path, image_size: tuple[int, int] | None = None, color_mode: str | None = None) -> FolderSplits:
    """Read ``path/train``, ``path/test`` and (when present) ``path/validation``; classes are the sorted train folders."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a folder; dataset: folder expects a folder holding train/ and test/, each with one subfolder per class.")
    size = tuple(image_size or DEFAULT_IMAGE_SIZE)
    mode = color_mode or DEFAULT_COLOR_MODE
    class_names = list_classes(path / "train")
    x_train, y_train = read_split(path / "train", class_names, size, mode)
    x_test, y_test = read_split(path / "test", class_names, size, mode)
    x_val = y_val = None
    if (path / "validation").is_dir():
        x_val, y_val = read_split(path / "validation", class_names, size, mode)
    return FolderSplits(class_names, x_train, y_train, x_test, y_test, x_val, y_val)
