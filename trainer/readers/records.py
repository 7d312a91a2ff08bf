"""``manifest.json``, typed once: one pydantic model (``metrics.json`` is ``trainer.readers.run_files.MetricsRecord``).

``trainer run`` and ``trainer export`` write it, ``trainer eval`` / ``predict`` / the
API's ``load_run`` read it back. Reading tolerates files written by older versions (missing
keys take their defaults) and refuses malformed ones with a RunDirError naming the file.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, model_validator

from trainer.errors import RunDirError
from trainer.outputs import atomic_write_json
from trainer.readers.run_files import MANIFEST_FILE, EmaSettings


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _read_object(path: Path) -> dict[str, Any]:
    """A run directory's JSON object file, through the one run-directory reader (``trainer.readers.run_files``)."""
    from trainer.readers.run_files import read_run_json

    return read_run_json(path)


MAX_CLASSES = 1_000_000


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


_REF = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")  # module.path:attr.path


def _is_custom_object(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("ref"), str)
        and _REF.fullmatch(entry["ref"]) is not None
        and isinstance(entry.get("path", ""), str)
        and isinstance(entry.get("factory_params", {}), (dict, type(None)))
    )


def _is_split(value: Any, held: str = "validation") -> bool:
    """``validation_split``, ``test_split``: compared with the split eval computes again (shown, never acted on otherwise)."""
    return (
        isinstance(value, dict) and len(value) <= 16
        and isinstance(value.get("fraction"), float) and 0.0 < value["fraction"] < 1.0
        and all(_is_int(value.get(key), -(2**63), 2**63 - 1) for key in ("seed", held, "train"))
        and isinstance(value.get("digest"), str) and re.fullmatch(r"[0-9a-f]{64}", value["digest"]) is not None
    )


def _is_trained_on(value: Any) -> bool:
    """``trained_on``: a few short strings (it is shown, never acted on)."""
    def short(text: Any) -> bool:
        return isinstance(text, str) and len(text) <= 200

    return (
        isinstance(value, dict) and len(value) <= 16 and all(isinstance(k, str) for k in value)
        and all(short(value.get(k, "")) for k in ("backend", "kind", "precision"))
        and isinstance(value.get("devices", []), list) and len(value.get("devices", [])) <= 1024
        and all(short(d) for d in value.get("devices", []))
    )


def _checked(ok: Callable[[Any], bool]) -> AfterValidator:
    """A field holding a small mapping that ``ok`` checks; kept as the plain dict the readers use."""
    def check(value: Any) -> Any:
        if value is not None and not ok(value):
            raise ValueError("malformed")
        return value

    return AfterValidator(check)


# what a reader accepts for each field, as said when a manifest is refused
EXPECTED: dict[str, str] = {
    "dataset": "expected a string",
    "num_classes": f"expected a whole number from 1 to {MAX_CLASSES}",
    "class_names": "expected a list of strings",
    "input_shape": "expected a list of positive whole numbers",
    "label_encoding": "expected sparse or onehot",
    "loss": "expected a mapping",
    "model_output": "expected softmax or logits",
    "custom_objects": "expected a list of {ref: 'module:attr', path[, factory_params]} entries",
    "model_type": "expected a string",
    "trained_on": "expected {backend, kind, devices: [names], precision} as strings",
    "ema": "expected {decay: a number between 0 and 1, warmup: true or false, every: a whole number}",
    "validation_split": "expected {fraction: a number between 0 and 1, seed, validation, train: whole numbers, digest: 64 hex digits}",
    "test_split": "expected {fraction: a number between 0 and 1, seed, test, train: whole numbers, digest: 64 hex digits}",
}


class Manifest(BaseModel):
    """What a saved model needs to be used: its inputs, classes, labels and the user code it holds (``manifest.json``).

    One model for the writers (``trainer run``, ``trainer export``) and every reader: each field is
    typed and bounded, so nothing malformed reaches Keras; a file from an older version takes the
    defaults for the keys it lacks.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    dataset: StrictStr = "unknown"
    num_classes: Optional[Annotated[StrictInt, Field(ge=1, le=MAX_CLASSES)]] = None  # absent: len(class_names)
    class_names: Annotated[list[StrictStr], Field(max_length=MAX_CLASSES)] = []
    input_shape: Annotated[list[Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]], Field(max_length=8)] = []
    label_encoding: Literal["sparse", "onehot"] = "sparse"
    loss: dict[str, Any] = {}
    model_output: Literal["softmax", "logits"] = "softmax"
    custom_objects: Annotated[list[Any], _checked(lambda v: all(_is_custom_object(e) for e in v))] = []
    model_type: Optional[StrictStr] = None
    trained_on: Annotated[Optional[dict[str, Any]], _checked(_is_trained_on)] = None  # backend, device kind and names, precision
    ema: EmaSettings = None  # train.ema: model.h5 holds the average ({decay, warmup, every})
    # data.validation: FRACTION: {fraction, seed, validation, train, digest} of the split (trainer.data.loaders.split_record)
    validation_split: Annotated[Optional[dict[str, Any]], _checked(_is_split)] = None
    # data.test: FRACTION: {fraction, seed, test, train, digest} of the split (trainer.data.loaders.test_split_record)
    test_split: Annotated[Optional[dict[str, Any]], _checked(lambda v: _is_split(v, "test"))] = None

    @model_validator(mode="after")
    def _classes_counted(self) -> "Manifest":
        if self.num_classes is None:  # a manifest from before num_classes
            object.__setattr__(self, "num_classes", len(self.class_names))
        return self

    def write(self, run_dir: Path) -> None:
        atomic_write_json(Path(run_dir) / MANIFEST_FILE, self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump()
        for optional in ("ema", "validation_split", "test_split"):
            if data[optional] is None:
                del data[optional]
        return data

    @classmethod
    def read(cls, run_dir: Path) -> "Manifest | None":
        """The run's manifest, or None when the run directory has none (a run from before manifests)."""
        path = Path(run_dir) / MANIFEST_FILE
        if not path.exists() and not path.is_symlink():  # a folder, FIFO or link there is read, and refused
            return None
        return cls.from_dict(_read_object(path), path)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Path | str = MANIFEST_FILE) -> "Manifest":
        """A manifest from its JSON; a malformed field is a RunDirError naming the file, the field, its value and what is allowed."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            names = dict.fromkeys(str(error["loc"][0]) for error in exc.errors() if error["loc"])
            problems = [f"{name} is {_short(data.get(name))}, {EXPECTED.get(name, 'malformed')}" for name in names]
            raise RunDirError(f"{source} is malformed: {'; '.join(problems)}.") from None
