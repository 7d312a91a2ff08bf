"""The datasets trainer knows by name: shapes, class names and the file formats each accepts.

Standard library only, so config validation and ``--help`` can read it without TensorFlow.
"""
from __future__ import annotations

from dataclasses import dataclass

from trainer.errors import ConfigError
from trainer.catalogue.registry import unknown_choice_message

FORMAT_DESCRIPTIONS: dict[str, str] = {
    "npz": "a Keras-format .npz with x_train, y_train, x_test, y_test",
    "idx": "a folder with the four IDX files (gzipped or not)",
    "cifar10": (
        "the cifar-10-python.tar.gz archive, its extracted cifar-10-batches-py folder, "
        "or a folder containing that folder"
    ),
    "cifar100": (
        "the cifar-100-python.tar.gz archive, its extracted cifar-100-python folder, "
        "or a folder containing that folder"
    ),
}


@dataclass(frozen=True)
class DatasetInfo:
    """What trainer knows about one published dataset."""

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]  # (height, width, channels)
    class_names: list[str]
    keras_module: str  # the module under ``keras.datasets`` that downloads it
    accepted_formats: str  # human-readable, for error messages
    formats: tuple[str, ...] = ()  # keys of FORMAT_DESCRIPTIONS, in the order they are tried


def _describe_formats(formats: tuple[str, ...]) -> str:
    """The accepted formats as one phrase, e.g. "a .npz ...; a folder with ..."."""
    return "; ".join(FORMAT_DESCRIPTIONS[name] for name in formats)


def _dataset(
    name: str, image_shape: tuple[int, int, int], class_names: list[str], formats: tuple[str, ...]
) -> DatasetInfo:
    return DatasetInfo(
        name=name,
        num_classes=len(class_names),
        image_shape=image_shape,
        class_names=class_names,
        keras_module=name,
        accepted_formats=_describe_formats(formats),
        formats=formats,
    )


MNIST_CLASSES = [str(digit) for digit in range(10)]

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]

# The fine labels in the order of the published ``meta`` file (alphabetical).
CIFAR100_CLASSES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
]

# The coarse (superclass) labels of CIFAR-100, also alphabetical as in ``meta``.
CIFAR100_COARSE_CLASSES = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
    "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
]

DATASETS: dict[str, DatasetInfo] = {
    "mnist": _dataset("mnist", (28, 28, 1), MNIST_CLASSES, ("npz", "idx")),
    "fashion_mnist": _dataset("fashion_mnist", (28, 28, 1), FASHION_MNIST_CLASSES, ("npz", "idx")),
    "cifar10": _dataset("cifar10", (32, 32, 3), CIFAR10_CLASSES, ("npz", "cifar10")),
    "cifar100": _dataset("cifar100", (32, 32, 3), CIFAR100_CLASSES, ("npz", "cifar100")),
}


# Not a published dataset: class folders of images under data.path (see trainer.data.folder).
FOLDER_DATASET = "folder"
# Not a published dataset either: a CSV of ``path,label[,split]`` rows naming image files (trainer.readers.csv_files).
CSV_DATASET = "csv"
IMAGE_FILE_DATASETS = (FOLDER_DATASET, CSV_DATASET)  # image files decoded to data.image_size / data.color_mode
FOLDER_DEFAULT_IMAGE_SIZE = (32, 32)  # (height, width) when data.image_size is not given
FOLDER_DEFAULT_COLOR_MODE = "rgb"


def dataset_names() -> list[str]:
    """Every valid ``data.dataset``: the published datasets plus ``folder`` and ``csv``."""
    return [*DATASETS, *IMAGE_FILE_DATASETS]


def expected_image_shape(dataset: str, image_size=None, color_mode=None) -> tuple[int, int, int] | None:
    """(height, width, channels) the images of ``dataset`` will have, known before reading any file."""
    if dataset in IMAGE_FILE_DATASETS:
        height, width = image_size or FOLDER_DEFAULT_IMAGE_SIZE
        return (int(height), int(width), 1 if (color_mode or FOLDER_DEFAULT_COLOR_MODE) == "grayscale" else 3)
    info = DATASETS.get(dataset)
    return info.image_shape if info is not None else None


def get_dataset_info(name: str, key: str = "data.dataset") -> DatasetInfo:
    """The entry for ``name``; a ConfigError naming ``key``, the value and the known datasets."""
    info = DATASETS.get(str(name).lower()) if isinstance(name, str) else None
    if info is None:
        raise ConfigError(unknown_choice_message(key, name, DATASETS))
    return info
