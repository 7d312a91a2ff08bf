"""What every config section shares: strict pydantic models (unknown keys refused, types not coerced)."""
from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

ACTIVATIONS = (
    "relu", "gelu", "elu", "selu", "tanh", "sigmoid", "softplus", "softsign",
    "swish", "silu", "leaky_relu", "relu6", "mish", "hard_sigmoid", "exponential", "linear",
)


class _Strict(BaseModel):
    """Base for every config section: unknown keys are refused, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


INT32_MAX = 2**31 - 1  # the largest count TensorFlow's int32 shapes and step counters hold


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("contains a NUL byte (\\x00), which no file name can hold")
    return value


PathText = Annotated[str, AfterValidator(_no_nul)]  # a file or folder path from the config
Count = Annotated[int, Field(gt=0, le=INT32_MAX)]  # epochs, batch sizes, steps, limits: positive and bounded
