"""Readers for the files of a run directory: ``checkpoint.json``, ``metrics.json``, ``history.csv`` (pydantic, no TensorFlow).

A run directory is untrusted data (it may be copied from anywhere or edited by hand): each file
is read through ``trainer.readers`` (a regular file inside the run directory, at most a stated
size, strict UTF-8) and parsed into a typed record whose every field is bounded; anything else is
a ``RunDirError`` (exit 2) naming the file and the field. Nothing else in trainer opens these
files. ``manifest.json`` is ``trainer.readers.records.Manifest`` (pydantic too), read through
``read_run_json``; ``metrics.json`` is ``MetricsRecord`` here, the one model its writer and readers share.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator, model_validator

from trainer.errors import RunDirError
from trainer.outputs import atomic_write_json
from trainer.readers import KiB, MiB, read_csv, read_json_object, validate

# The files of a run directory, by name (``trainer.run.rundir`` writes them; the readers here read them back)
CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.h5"
CHECKPOINT_FILE = "checkpoint.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
MANIFEST_FILE = "manifest.json"
LAST_FILE = "last.h5"  # the last epoch's weights when model.h5 holds the best one (``trainer.run.best``)

CHECKPOINT_VERSION = 2  # the newest checkpoint.json format (1: .weights.h5 files)
CHECKPOINT_LIMIT = 4 * MiB  # ~25 KiB for a small model: random state and a few seed generators
RUN_JSON_LIMIT = 16 * MiB  # metrics.json, manifest.json (a manifest with a million class names is ~10 MiB)
HISTORY_LIMIT = 64 * MiB  # ~150 bytes an epoch
HISTORY_MAX_COLUMNS = 1_000
HISTORY_COLUMN_NAME = 256  # characters in a column name
REASON_LIMIT = 64 * KiB  # characters of metrics.json's reason
MAX_EPOCH = 2**31 - 1  # as train.epochs
MAX_CALLBACKS = 1_000
MAX_SEED_GENERATORS = 100_000

# The only files a checkpoint may name: trainer's own names, no folder part, so never outside the run.
WEIGHTS_FILE = re.compile(r"checkpoint-epoch(\d{4,10})\.weights\.(npz|h5)")
FINISHED_WEIGHTS = ("last.h5", "model.h5")  # a completed run's checkpoint.json names the last epoch's .h5 (trainer.run.best)
BEST_WEIGHTS_FILE = re.compile(r"checkpoint-best(\d{1,4})-epoch(\d{4,10})\.weights\.npz")

UInt32 = Annotated[StrictInt, Field(ge=0, le=2**32 - 1)]
Epoch = Annotated[StrictInt, Field(ge=0, le=MAX_EPOCH)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number (trainer writes infinity as the string 'inf')")
    return value


class CallbackState(_Record):
    """The state of one callback that carries state from epoch to epoch (early_stopping, reduce_lr_on_plateau, ...).

    Only these attributes are ever set back on a callback: a checkpoint cannot set any other.
    """

    wait: Optional[Epoch] = None
    best: Union[StrictInt, StrictFloat, Literal["inf", "-inf"], None] = None
    best_epoch: Optional[Epoch] = None
    stopped_epoch: Optional[Epoch] = None
    cooldown_counter: Optional[Epoch] = None
    best_weights_file: Optional[StrictStr] = None

    @field_validator("best")
    @classmethod
    def _best_is_finite(cls, value: Any) -> Any:
        return _finite(float(value)) if isinstance(value, (int, float)) else value

    @field_validator("best_weights_file")
    @classmethod
    def _best_weights_name(cls, value: str | None) -> str | None:
        if value is not None and not BEST_WEIGHTS_FILE.fullmatch(value):
            raise ValueError("must be a file name trainer writes: checkpoint-bestI-epochNNNN.weights.npz")
        return value


PythonRandom = tuple[Literal[3], Annotated[list[UInt32], Field(min_length=625, max_length=625)], Optional[StrictFloat]]
NumpyRandom = tuple[Literal["MT19937"], Annotated[list[UInt32], Field(min_length=624, max_length=624)], Annotated[StrictInt, Field(ge=0, le=624)], Annotated[StrictInt, Field(ge=0, le=1)], StrictFloat]
SeedState = Annotated[list[Annotated[StrictInt, Field(ge=-(2**63), le=2**64 - 1)]], Field(max_length=16)]


class RandomState(_Record):
    """NumPy's and Python's random state and Keras's seed generators' state at the epoch's end."""

    seed_generators: Annotated[list[SeedState], Field(max_length=MAX_SEED_GENERATORS)] = []
    numpy: Optional[NumpyRandom] = None
    python: Optional[PythonRandom] = None

    @field_validator("python")
    @classmethod
    def _python_index(cls, value: Any) -> Any:
        if value is not None and value[1][-1] > 624:  # the last number is the position in the 624 words
            raise ValueError("the position (the last number of the state) must be at most 624")
        if value is not None and value[2] is not None:
            _finite(value[2])
        return value

    @field_validator("numpy")
    @classmethod
    def _numpy_gauss(cls, value: Any) -> Any:
        if value is not None:
            _finite(value[4])
        return value


