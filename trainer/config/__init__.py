"""The config layer: the pydantic schema, YAML with line numbers, ``--set`` overrides and pre-flight checks.

Nothing here imports TensorFlow, so ``trainer --help`` and ``trainer validate`` stay fast.
"""
from trainer.config.loading import load_config, parse_override
from trainer.config.schema import Config, NamedSpec, OutputConfig

__all__ = ["Config", "NamedSpec", "OutputConfig", "load_config", "parse_override"]
