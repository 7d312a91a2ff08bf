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

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

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


class WeightOptions(_Strict):
    """Regularizers and a kernel constraint for a model's dense (and conv) layers, checked without TensorFlow."""

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


def known_activation(value: str) -> str:
    """``value`` if it names a Keras activation; else a ValueError naming the valid ones and the closest."""
    if value not in ACTIVATIONS:
        raise ValueError(unknown_choice_message("activation", value, ACTIVATIONS).split(": ", 1)[1])
    return value


@register_model("mlp", builder="trainer.models.mlp:build_mlp")
class MLPConfig(WeightOptions, ModelSection):
    type: Literal["mlp"] = "mlp"
    hidden_units: list[Annotated[int, Field(gt=0, le=MAX_UNITS)]] = Field(default_factory=lambda: [64, 64], max_length=1_000)
    activation: str = "relu"
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    output: Literal["softmax", "logits"] = "softmax"

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, value: str) -> str:
        return known_activation(value)


class HeadConfig(_Strict):
    """The trainable dense head on top of a frozen backbone."""

    hidden_units: list[Annotated[int, Field(gt=0, le=MAX_UNITS)]] = Field(default_factory=lambda: [4096, 4096], max_length=1_000)
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.5
    activation: str = "relu"

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, value: str) -> str:
        return known_activation(value)


class PretrainedWeights(_Strict):
    """``weights: imagenet | none | PATH`` for a model with a pretrained backbone."""

    weights: PathText = "imagenet"  # imagenet | none | a path to a weights file

    @field_validator("weights", mode="before")
    @classmethod
    def _weights_choice(cls, value: Any) -> Any:
        if value is None:
            return "none"
        if isinstance(value, str) and not value.strip():
            raise ValueError("must be imagenet, none or the path to a weights file")
        return value

    @property
    def weights_kind(self) -> str:
        """``imagenet``, ``none`` or ``path``."""
        return self.weights if self.weights in ("imagenet", "none") else "path"


@register_model("vgg16_head", builder="trainer.models.vgg16_head:build_vgg16_head")
class VGG16HeadConfig(PretrainedWeights, ModelSection):
    """A VGG16 convolutional backbone (frozen by default) under a dense head."""

    type: Literal["vgg16_head"] = "vgg16_head"
    has_backbone: ClassVar[bool] = True
    trainable_backbone: bool = False
    head: HeadConfig = Field(default_factory=HeadConfig)
    output: Literal["softmax", "logits"] = "softmax"
    preprocess: Literal["auto", "vgg16", "scale"] = "auto"

    backbone: ClassVar[str] = "vgg16"  # its entry in trainer.catalogue.backbones

    @property
    def frozen_backbone(self) -> bool:
        return not self.trainable_backbone

    @property
    def preprocessing(self) -> str:
        """``auto`` resolved: VGG16's own preprocessing for ImageNet weights, [0, 1] scaling otherwise."""
        if self.preprocess != "auto":
            return self.preprocess
        return "vgg16" if self.weights == "imagenet" else "scale"


class FineTuneConfig(_Strict):
    """The second phase: unfreeze the backbone (all of it or its top N layers) and continue at a low learning rate."""

    epochs: Annotated[int, Field(gt=0)] = 5
    learning_rate: Annotated[float, Field(gt=0.0)] = 1e-5
    unfreeze: Union[Literal["all"], Annotated[int, Field(gt=0)]] = "all"


@register_model("backbone_head", builder="trainer.models.backbone_head:build_backbone_head")
class BackboneHeadConfig(PretrainedWeights, ModelSection):
    """A ``keras.applications`` backbone (``trainer.catalogue.backbones``) under a dense head, optionally fine-tuned."""

    type: Literal["backbone_head"] = "backbone_head"
    has_backbone: ClassVar[bool] = True
    backbone: str = "vgg16"
    trainable_backbone: Union[bool, Annotated[int, Field(gt=0)]] = False  # true, false or the top N layers
    fine_tune: FineTuneConfig | None = None
    head: HeadConfig = Field(default_factory=lambda: HeadConfig(hidden_units=[256]))
    output: Literal["softmax", "logits"] = "softmax"
    preprocess: Literal["auto", "backbone", "scale"] = "auto"
    # the backbone's BatchNormalization layers, where they train (weights: none and a trainable backbone); None: the backbone's own
    batch_norm_momentum: Annotated[float, Field(ge=0.0, lt=1.0)] | None = None

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        from trainer.catalogue.backbones import BACKBONES

        if value not in BACKBONES:
            raise ValueError(unknown_choice_message("backbone", value, BACKBONES).split(": ", 1)[1])
        return value

    @model_validator(mode="after")
    def _fine_tune_starts_frozen(self) -> "BackboneHeadConfig":
        if self.fine_tune is not None and self.trainable_backbone is not False:
            raise ValueError(
                f"fine_tune trains the head first with the backbone frozen, then unfreezes it; "
                f"trainable_backbone is {self.trainable_backbone!r}, so set trainable_backbone: false (or remove fine_tune)"
            )
        if self.batch_norm_momentum is not None and (self.weights_kind != "none" or self.trainable_backbone is False):
            if self.fine_tune is not None:
                why = "fine-tuning keeps the backbone's BatchNormalization layers frozen (inference mode), so their statistics never change"
            elif self.trainable_backbone is False:
                why = "the backbone is frozen (trainable_backbone: false), so its BatchNormalization layers never update"
            else:
                why = "with pretrained weights the backbone's BatchNormalization layers stay frozen, so their statistics never change"
            raise ValueError(f"batch_norm_momentum: {why}; it applies to a backbone trained from scratch (weights: none, trainable_backbone: true); remove it")
        return self

    @property
    def frozen_backbone(self) -> bool:
        return self.trainable_backbone is False

    @property
    def preprocessing(self) -> str:
        """``auto`` resolved: the backbone's own convention with pretrained weights, [0, 1] scaling for random ones.

        Backbones that rescale pixels themselves (EfficientNet, ConvNeXt) always take 0..255.
        """
        from trainer.catalogue.backbones import backbone_entry

        if self.preprocess != "auto":
            return self.preprocess
        if backbone_entry(self.backbone).preprocess == "none":  # the backbone rescales 0..255 itself
            return "backbone"
        return "backbone" if self.weights_kind != "none" else "scale"