class DataFingerprint(_Record):
    """What ``data.path`` held when the run started (``trainer.run.data_fingerprint``): compared on ``--resume``."""

    path: Annotated[StrictStr, Field(max_length=4096)]
    kind: Literal["file", "folder"]
    files: Annotated[StrictInt, Field(ge=0, le=10**9)]
    bytes: Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]
    content: Literal["full", "listing"]  # full: every byte hashed; listing: names, sizes and modification times
    digest: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]


class CheckpointRecord(BaseModel):
    """``checkpoint.json``: the last completed epoch and everything needed to continue from it."""

    model_config = ConfigDict(extra="ignore", frozen=True)  # keys a newer trainer adds are ignored

    version: Annotated[StrictInt, Field(ge=1, le=CHECKPOINT_VERSION)] = 1
    epoch: Annotated[StrictInt, Field(ge=1, le=MAX_EPOCH)]
    completed: StrictBool = False  # the run completed: weights_file is last.h5 (or model.h5), no .npz is kept (before weights_file: its check reads it)
    weights_file: StrictStr
    callbacks: Annotated[list[CallbackState], Field(max_length=MAX_CALLBACKS)] = []
    random: RandomState = RandomState()
    data: Optional[DataFingerprint] = None

    @field_validator("weights_file")
    @classmethod
    def _weights_name(cls, value: str, info: Any) -> str:
        if info.data.get("completed") and value not in FINISHED_WEIGHTS:
            raise ValueError("must be last.h5 or model.h5 in a completed run's checkpoint")
        if not info.data.get("completed") and not WEIGHTS_FILE.fullmatch(value):
            raise ValueError("must be a file name trainer writes: checkpoint-epochNNNN.weights.npz (or .weights.h5; last.h5 or model.h5 once the run completed)")
        return value

    @model_validator(mode="after")
    def _weights_of_this_epoch(self) -> "CheckpointRecord":
        if self.completed:
            if any(s.best_weights_file for s in self.callbacks):
                raise ValueError("a completed run's checkpoint names no best-weights .npz")
            return self
        named = int(WEIGHTS_FILE.fullmatch(self.weights_file).group(1))  # type: ignore[union-attr]
        if named != self.epoch:
            raise ValueError(f"weights_file {self.weights_file!r} holds epoch {named} but epoch is {self.epoch}")
        return self

    def named_files(self) -> list[str]:
        """Every weights file this checkpoint needs: the epoch's and the best weights so far."""
        return [self.weights_file] + [s.best_weights_file for s in self.callbacks if s.best_weights_file]


