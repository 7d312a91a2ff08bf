"""The ``sweep:`` section: what a hyperparameter search varies and how it judges trials (no TensorFlow, no Optuna).

``trainer run`` ignores the section; ``trainer sweep`` reads it; ``trainer validate`` checks it,
including every bound and choice against the rest of the schema (``trainer.config.checks.check_sweep``): each is
applied to the config as the ``--set`` override a trial will receive, so a typo in a key or an
impossible value is refused before any trial runs.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import ConfigDict, Field, field_validator, model_serializer, model_validator

from trainer.catalogue.registry import closest
from trainer.config.base import _Strict
from trainer.errors import ConfigError

Bound = Annotated[float, Field(allow_inf_nan=False)]
Scalar = Union[None, bool, int, float, str]


def format_value(value: Any) -> str:
    """``value`` as the YAML text of a ``--set KEY=VALUE`` that reads back to the same value (``1.0e-05``, ``[128, 64]``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")].strip()
    elif text.endswith("..."):
        text = text[: -len("...")].strip()
    return text


def override_text(key: str, value: Any) -> str:
    """The ``KEY=VALUE`` override a trial gets for one sampled value."""
    return f"{key}={format_value(value)}"


SPACE_KEYS = ("float", "int", "choice", "log", "step")
GRID_LIMIT = 100_000  # points of a grid sweep (Optuna lists them all; a search that size never ends anyway)


class ParamSpace(_Strict):
    """One searched key: ``{float: [low, high], log: true}``, ``{int: [low, high], step: 32}`` or ``{choice: [a, b]}``."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False)

    float_range: list[Bound] | None = Field(default=None, alias="float", min_length=2, max_length=2)
    int_range: list[int] | None = Field(default=None, alias="int", min_length=2, max_length=2)
    choice: list[Any] | None = Field(default=None, min_length=1)
    log: bool = False
    step: Annotated[Bound, Field(gt=0)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError(f"must be a mapping such as {{float: [0.0001, 0.01], log: true}} or {{choice: [a, b]}}")
        unknown = [key for key in value if key not in SPACE_KEYS]
        if unknown:
            hint = closest(str(unknown[0]), SPACE_KEYS)
            raise ValueError(
                f"unknown key {unknown[0]!r}{f' (did you mean {hint!r}?)' if hint else ''}; valid keys here: {', '.join(SPACE_KEYS)}"
            )
        return value

    @model_validator(mode="after")
    def _one_consistent_kind(self) -> "ParamSpace":
        given = [name for name, value in (("float", self.float_range), ("int", self.int_range), ("choice", self.choice)) if value is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of float: [low, high], int: [low, high] or choice: [values]; got {', '.join(given) or 'none of them'}"
            )
        if self.choice is not None:
            if self.log or self.step is not None:
                raise ValueError("log and step apply to float and int ranges, not to choice")
            encoded = encode_choices(self.choice)
            if len({(type(value), repr(value)) for value in encoded}) != len(encoded):
                raise ValueError(f"the choices {self.choice!r} repeat a value; list each once")
            return self
        low, high = self.float_range or self.int_range
        if not low < high:
            raise ValueError(f"the range [{low}, {high}] is empty: the low bound must be smaller than the high bound")
        if self.log and low <= 0:
            raise ValueError(f"log: true needs a low bound above 0; got [{low}, {high}]")
        if self.log and self.step is not None:
            raise ValueError("log: true and step cannot be combined (Optuna samples a log range continuously)")
        if self.int_range is not None and self.step is not None and self.step != int(self.step):
            raise ValueError(f"an int range takes a whole step; got step {self.step}")
        return self

    @model_serializer(mode="plain")
    def _as_written(self) -> dict[str, Any]:
        """Back to the YAML form (``{float: [low, high], log: true}``), so a dumped config loads again."""
        data: dict[str, Any] = {self.kind: self.float_range or self.int_range or self.choice}
        if self.log:
            data["log"] = True
        if self.step is not None:
            data["step"] = int(self.step) if self.int_range is not None else self.step
        return data

    @property
    def kind(self) -> str:
        return "float" if self.float_range is not None else "int" if self.int_range is not None else "choice"

    def candidate_values(self) -> list[Any]:
        """The values to check against the schema: both bounds of a range, every choice."""
        if self.choice is not None:
            return list(self.choice)
        low, high = self.float_range or self.int_range
        if self.int_range is not None:
            step = int(self.step or 1)
            high = low + (high - low) // step * step  # the largest value the step reaches
            return [low, high]
        return [float(low), float(high)]

    def grid_count(self) -> int | float | None:
        """How many values a grid visits, counted without listing them (``math.inf`` past any size); None for a continuous range."""
        if self.choice is not None:
            return len(self.choice)
        if self.int_range is not None:
            low, high = self.int_range
            return (high - low) // int(self.step or 1) + 1
        if self.step is None:
            return None
        low, high = self.float_range
        steps = (high - low) / self.step
        return math.floor(steps + 1e-9) + 1 if math.isfinite(steps) else math.inf

    def grid_values(self) -> list[Any] | None:
        """Every value a grid visits (choices, stepped ranges); None for a continuous range. Call after ``grid_count`` is bounded."""
        if self.choice is not None:
            return list(self.choice)
        if self.int_range is not None:
            return list(range(self.int_range[0], self.int_range[1] + 1, int(self.step or 1)))
        if self.step is None:
            return None
        low, high = self.float_range
        return [round(low + index * self.step, 12) for index in range(int(self.grid_count()))]


def encode_choice(value: Any) -> Scalar:
    """A choice as Optuna stores it: scalars as they are, lists and mappings as their YAML text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return format_value(value)


def _ambiguous(values: list[Any]) -> bool:
    """Whether Optuna would confuse two of ``values``: it finds a choice by ``==``, so ``true``, ``1`` and ``1.0`` are one; NaN none."""
    numbers = [v for v in values if isinstance(v, (bool, int, float))]
    if any(isinstance(v, float) and math.isnan(v) for v in numbers):
        return True
    return any(a == b and type(a) is not type(b) for i, a in enumerate(numbers) for b in numbers[i + 1:])


def encode_choices(values: list[Any]) -> list[Scalar]:
    """A list of choices as Optuna stores them, each told apart from the others.

    Usually each value as ``encode_choice`` gives it. When two values are equal to Python but not
    the same (``true`` and ``1``, ``1`` and ``1.0``), every value is stored as its YAML text
    (``'true'``, ``'1'``, ``'1.0'``, a string ``"1"`` as ``"'1'"``), which keeps the type.
    """
    if _ambiguous(values):
        return [format_value(value) for value in values]
    return [encode_choice(value) for value in values]


def decode_choice(values: list[Any], encoded: Any) -> Any:
    """The value of ``values`` that ``encode_choices(values)`` stored as ``encoded`` (types compared too); ``encoded`` if none."""
    for value, stored in zip(values, encode_choices(values)):
        if type(stored) is type(encoded) and stored == encoded:
            return value
    return encoded


# A study's name is also a folder name (<output.dir>/<study>-sweep): no separators, so it cannot lead out of output.dir.
STUDY_NAME_PATTERN = r"^[A-Za-z0-9._-]+$"
STUDY_NAME_MAX = 128


def check_study_name(value: str, key: str = "--study") -> str:
    """``value`` when it is a study name ``sweep.study`` would accept; else ``ConfigError`` naming ``key`` and the rule.

    ``trainer sweep --study`` and the Python API's ``study=`` go through here, so a name given on the
    command line meets the rule of the config's (it names the sweep folder under ``output.dir``).
    """
    import re

    if not isinstance(value, str) or not re.fullmatch(STUDY_NAME_PATTERN, value) or len(value) > STUDY_NAME_MAX:
        shown = repr(value) if len(str(value)) <= 80 else repr(str(value)[:80]) + "..."
        raise ConfigError(
            f"{key}: {shown} is not a study name; use 1 to {STUDY_NAME_MAX} letters, digits, '.', '_' or '-' (no '/': "
            f"the name is also the sweep folder <output.dir>/<study>-sweep). Use --sweep-dir to put the folder elsewhere."
        )
    return value


class SweepConfig(_Strict):
    """``sweep:``: the metric, the budget, Optuna's sampler and pruner, where the study lives, and the search space."""

    metric: str | None = None  # None: val_accuracy (accuracy when data.validation is none)
    direction: Literal["maximize", "minimize"] | None = None  # None: minimize for a loss, maximize otherwise
    trials: Annotated[int, Field(gt=0)] = 20
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    startup_trials: Annotated[int, Field(ge=0)] = 3  # trials that finish before the median pruner may stop one
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    storage: str | None = None  # None: a journal file in the sweep directory; an RDB URL; or a journal file path
    study: str | None = Field(default=None, min_length=1, max_length=STUDY_NAME_MAX, pattern=STUDY_NAME_PATTERN)  # None: the config's name
    space: dict[str, ParamSpace] = Field(min_length=1)

    @field_validator("space")
    @classmethod
    def _dotted_keys(cls, value: dict[str, ParamSpace]) -> dict[str, ParamSpace]:
        for key in value:
            parts = key.split(".")
            if not key or any(not part.strip() for part in parts):
                raise ValueError(f"{key!r} is not a dotted config key such as optimizer.learning_rate")
            if parts[0] in ("sweep", "name", "output"):
                raise ValueError(f"{key!r}: a sweep cannot search {parts[0]} (it names and places the trials)")
        return value

    @model_validator(mode="after")
    def _grid_needs_values(self) -> "SweepConfig":
        if self.sampler == "grid":
            continuous = [key for key, space in self.space.items() if space.grid_count() is None]
            if continuous:
                raise ValueError(
                    f"sampler: grid needs a finite set of values, but {', '.join(continuous)} "
                    "is a continuous float range; give it a step (or use choice)"
                )
            size = 1
            for key, space in self.space.items():  # counted, never listed: {int: [0, 10**12]} is refused at once
                size *= space.grid_count()
                if size > GRID_LIMIT:
                    raise ValueError(
                        f"sampler: grid has more than {GRID_LIMIT:,} points once {key} ({_points(space.grid_count())}) is included; "
                        "a grid that size never finishes: narrow the ranges, raise their step, or use sampler: tpe or random"
                    )
        return self

    def metric_for(self, config: Any) -> str:
        """The metric trials are judged by: the configured one or the default for this config's validation."""
        if self.metric is not None:
            return self.metric
        return "accuracy" if config.data.validation == "none" else "val_accuracy"

    def direction_for(self, metric: str) -> str:
        if self.direction is not None:
            return self.direction
        return "minimize" if metric.endswith("loss") or metric.endswith("error") else "maximize"

    def grid_size(self) -> int | None:
        """The number of grid points (at most GRID_LIMIT: the validator refuses more); None when the sampler is not grid."""
        if self.sampler != "grid":
            return None
        return math.prod(int(space.grid_count()) for space in self.space.values())


def _points(count: int | float) -> str:
    return "too many to count" if count == math.inf else f"{count:,} values"


def validates_on_test(config: Any) -> bool:
    """``data.validation: test`` that does measure the test split (a folder dataset's validation/ or val/ folder takes its place)."""
    if config.data.validation != "test":
        return False
    if config.data.dataset == "folder" and config.data.path is not None:
        return not any((Path(config.data.path) / name).is_dir() for name in ("validation", "val"))
    return True


def sweep_on_test_message(config: Any, metric: str, line: int | None, file: str | Path | None) -> str:
    """Why a sweep may not maximise a ``val_`` metric when validation is the test split: it would select on the test set."""
    where = f"{file}:{line}: " if file and line else f"{file}: " if file else ""
    folder = " (or a validation/ folder of the dataset)" if config.data.dataset == "folder" else ""
    return (
        f"{where}sweep.metric: {metric!r} is measured on the test split (data.validation: test), so the sweep would choose "
        f"its trials on the test set; set data.validation: 0.1{folder} to hold validation out of the training data "
        "(--set data.validation=0.1)."
    )
