"""``manifest.json``, typed once (``metrics.json`` is ``trainer.readers.run_files.MetricsRecord``).

``trainer run`` writes them, ``trainer runs`` lists them, ``trainer eval`` / ``predict`` / the
API's ``load_run`` read them back. Reading tolerates files written by older versions (missing
keys take their defaults) and refuses malformed ones with a RunDirError naming the file.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from trainer.errors import RunDirError
from trainer.outputs import atomic_write_json
from trainer.readers.run_files import MANIFEST_FILE

def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _read_object(path: Path) -> dict[str, Any]:
    """A run directory's JSON object file, through the one run-directory reader (``trainer.readers.run_files``)."""
    from trainer.readers.run_files import read_run_json

    return read_run_json(path)


@dataclass
class Manifest:
    """What a saved model needs to be used: its inputs, classes, labels and the user code it holds."""

    dataset: str
    num_classes: int
    class_names: list[str]
    input_shape: list[int]
    label_encoding: str
    loss: dict[str, Any]
    model_output: str
    custom_objects: list[dict[str, Any]] = field(default_factory=list)
    model_type: str | None = None
    trained_on: dict[str, Any] | None = None  # backend, device kind and names, precision (DeviceInfo.trained_on)
    ema: dict[str, Any] | None = None  # train.ema: model.h5 holds the average of the weights ({decay, warmup, every}); absent when off
    # data.validation: FRACTION: {fraction, seed, validation, train, digest} of the split (trainer.data.loaders.split_record)
    validation_split: dict[str, Any] | None = None
    # data.test: FRACTION: {fraction, seed, test, train, digest} of the split (trainer.data.loaders.test_split_record)
    test_split: dict[str, Any] | None = None

    def write(self, run_dir: Path) -> None:
        atomic_write_json(Path(run_dir) / MANIFEST_FILE, self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
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
        """A manifest from its JSON; every field's type and range is checked, so nothing malformed reaches Keras."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        problems = [f"{name} is {_short(values[name])}, {allowed}" for name, allowed in _manifest_problems(values)]
        if problems:
            raise RunDirError(f"{source} is malformed: {'; '.join(problems)}.")
        values.setdefault("dataset", "unknown")
        values.setdefault("num_classes", len(values.get("class_names") or []))
        values.setdefault("class_names", [])
        values.setdefault("input_shape", [])
        values.setdefault("label_encoding", "sparse")
        values.setdefault("loss", {})
        values.setdefault("model_output", "softmax")
        return cls(**values)


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


# field -> (is it acceptable, what is expected)
_MANIFEST_FIELDS: dict[str, tuple[Any, str]] = {
    "dataset": (lambda v: isinstance(v, str), "expected a string"),
    "num_classes": (lambda v: _is_int(v, 1, MAX_CLASSES), f"expected a whole number from 1 to {MAX_CLASSES}"),
    "class_names": (lambda v: isinstance(v, list) and len(v) <= MAX_CLASSES and all(isinstance(n, str) for n in v), "expected a list of strings"),
    "input_shape": (lambda v: isinstance(v, list) and len(v) <= 8 and all(_is_int(d, 1, 2**31 - 1) for d in v), "expected a list of positive whole numbers"),
    "label_encoding": (lambda v: v in ("sparse", "onehot"), "expected sparse or onehot"),
    "loss": (lambda v: isinstance(v, dict), "expected a mapping"),
    "model_output": (lambda v: v in ("softmax", "logits"), "expected softmax or logits"),
    "custom_objects": (lambda v: isinstance(v, list) and all(_is_custom_object(e) for e in v), "expected a list of {ref: 'module:attr', path[, factory_params]} entries"),
    "model_type": (lambda v: v is None or isinstance(v, str), "expected a string"),
    "trained_on": (lambda v: v is None or _is_trained_on(v), "expected {backend, kind, devices: [names], precision} as strings"),
    "ema": (lambda v: v is None or _is_ema(v), "expected {decay: a number between 0 and 1, warmup: true or false, every: a whole number}"),
    "validation_split": (lambda v: v is None or _is_split(v), "expected {fraction: a number between 0 and 1, seed, validation, train: whole numbers, digest: 64 hex digits}"),
    "test_split": (lambda v: v is None or _is_split(v, "test"), "expected {fraction: a number between 0 and 1, seed, test, train: whole numbers, digest: 64 hex digits}"),
}


def _is_split(value: Any, held: str = "validation") -> bool:
    """``validation_split``, ``test_split``: compared with the split eval computes again (shown, never acted on otherwise)."""
    return (
        isinstance(value, dict) and len(value) <= 16
        and isinstance(value.get("fraction"), float) and 0.0 < value["fraction"] < 1.0
        and all(_is_int(value.get(key), -(2**63), 2**63 - 1) for key in ("seed", held, "train"))
        and isinstance(value.get("digest"), str) and re.fullmatch(r"[0-9a-f]{64}", value["digest"]) is not None
    )


def _is_ema(value: Any) -> bool:
    """``ema``: the settings of the average (shown, never acted on), as ``trainer.config.ema.EmaConfig`` bounds them."""
    from pydantic import ValidationError

    from trainer.config.ema import EmaConfig

    try:
        EmaConfig.model_validate(value)
    except ValidationError:
        return False
    return True


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


def _manifest_problems(values: dict[str, Any]) -> list[tuple[str, str]]:
    return [(name, allowed) for name, (ok, allowed) in _MANIFEST_FIELDS.items() if name in values and not ok(values[name])]