def read_checkpoint_record(run_dir: Path | str) -> CheckpointRecord | None:
    """The run directory's ``checkpoint.json`` as a typed record; None when there is none; RunDirError when it is bad."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists() and not path.is_symlink():
        return None
    return validate(CheckpointRecord, read_json_object(path, limit=CHECKPOINT_LIMIT, what="the checkpoint.json trainer run writes"), path)


Section = Annotated[dict[Annotated[str, Field(max_length=HISTORY_COLUMN_NAME)], Union[StrictInt, StrictFloat, Annotated[StrictStr, Field(max_length=1024)], None]], Field(max_length=HISTORY_MAX_COLUMNS)]


class BestRecord(_Record):
    """``metrics.json``'s ``best``: which epoch ``model.h5`` holds (``trainer.run.best``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    monitor: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    mode: Literal["min", "max"]
    epoch: Optional[Annotated[StrictInt, Field(ge=1, le=MAX_EPOCH)]] = None
    value: Union[StrictInt, StrictFloat, None] = None
    last_epoch: Annotated[StrictInt, Field(ge=0, le=MAX_EPOCH)] = 0
    last_weights: Literal["last.h5", "model.h5"] = "model.h5"


def _ema_settings(value: Any) -> Any:
    if value is not None:
        from trainer.config.ema import EmaConfig

        EmaConfig.model_validate(value)  # shown, never acted on: bounded as train.ema is
    return value


EmaSettings = Annotated[Optional[dict[str, Any]], AfterValidator(_ema_settings)]  # metrics.json's and manifest.json's ema


class MetricsRecord(BaseModel):
    """``metrics.json``: how a run ended and what it measured; one model for the writer (``trainer run``) and every reader.

    The writer builds it through the same validation a reader applies, so a run never writes a
    ``metrics.json`` that its own ``trainer eval`` would refuse.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    train: Optional[Section] = None
    validation: Optional[Section] = None
    test: Optional[Section] = None
    test_tta: Optional[Section] = None  # evaluate.tta: the test split over its views, with its mode
    epochs_completed: Annotated[StrictInt, Field(ge=0, le=MAX_EPOCH)] = 0
    wall_seconds: Optional[Annotated[Union[StrictInt, StrictFloat], Field(ge=0, le=10**10)]] = None
    seed: Optional[StrictInt] = None
    device: Optional[dict[str, Any]] = None
    distribute: Optional[dict[str, Any]] = None
    versions: Optional[dict[str, Any]] = None
    run_dir: Optional[Annotated[StrictStr, Field(max_length=4096)]] = None
    reason: Optional[Annotated[StrictStr, Field(max_length=REASON_LIMIT)]] = None
    ema: EmaSettings = None  # train.ema's settings
    best: Optional[BestRecord] = None  # which epoch model.h5 holds; absent in runs from before best/last

    @classmethod
    def from_history(cls, status: str, rows: list[dict[str, Any]], **values: Any) -> "MetricsRecord":
        """The writer's record: the last history row split into train and validation numbers, plus ``values``."""
        last = rows[-1] if rows else {}
        if values.get("reason") is not None and len(values["reason"]) > REASON_LIMIT:  # a huge error text: its start
            values["reason"] = values["reason"][: REASON_LIMIT - 3] + "..."
        return cls.model_validate({
            "status": status,
            "train": {k: v for k, v in last.items() if k != "epoch" and not k.startswith("val_")} or None,
            "validation": {k[4:]: v for k, v in last.items() if k.startswith("val_")} or None,
            "epochs_completed": len(rows),
            **values,
        })

    def to_dict(self) -> dict[str, Any]:
        """The JSON object ``metrics.json`` holds: ``test_tta``, ``ema``, ``best`` only when set; ``reason`` right after the status."""
        data = self.model_dump()
        for optional in ("test_tta", "ema", "best"):
            if data[optional] is None:
                del data[optional]
        if data["reason"] is None:
            del data["reason"]
        else:  # the reason right after the status, where people look
            data = {"status": data.pop("status"), "reason": data.pop("reason"), **data}
        return data

    def write(self, run_dir: Path | str) -> dict[str, Any]:
        data = self.to_dict()
        atomic_write_json(Path(run_dir) / METRICS_FILE, data)
        return data


def read_run_json(path: Path | str, *, limit: int = RUN_JSON_LIMIT, what: str = "the JSON object trainer run writes") -> dict[str, Any]:
    """A JSON object file of a run directory (``manifest.json``, ``metrics.json``), read with the run directory's limits."""
    path = Path(path)
    return read_json_object(path, limit=limit, what=what)  # inside its own folder: a link out of it is refused