class CNNBlock(_Strict):
    """One convolutional block given as a mapping; unset values come from the model section."""

    filters: Annotated[int, Field(gt=0, le=MAX_UNITS)]
    convs: Annotated[int, Field(gt=0, le=1_000)] | None = None
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] | None = None


# A block is a filter count or a mapping; choosing by the value's kind gives one error per bad block, not one per guess.
BlockSpec = Annotated[
    Union[Annotated[Annotated[int, Field(gt=0, le=MAX_UNITS)], Tag("filters")], Annotated[CNNBlock, Tag("mapping")]],
    Discriminator(lambda value: "mapping" if isinstance(value, (dict, CNNBlock)) else "filters"),
]


class CNNHeadConfig(HeadConfig):
    hidden_units: list[Annotated[int, Field(gt=0, le=MAX_UNITS)]] = Field(default_factory=lambda: [512], max_length=1_000)


# Keras's 0.99 keeps the moving statistics near their start (mean 0, variance 1) for the first few hundred
# steps, so a short run evaluates (validation, test, eval) with statistics that do not match the
# activations: validation sits at chance while training accuracy climbs. Measured in docs/models.md.
CNN_BATCH_NORM_MOMENTUM = 0.9


@register_model("cnn", builder="trainer.models.cnn:build_cnn")
class CNNConfig(WeightOptions, ModelSection):
    """Blocks of Conv2D (+BatchNormalization) -> MaxPooling2D -> Dropout, then Flatten, a dense head, the class layer."""

    type: Literal["cnn"] = "cnn"
    blocks: list[BlockSpec] = Field(default_factory=lambda: [32, 64], min_length=1, max_length=1_000)
    convs_per_block: Annotated[int, Field(gt=0, le=1_000)] = 2
    kernel_size: Annotated[int, Field(gt=0)] = 3
    batch_norm: bool = False
    # Keras's convention: moving = momentum * moving + (1 - momentum) * batch. None: CNN_BATCH_NORM_MOMENTUM
    batch_norm_momentum: Annotated[float, Field(ge=0.0, lt=1.0)] | None = None
    block_dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.25
    head: CNNHeadConfig = Field(default_factory=CNNHeadConfig)
    activation: str = "relu"
    output: Literal["softmax", "logits"] = "softmax"

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, value: str) -> str:
        return known_activation(value)

    @model_validator(mode="after")
    def _momentum_needs_batch_norm(self) -> "CNNConfig":
        if self.batch_norm_momentum is not None and not self.batch_norm:
            raise ValueError("batch_norm_momentum: applies to BatchNormalization layers, and batch_norm is false; set batch_norm: true or remove batch_norm_momentum")
        return self

    @property
    def momentum(self) -> float:
        """The BatchNormalization momentum in force: the config's, else ``CNN_BATCH_NORM_MOMENTUM``."""
        return CNN_BATCH_NORM_MOMENTUM if self.batch_norm_momentum is None else self.batch_norm_momentum

    def block_list(self) -> list[CNNBlock]:
        """Every block as a mapping with its convs and dropout filled in."""
        blocks = [CNNBlock(filters=b) if isinstance(b, int) else b for b in self.blocks]
        return [
            CNNBlock(
                filters=b.filters,
                convs=self.convs_per_block if b.convs is None else b.convs,
                dropout=self.block_dropout if b.dropout is None else b.dropout,
            )
            for b in blocks
        ]


