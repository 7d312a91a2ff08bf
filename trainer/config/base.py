"""What every config section shares: strict pydantic models (unknown keys refused, types not coerced)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

ACTIVATIONS = (
    "relu", "gelu", "elu", "selu", "tanh", "sigmoid", "softplus", "softsign",
    "swish", "silu", "leaky_relu", "relu6", "mish", "hard_sigmoid", "exponential", "linear",
)


class _Strict(BaseModel):
    """Base for every config section: unknown keys are refused, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)
