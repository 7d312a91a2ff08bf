"""Model sections of the config, each registered once with its builder and what it supports (no TensorFlow).

A model type is one config class decorated with ``@register_model(name, builder=...)``: the
class is the ``model:`` section's schema (its ``type`` literal is the name), the builder is the
``module:function`` that turns it into a Keras model (``trainer.models.build_model`` calls it),
and the class's capabilities (``has_backbone``, ``frozen_backbone``) are what the rest of
trainer asks instead of comparing type names. A new model type is one new class here and one
builder module under ``trainer/models/``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, field_validator

from trainer.catalogue.registry import Registry, unknown_choice_message
from trainer.config.base import ACTIVATIONS, PathText, _Strict


@dataclass(frozen=True)
class ModelType:
    """One registered model type: its name, config class and builder (``module:function``)."""

    name: str
    config_class: type
    builder: str


MODEL_TYPES: Registry[ModelType] = Registry("model.type")


def register_model(name: str, *, builder: str):
    """Class decorator: register a model config class under ``name`` (its ``type`` literal) with its builder."""

    def register(cls: type) -> type:
        MODEL_TYPES.register(name, ModelType(name, cls, builder))
        return cls

    return register


def model_union() -> Any:
    """The ``model:`` section's type: every registered class, chosen by ``type``."""
    classes = tuple(entry.config_class for _, entry in MODEL_TYPES.items())
    return Annotated[Union[classes], Field(discriminator="type")]  # type: ignore[valid-type]


def model_class_for(kind: Any) -> type:
    """The config class of model type ``kind`` (the default ``mlp`` when it is not a registered name)."""
    entry = MODEL_TYPES.get(kind) if kind in MODEL_TYPES else MODEL_TYPES.get(DEFAULT_MODEL_TYPE)
    return entry.config_class


DEFAULT_MODEL_TYPE = "mlp"
MAX_UNITS = 1_048_576  # units in one dense layer; beyond this no weight matrix fits in memory


class ModelSection(_Strict):
    """What every model section can say about itself; model types override these."""

    has_backbone: ClassVar[bool] = False  # a pretrained feature extractor under a head (input adaptation, preprocessing)

    @property
    def frozen_backbone(self) -> bool:
        """Whether a backbone stays fixed while training (its features can then be computed once)."""
        return False


@register_model("mlp", builder="trainer.models.mlp:build_mlp")
class MLPConfig(ModelSection):
    type: Literal["mlp"] = "mlp"
    hidden_units: list[Annotated[int, Field(gt=0, le=MAX_UNITS)]] = Field(default_factory=lambda: [64, 64], max_length=1_000)
    activation: str = "relu"
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    output: Literal["softmax", "logits"] = "softmax"
    kernel_regularizer: dict[str, Any] | None = None
    bias_regularizer: dict[str, Any] | None = None
    activity_regularizer: dict[str, Any] | None = None
    kernel_constraint: Union[str, dict[str, Any], None] = None

    @field_validator("kernel_regularizer", "bias_regularizer", "activity_regularizer")
    @classmethod
    def _known_regularizer(cls, value: Any) -> Any:
        from trainer.catalogue.regularizers import check_regularizer

        return None if value is None else check_regularizer(value)

    @field_validator("kernel_constraint")
    @classmethod
    def _known_constraint(cls, value: Any) -> Any:
        from trainer.catalogue.regularizers import check_constraint

        return None if value is None else check_constraint(value)

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, value: str) -> str:
        if value not in ACTIVATIONS:
            raise ValueError(unknown_choice_message("activation", value, ACTIVATIONS).split(": ", 1)[1])
        return value


class HeadConfig(_Strict):
    """The trainable dense head on top of a frozen backbone."""

    hidden_units: list[Annotated[int, Field(gt=0, le=MAX_UNITS)]] = Field(default_factory=lambda: [4096, 4096], max_length=1_000)
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.5
    activation: str = "relu"

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, value: str) -> str:
        return MLPConfig._known_activation(value)


@register_model("vgg16_head", builder="trainer.models.vgg16_head:build_vgg16_head")
class VGG16HeadConfig(ModelSection):
    """A VGG16 convolutional backbone (frozen by default) under a dense head."""

    type: Literal["vgg16_head"] = "vgg16_head"
    has_backbone: ClassVar[bool] = True
    weights: PathText = "imagenet"  # imagenet | none | a path to a weights file
    trainable_backbone: bool = False
    head: HeadConfig = Field(default_factory=HeadConfig)
    output: Literal["softmax", "logits"] = "softmax"
    preprocess: Literal["auto", "vgg16", "scale"] = "auto"

    @field_validator("weights", mode="before")
    @classmethod
    def _weights_choice(cls, value: Any) -> Any:
        if value is None:
            return "none"
        if isinstance(value, str) and not value.strip():
            raise ValueError("must be imagenet, none or the path to a weights file")
        return value

    @property
    def frozen_backbone(self) -> bool:
        return not self.trainable_backbone

    @property
    def weights_kind(self) -> str:
        """``imagenet``, ``none`` or ``path``."""
        return self.weights if self.weights in ("imagenet", "none") else "path"

    @property
    def preprocessing(self) -> str:
        """``auto`` resolved: VGG16's own preprocessing for ImageNet weights, [0, 1] scaling otherwise."""
        if self.preprocess != "auto":
            return self.preprocess
        return "vgg16" if self.weights == "imagenet" else "scale"