@dataclass(frozen=True)
class ResNetVariant:
    """What a ``model.type: resnet`` variant uses unless the config says otherwise."""

    widths: tuple[int, ...]
    activation: str
    batch_norm_momentum: float  # Keras's convention: moving = momentum * moving + (1 - momentum) * batch
    batch_norm_scale: bool
    identity_init: bool
    logit_scale: float
    whitening: bool


RESNET_VARIANTS: dict[str, ResNetVariant] = {
    # Keller Jordan's airbench94: a frozen 2x2 whitening conv, three conv groups with max pooling, GELU,
    # BatchNormalization with no scale (torch momentum 0.6 is Keras 0.4), dirac-initialised convs, logits x 1/9.
    "airbench": ResNetVariant((64, 256, 256), "gelu", 0.4, False, True, 1 / 9, True),
    # David Page's ResNet-9 (cifar10-fast): prep 64, layer1 128 + residual, layer2 256, layer3 512 + residual; logits x 0.125.
    "resnet9": ResNetVariant((64, 128, 256, 512), "relu", 0.9, True, False, 0.125, False),
    # He et al. (2016), section 4.2: 6n+2 layers in three stages of n basic blocks, widths 16/32/64.
    "resnet20": ResNetVariant((16, 32, 64), "relu", 0.9, True, False, 1.0, False),
    "resnet56": ResNetVariant((16, 32, 64), "relu", 0.9, True, False, 1.0, False),
}
RESNET_BLOCKS = {"resnet20": 3, "resnet56": 9}  # basic blocks per stage (n of 6n+2)
MAX_RESNET_WIDTH = 4096  # filters of one conv: a 3x3 conv of 4096 -> 4096 already holds 600 MB of weights
MAX_WHITENING_SAMPLE = 50_000  # training images read for the patch covariance (airbench uses 5,000)


class WhiteningConfig(_Strict):
    """The frozen first layer of ``airbench``: a 2x2 conv whose filters whiten image patches."""

    eps: Annotated[float, Field(gt=0.0, le=1.0)] = 5e-4  # added to each eigenvalue before the inverse square root
    sample: Annotated[int, Field(gt=0, le=MAX_WHITENING_SAMPLE)] = 5000  # training images the covariance is computed from
    # input: eps as it is on the layer's inputs ([-1, 1] pixels); standardized: eps on unit-variance pixels, as airbench94 states it
    eps_scale: Literal["input", "standardized"] = "input"
    bias_epochs: Annotated[int, Field(ge=0, le=100_000)] | None = None  # the bias is frozen after this many epochs (airbench94: 3); null: never


@register_model("resnet", builder="trainer.models.resnet:build_resnet")
class ResNetConfig(WeightOptions, ModelSection):
    """Fast CIFAR networks: ``airbench`` (airbench94), ``resnet9`` (Page's ResNet-9), ``resnet20``/``resnet56`` (He et al.).

    Unset options take the variant's own values (``RESNET_VARIANTS``); ``resolved(name)`` gives the one in force.
    """

    type: Literal["resnet"] = "resnet"
    variant: Literal["airbench", "resnet9", "resnet20", "resnet56"] = "resnet9"
    widths: list[Annotated[int, Field(gt=0, le=MAX_RESNET_WIDTH)]] | None = None
    activation: str | None = None
    batch_norm_momentum: Annotated[float, Field(ge=0.0, lt=1.0)] | None = None
    batch_norm_scale: bool | None = None  # false: BatchNormalization's gamma is not a weight (fixed at 1)
    identity_init: bool | None = None  # dirac: each conv starts as the identity on its first input channels
    logit_scale: Annotated[float, Field(gt=0.0, le=1_000.0)] | None = None  # the logits are multiplied by it
    whitening: WhiteningConfig | None = None  # airbench only; its default applies when unset
    output: Literal["softmax", "logits"] = "softmax"

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, value: str | None) -> str | None:
        return None if value is None else known_activation(value)

    @model_validator(mode="after")
    def _fits_the_variant(self) -> "ResNetConfig":
        expected = len(RESNET_VARIANTS[self.variant].widths)
        if self.widths is not None and len(self.widths) != expected:
            raise ValueError(
                f"widths: variant {self.variant} has {expected} widths (default {list(RESNET_VARIANTS[self.variant].widths)}), "
                f"got {len(self.widths)}: {self.widths}"
            )
        if self.whitening is not None and not RESNET_VARIANTS[self.variant].whitening:
            raise ValueError(f"whitening: only variant airbench has a whitening layer, not {self.variant}; remove whitening")
        return self

    def resolved(self, name: str) -> Any:
        """Option ``name`` as set in the config, else the variant's default."""
        value = getattr(self, name)
        if value is not None:
            return value
        if name == "whitening":
            return WhiteningConfig() if RESNET_VARIANTS[self.variant].whitening else None
        default = getattr(RESNET_VARIANTS[self.variant], name)
        return list(default) if name == "widths" else default