def read_metrics_record(run_dir: Path | str) -> MetricsRecord | None:
    """The run's ``metrics.json`` as a typed record; None when it has none (a run in progress or killed)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists() and not path.is_symlink():
        return None
    return validate(MetricsRecord, read_run_json(path, what="the metrics.json trainer run writes"), path)


@dataclass(frozen=True)
class HistoryTable:
    """A per-epoch CSV log (``history.csv``, a csv_logger file): column names and rows with numbers parsed."""

    columns: list[str]
    rows: list[dict[str, Any]]
    lines: list[list[str]]  # the rows as written (text), for rewriting them unchanged
    cut_row: bool = False  # the last line was cut short (a kill while it was written) and is left out

    def epochs(self) -> list[int]:
        return [row["epoch"] for row in self.rows]


def read_history_table(path: Path | str, *, folder: Path | str | None = None, what: str = "history.csv as trainer run writes it") -> HistoryTable:
    """A per-epoch CSV log, bounded and typed: an ``epoch`` column of whole numbers, every row as long as the header.

    A last row shorter than the header is a row cut short by a kill: it is left out (``cut_row``).
    An empty file is an empty table (a kill before the first row).
    """
    path = Path(path)
    if folder is not None:  # absolute, so that a relative path is not taken as relative to the folder
        path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    header, lines = read_csv(path, limit=HISTORY_LIMIT, folder=folder, max_columns=HISTORY_MAX_COLUMNS, what=what)
    if not header:
        return HistoryTable([], [], [])
    problem = _header_problem(header)
    if problem:
        raise RunDirError(f"{path}: the header row {problem}; expected {what}.")
    cut = bool(lines) and len(lines[-1]) < len(header)
    if cut:
        lines = lines[:-1]
    rows = []
    for number, line in enumerate(lines, start=2):
        if len(line) != len(header):
            raise RunDirError(f"{path}: line {number} has {len(line)} fields but the header has {len(header)}; expected {what}.")
        row = {name: _parse_value(text) for name, text in zip(header, line)}
        epoch = row["epoch"]
        if not (isinstance(epoch, int) and 0 <= epoch <= MAX_EPOCH):
            raise RunDirError(f"{path}: line {number}: epoch is {line[header.index('epoch')][:40]!r}, expected a whole number from 0 to {MAX_EPOCH}; expected {what}.")
        rows.append(row)
    return HistoryTable(list(header), rows, lines, cut)


def _header_problem(header: list[str]) -> str | None:
    if "epoch" not in header:
        return "has no epoch column"
    if len(set(header)) != len(header):
        return "names a column twice"
    if any(not name or len(name) > HISTORY_COLUMN_NAME for name in header):
        return f"has an empty column name or one longer than {HISTORY_COLUMN_NAME} characters"
    return None


def _parse_value(text: str) -> Any:
    """A CSV field: empty -> None, a whole number -> int, a number -> float, anything else stays text."""
    if text == "":
        return None
    if re.fullmatch(r"[+-]?\d{1,30}", text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def read_checkpoint_arrays(path: Path, grouped: bool = False) -> Any:
    """The arrays of a checkpoint's ``.npz`` (``trainer.run.checkpoint.write_arrays``): the ``model`` group in order, or every group.

    Read by the one bounded ``.npz`` reader (``trainer.readers.decoders.read_npz``) with every
    member stored uncompressed, as trainer writes them: a member whose ``.npy`` header declares
    more than it holds, a compressed member (a zip bomb) or anything else is a ``RunDirError``
    before NumPy allocates.
    """
    from trainer.errors import DataError
    from trainer.readers.decoders import read_npz

    try:
        arrays = read_npz(path, None, stored=True)
    except DataError as exc:
        raise RunDirError(f"{path} is not a weights file trainer writes ({exc.message}); this run cannot be resumed.") from None
    groups: dict[str, list[Any]] = {}
    for key in sorted(arrays):  # model/000000, model/000001, ..., optimizer/000000, ...
        groups.setdefault(key.split("/", 1)[0], []).append(arrays[key])
    return groups if grouped else groups.get("model", [])
