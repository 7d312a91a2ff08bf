"""The typed config schema: every section as a pydantic model (unknown keys refused, types strict).

Never imports TensorFlow: ``trainer validate`` and ``--help`` stay fast.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_serializer,
    model_validator,
)

from trainer.errors import ConfigError
from trainer.catalogue.registry import unknown_choice_message

KeyPath = tuple[Union[str, int], ...]

from trainer.config.base import ACTIVATIONS, INT32_MAX, Count, PathText, _Strict  # noqa: E402,F401 - re-exported


class NamedSpec(BaseModel):
    """A catalogue entry chosen by ``name`` plus its parameters: ``adam`` or ``{name: adam, learning_rate: 0.01}``."""

    model_config = ConfigDict(extra="allow", strict=True)
    name: str = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_serializer(mode="wrap")
    def _to_plain(self, handler):
        data = handler(self)
        return data["name"] if len(data) == 1 else data


MAX_IMAGE_SIDE = 16_384  # pixels; a side beyond this is a typo (one such RGB image is 768 MiB)
MAX_IMAGE_AREA = 4096 * 4096  # pixels of one decoded image (48 MiB in RGB; a batch of them as float32 is gigabytes)


class RandAugmentConfig(_Strict):
    """RandAugment (``trainer.data.rand_augment``): ``layers`` ops per image, each at ``magnitude`` on timm's 0..10 scale."""

    magnitude: Annotated[float, Field(ge=0.0, le=10.0)] = 9.0  # 0: every op is the identity; 10: the strongest
    layers: Annotated[int, Field(ge=1, le=8)] = 2  # ops per image (trainer.data.order.RAND_AUGMENT_MAX_LAYERS)


# Mixup/CutMix's Beta(alpha, alpha): above ~100 lambda is 0.5 to within a few percent; the bound keeps it a number.
MAX_MIX_ALPHA = 1000.0


class AugmentConfig(_Strict):
    """Random changes to training batches (``trainer.data.augment``); validation, test, eval and predict never see them."""

    # alternating: left-right, each image by its own bit in even epochs and the other way in odd ones (airbench)
    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical", "alternating"] = "none"
    crop: Annotated[int, Field(ge=0, le=MAX_IMAGE_SIDE)] = 0  # pad by N pixels, crop back to the image size at a random place
    crop_padding: Literal["zeros", "reflect"] = "zeros"  # what crop pads with: black, or the image mirrored (airbench's translate)
    rotation: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0  # fraction of a full turn, either way
    zoom: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0  # fraction of the size, in or out
    translate: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0  # fraction of the height and width, either way
    contrast: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0  # contrast factor drawn from [1 - c, 1 + c]
    rand_augment: RandAugmentConfig | None = None
    random_erasing: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0  # probability of erasing one rectangle per image
    mixup: Annotated[float, Field(ge=0.0, le=MAX_MIX_ALPHA)] = 0.0  # Beta(alpha, alpha); 0: off
    cutmix: Annotated[float, Field(ge=0.0, le=MAX_MIX_ALPHA)] = 0.0  # Beta(alpha, alpha); 0: off

    @property
    def mixes(self) -> bool:
        """Whether batches are mixed (mixup or cutmix): the training targets are then soft one-hot rows."""
        return bool(self.mixup or self.cutmix)

    @property
    def active(self) -> bool:
        """Whether any change is switched on."""
        return self.flip != "none" or any(
            (self.crop, self.rotation, self.zoom, self.translate, self.contrast, self.random_erasing, self.mixes, self.rand_augment is not None)
        )


