"""How an input shape is adapted for a backbone (at least its minimum size, three channels); no TensorFlow.

Shared by the pre-flight checks (which announce the adaptation) and the model builder (which
builds it), so the notice and the layers can never disagree.
"""
from __future__ import annotations

from dataclasses import dataclass

VGG16_MIN_SIZE = 32  # five 2x2 poolings need at least 32 pixels per side


@dataclass(frozen=True)
class InputAdaptation:
    """Zero padding (top, bottom, left, right) and whether greyscale is repeated to three channels."""

    padding: tuple[int, int, int, int]
    repeat_channels: bool

    @property
    def needed(self) -> bool:
        return self.repeat_channels or any(self.padding)


def input_adaptation(input_shape: tuple[int, ...], min_size: int) -> InputAdaptation:
    """What a backbone taking at least ``min_size`` x ``min_size`` RGB needs done to images of ``input_shape``."""
    height, width = int(input_shape[0]), int(input_shape[1])
    channels = int(input_shape[2]) if len(input_shape) > 2 else 1
    pad_h, pad_w = max(0, min_size - height), max(0, min_size - width)
    return InputAdaptation((pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2), channels == 1)


def vgg16_adaptation(input_shape: tuple[int, ...]) -> InputAdaptation:
    """What VGG16 needs done to images of ``input_shape`` (height, width, channels)."""
    return input_adaptation(input_shape, VGG16_MIN_SIZE)


def adaptation_notice(input_shape: tuple[int, ...], model_type: str = "vgg16_head", backbone: str = "vgg16") -> str | None:
    """One line saying how the images will be adapted, or None when the backbone takes them as they are."""
    from trainer.catalogue.backbones import backbone_entry

    entry = backbone_entry(backbone)
    adaptation = input_adaptation(input_shape, entry.min_size)
    if not adaptation.needed:
        return None
    top, bottom, left, right = adaptation.padding
    height, width = int(input_shape[0]), int(input_shape[1])
    steps = []
    if any(adaptation.padding):
        steps.append(
            f"zero-padded from {height}x{width} to {height + top + bottom}x{width + left + right} "
            f"({entry.label} needs at least {entry.min_size}x{entry.min_size})"
        )
    if adaptation.repeat_channels:
        steps.append("greyscale repeated to 3 channels")
    return f"model {model_type}: input images are " + " and ".join(steps) + ", inside the model."