def _fraction(value: Any, allowed: str) -> float:
    """A number strictly between 0 and 1 (``true`` is no number), else ``ValueError("must be ...")``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and 0.0 < float(value) < 1.0):
        raise ValueError(f"must be {allowed}")
    return float(value)


class DataConfig(_Strict):
    dataset: str = "mnist"
    path: PathText | None = None
    validation: str | float = "test"
    # folder and csv datasets without a test split of their own: a stratified, seeded fraction of the images held out for test
    test: float | None = Field(default=None, exclude_if=lambda value: value is None)
    # csv only: rows may name images outside the CSV's folder (absolute paths, '..', links out)
    allow_outside: bool = Field(default=False, exclude_if=lambda value: value is False)
    limit: Count | None = None
    image_size: list[Annotated[int, Field(gt=0, le=MAX_IMAGE_SIDE)]] | None = Field(default=None, min_length=2, max_length=2)
    color_mode: Literal["rgb", "grayscale"] | None = None
    cache: Literal["auto", "memory", "disk", "none"] | None = None  # folder and csv datasets: where decoded pixels live
    augment: AugmentConfig | None = None

    @field_validator("image_size")
    @classmethod
    def _buildable_image_size(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and value[0] * value[1] > MAX_IMAGE_AREA:
            raise ValueError(
                f"{value[0]}x{value[1]} is {value[0] * value[1]:,} pixels per image, more than the {MAX_IMAGE_AREA:,} "
                f"(e.g. 4096x4096) trainer decodes and builds models for; choose a smaller size"
            )
        return value

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        from trainer.catalogue.datasets import dataset_names

        names = dataset_names()
        if value not in names:
            raise ValueError(unknown_choice_message("dataset", value, names).split(": ", 1)[1])
        return value

    @field_validator("validation", mode="before")
    @classmethod
    def _validation_choice(cls, value: Any) -> Any:
        allowed = "'test', 'none' or a fraction strictly between 0 and 1"
        if value is None:
            return "none"
        if isinstance(value, str):
            if value not in ("test", "none"):
                raise ValueError(f"must be {allowed}")
            return value
        return _fraction(value, allowed)

    @field_validator("test", mode="before")
    @classmethod
    def _test_fraction(cls, value: Any) -> Any:
        return None if value is None else _fraction(value, "a fraction strictly between 0 and 1 (e.g. 0.1), or null")

    @model_validator(mode="after")
    def _image_file_only_keys(self) -> "DataConfig":
        """``image_size``, ``color_mode``, ``cache`` and ``test`` describe image files (folder, csv); elsewhere the files decide."""
        from trainer.catalogue.datasets import CSV_DATASET, IMAGE_FILE_DATASETS

        if self.dataset not in IMAGE_FILE_DATASETS:
            given = [key for key in ("image_size", "color_mode", "cache") if getattr(self, key) is not None]
            if given:
                raise ValueError(
                    f"{' and '.join(given)} only apply to dataset: folder or csv (images of any size decoded from files); "
                    f"{self.dataset} images keep the shape of the files, so remove {' and '.join(given)}"
                )
            if self.test is not None:
                raise ValueError(
                    f"test: {self.test} holds a test split out of folder or csv datasets; {self.dataset} has its own test "
                    "split, so remove data.test"
                )
        if self.allow_outside and self.dataset != CSV_DATASET:
            raise ValueError("allow_outside only applies to dataset: csv (rows naming images outside the CSV's folder); remove it")
        if self.dataset == "folder" and self.path is None:
            raise ValueError(
                "dataset: folder needs data.path, a folder holding train/ (+ val/ or validation/, test/) or one subfolder per class"
            )
        if self.dataset == CSV_DATASET and self.path is None:
            raise ValueError("dataset: csv needs data.path, a .csv file of path,label[,split] rows (paths relative to its folder)")
        return self


class LabelsConfig(_Strict):
    encoding: Literal["auto", "sparse", "onehot"] = "auto"




from trainer.config.sweep import SweepConfig  # noqa: E402
from trainer.config.tracking import TrackingConfig  # noqa: E402
from trainer.config.evaluate import EvaluateConfig  # noqa: E402
from trainer.config.ema import EmaConfig  # noqa: E402
from trainer.config.models import MODEL_TYPES, HeadConfig, MLPConfig, VGG16HeadConfig, model_union  # noqa: E402,F401 - re-exported

ModelConfig = model_union()


class TrainConfig(_Strict):
    epochs: Count = 10
    batch_size: Count = 32
    shuffle: bool = True
    mixed_precision: Union[Literal["auto", "bfloat16"], bool] = "auto"  # auto: float16 on tensor-core GPUs; bfloat16: opt-in (fast CPU convolutions)
    class_weight: Union[Literal["balanced"], dict[int, Annotated[float, Field(ge=0.0)]], None] = None
    sample_weights: PathText | None = None  # a .npy file with one weight per training example
    steps_per_epoch: Count | None = None
    validation_steps: Count | None = None
    initial_epoch: Annotated[int, Field(ge=0, le=INT32_MAX)] = 0
    cache_features: Union[Literal["auto"], bool] = "auto"
    # trainer.config.monitor: model.h5 is the best epoch by this logged value (None: val_loss, or loss without validation)
    monitor: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(default=None, exclude_if=lambda value: value is None)
    monitor_mode: Literal["auto", "min", "max"] = Field(default="auto", exclude_if=lambda value: value == "auto")  # auto: min for losses and errors, max for accuracy-like scores
    # trainer.config.ema: an average of the weights that validation, test, model.h5 and exports use; absent when off
    ema: EmaConfig | None = Field(default=None, exclude_if=lambda value: value is None)

    _refuse_dropped = model_validator(mode="before")(lambda cls, value: _refuse_keras2_keys(value))

    @model_validator(mode="after")
    def _one_kind_of_weights(self) -> "TrainConfig":
        if self.class_weight is not None and self.sample_weights is not None:
            raise ValueError("class_weight and sample_weights cannot be used together (Keras refuses both at once); keep one")
        if self.initial_epoch >= self.epochs:
            raise ValueError(f"initial_epoch ({self.initial_epoch}) must be smaller than epochs ({self.epochs})")
        return self


KERAS2_FIT_KEYS = ("workers", "use_multiprocessing", "max_queue_size")


def _refuse_keras2_keys(value: Any) -> Any:
    """``workers``/``use_multiprocessing``/``max_queue_size`` were Keras 2 ``fit`` settings; say so plainly."""
    if isinstance(value, dict):
        dropped = [key for key in KERAS2_FIT_KEYS if key in value]
        if dropped:
            raise ValueError(
                f"{', '.join(dropped)}: Keras 3 removed {'these' if len(dropped) > 1 else 'this'} model.fit setting"
                f"{'s' if len(dropped) > 1 else ''} (the tf.data pipeline already loads batches in parallel); delete "
                f"{'them' if len(dropped) > 1 else 'it'}"
            )
    return value


class CompileConfig(_Strict):
    """``model.compile`` settings beyond loss, optimizer and metrics."""

    loss_weights: Annotated[float, Field(ge=0.0)] | None = None  # one output, so one number
    weighted_metrics: list[NamedSpec] = Field(default_factory=list)
    run_eagerly: bool = False
    steps_per_execution: Union[Literal["auto"], Count] = "auto"
    jit_compile: Union[Literal["auto"], bool] = "auto"

    _refuse_dropped = model_validator(mode="before")(lambda cls, value: _refuse_keras2_keys(value))


class OutputConfig(_Strict):
    dir: PathText = "outputs"


class DistributeConfig(_Strict):
    """Beyond one device: ``mirrored`` (all local GPUs) or ``multi_worker`` (several processes, JAX backend).

    ``coordinator``, ``num_processes`` and ``process_id`` may also come from the environment or
    Slurm (``trainer.distribute.resolve_distribute``); docs/distributed.md lists the variables.
    """

    strategy: Literal["none", "mirrored", "multi_worker"] = "none"
    coordinator: str | None = None  # HOST:PORT of process 0; port+1 is used too
    num_processes: Annotated[int, Field(gt=0, le=65_536)] | None = None
    process_id: Annotated[int, Field(ge=0, lt=65_536)] | None = None
    timeout_seconds: Annotated[float, Field(gt=0)] = 120.0  # how long processes wait for each other at start

    @field_validator("coordinator")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            from trainer.runtime.distribute import parse_coordinator

            try:
                parse_coordinator(value)
            except ConfigError as exc:
                raise ValueError(exc.message.split(": ", 1)[1]) from None
        return value

    @model_validator(mode="after")
    def _id_in_range(self) -> "DistributeConfig":
        if self.num_processes is not None and self.process_id is not None and self.process_id >= self.num_processes:
            raise ValueError(f"process_id {self.process_id} is out of range; with num_processes {self.num_processes} it must be 0..{self.num_processes - 1}")
        return self


class Config(_Strict):
    """The whole run, as the YAML file describes it."""

    name: str = Field(default="run", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 42  # NumPy's seed range
    data: DataConfig = Field(default_factory=DataConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    model: ModelConfig = Field(default_factory=MLPConfig)
    loss: NamedSpec = Field(default_factory=lambda: NamedSpec(name="sparse_categorical_crossentropy"))
    optimizer: NamedSpec = Field(default_factory=lambda: NamedSpec(name="adam"))
    metrics: list[NamedSpec] = Field(default_factory=lambda: [NamedSpec(name="accuracy")])
    train: TrainConfig = Field(default_factory=TrainConfig)
    compile: CompileConfig = Field(default_factory=CompileConfig)
    callbacks: list[NamedSpec] = Field(default_factory=list)
    # The Keras backend: auto = the first installed of TensorFlow, JAX, PyTorch (JAX for multi_worker); KERAS_BACKEND wins when set.
    backend: Literal["auto", "tensorflow", "jax", "torch"] = Field(default="auto", exclude_if=lambda value: value == "auto")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, exclude_if=lambda value: value.tta == "none")  # trainer.config.evaluate
    device: Literal["auto", "cpu", "gpu"] = "auto"
    distribute: DistributeConfig = Field(default_factory=DistributeConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    sweep: SweepConfig | None = Field(default=None, exclude_if=lambda value: value is None)  # trainer sweep only (trainer.config.sweep)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, exclude_if=lambda value: value.mlflow is None)  # trainer.config.tracking
    _config_dir: Path | None = PrivateAttr(default=None)

    @property
    def config_dir(self) -> Path | None:
        """The folder of the YAML file (user ``module:attr`` code is imported from there first)."""
        return self._config_dir

    def to_dict(self, *, masked: bool = False) -> dict[str, Any]:
        """The config as plain data; ``masked``: every URL's credentials replaced by ``***`` (what is stored or logged)."""
        data = self.model_dump(mode="json")
        if masked:
            from trainer.secrets import mask_urls_in

            return mask_urls_in(data)
        return data

    def to_yaml(self) -> str:
        """The config as it is stored (``config.yaml``, ``best.yaml``): credentials in URLs masked, never written to disk."""
        return yaml.safe_dump(self.to_dict(masked=True), sort_keys=False, default_flow_style=None)


