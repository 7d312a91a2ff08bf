"""Export a finished run to SavedModel, ONNX or LiteRT through Keras 3's ``model.export``, checked for parity.

An export keeps ``model.h5``'s contract: raw 0..255 pixels in (float32, ``(N, H, W, C)`` of the
trained shape, input named ``image``), class probabilities out (a logits model gets its softmax
inside the export). Every export is checked: up to 1,000 examples of the run's test split go
through the Keras model and through the exported one (``tf.saved_model.load``, onnxruntime,
``ai_edge_litert``'s interpreter); ``export-<format>.json`` beside the export records the
numbers, and the run's ``manifest.json`` is copied there so ``trainer predict`` can use the
export. An export outside the bounds raises ``ExportParityError`` (exit 1); its file is kept,
with the report's warning beside it. Nothing here prints.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from trainer.catalogue.registry import unknown_choice_message
from trainer.errors import ConfigError, DataError, TrainerError
from trainer.extras import require_modules
from trainer.inference.exported import open_exported
from trainer.inference.load import LoadedRun
from trainer.run.records import Manifest
from trainer.run.rundir import MANIFEST_FILE, atomic_write_json

PARITY_EXAMPLES = 1000
MIN_TOP1_AGREEMENT = 0.999
MAX_PROBABILITY_DIFFERENCE = 1e-4
INPUT_NAME = "image"


@dataclass(frozen=True)
class ExportFormat:
    name: str  # what --format takes
    keras_format: str  # what keras.Model.export takes
    default_name: str  # the file or folder written in the run directory by default
    suffix: str  # what an --output path must end with ("" for a folder)
    modules: tuple[str, ...] = ()  # what exporting needs beyond TensorFlow (the parity runner's are in exported.py)
    extra: str | None = None


FORMATS: dict[str, ExportFormat] = {
    "savedmodel": ExportFormat("savedmodel", "tf_saved_model", "savedmodel", ""),
    "onnx": ExportFormat("onnx", "onnx", "model.onnx", ".onnx", ("tf2onnx", "onnx", "onnxruntime"), "onnx"),
    "litert": ExportFormat("litert", "litert", "model.tflite", ".tflite", ("ai_edge_litert",), "litert"),
}


class ExportParityError(TrainerError):
    """The exported model disagrees with the Keras model beyond the bounds: exit 1 (the file is kept)."""

    def __init__(self, message: str, report: "ExportReport"):
        super().__init__(message)
        self.report = report


@dataclass
class ExportReport:
    """``export-<format>.json``: what was exported, its contract and how closely it matches the Keras model."""

    format: str
    path: str
    file_size_bytes: int
    input: dict[str, Any]
    output: dict[str, Any]
    parity: dict[str, Any]
    run_dir: str
    report_path: str = ""
    manifest_path: str = ""
    warning: str | None = None
    exported_at: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.parity.get("passed"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def get_format(name: str) -> ExportFormat:
    if name not in FORMATS:
        raise ConfigError(unknown_choice_message("--format", name, FORMATS))
    return FORMATS[name]


def export_path(run_dir: Path | None, fmt: ExportFormat, output: Path | None) -> Path | None:
    """Where the export goes: ``--output`` (checked against the format) or ``<run dir>/<default name>``."""
    if output is None:
        return Path(run_dir) / fmt.default_name if run_dir is not None else None
    path = Path(output)
    if fmt.suffix and path.suffix.lower() != fmt.suffix:
        raise ConfigError(f"--output {path}: a {fmt.name} export is one {fmt.suffix} file; got {path.suffix or '(no suffix)'!r}. Try {path.with_suffix(fmt.suffix)}.")
    if not fmt.suffix and path.is_file():
        raise ConfigError(f"--output {path}: a SavedModel is a folder, but {path} is a file; name a new folder.")
    if not fmt.suffix and path.is_dir() and any(path.iterdir()) and not (path / "saved_model.pb").is_file():
        raise ConfigError(
            f"--output {path}: the folder exists and holds files that are not a SavedModel; a SavedModel export "
            f"replaces its folder, so name a new one such as {path / fmt.default_name}."
        )
    if path.is_dir() and fmt.suffix:
        raise ConfigError(f"--output {path}: is a folder; a {fmt.name} export is one file such as {path / fmt.default_name}.")
    return path


def check_can_export(format_name: str) -> ExportFormat:
    """The format, with its packages present (``MissingExtraError``, exit 2, names the install command)."""
    fmt = get_format(format_name)
    require_modules(fmt.modules, fmt.extra, f"trainer export --format {fmt.name}")
    return fmt


def parity_examples(run: LoadedRun, limit: int = PARITY_EXAMPLES) -> tuple[np.ndarray, np.ndarray, str]:
    """Up to ``limit`` examples of the run's test split (validation or train when it has none) as raw float32 pixels."""
    from trainer.data.loaders import load_data

    data = load_data(run.config.data, seed=run.config.seed)
    for split in ("test", "validation", "train"):
        x, y = data.split(split)
        if x is not None and len(x):
            break
    else:
        raise DataError(f"{data.source}: no examples to check the export against (the test, validation and train splits are empty).")
    if tuple(x.shape[1:]) != run.input_shape:
        raise DataError(
            f"{data.source}: images are {tuple(x.shape[1:])} but the model {run.model_path} takes {run.input_shape}; "
            "point data.path (--set data.path=...) at the dataset the model was trained on."
        )
    return np.asarray(x[:limit], dtype=np.float32), np.asarray(y[:limit]), split


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def compute_dtypes(model) -> set[str]:
    """The compute dtypes of every layer (``bfloat16`` / ``float16`` too when the run trained in mixed precision)."""
    return {str(layer.dtype_policy.compute_dtype) for layer in _all_layers(model) if getattr(layer, "dtype_policy", None) is not None}


def float32_model(model):
    """A float32 copy of a mixed-precision model, same weights; the model itself when it computes in float32 already.

    ONNX and LiteRT have no usable bfloat16 kernels (onnxruntime refuses the graph, LiteRT needs
    TensorFlow's Flex ops), and the export's contract is float32 in and out.
    """
    import keras

    if compute_dtypes(model) <= {"float32"}:
        return model

    def as_float32(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=as_float32, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def inference_model(run: LoadedRun, model=None):
    """The run's model as exports take it: input ``image`` (float32 raw pixels), probabilities out."""
    import keras

    inputs = keras.Input(shape=run.input_shape, name=INPUT_NAME, dtype="float32")
    outputs = (model if model is not None else run.model)(inputs)
    if run.model_output == "logits":
        outputs = keras.layers.Softmax(name="probabilities", dtype="float32")(outputs)
    return keras.Model(inputs, outputs, name=f"{run.model.name}_export")


@contextlib.contextmanager
def _quiet_export():
    """tf2onnx and the TFLite converter warn about NumPy aliases and legacy APIs the user can do nothing about."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def write_export(model, fmt: ExportFormat, path: Path) -> None:
    """``model.export`` into a temporary sibling, then moved into place (a previous export there is replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        target = staging / (path.name if fmt.suffix else "savedmodel")
        with _quiet_export():
            model.export(str(target), format=fmt.keras_format, verbose=False)
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def export_manifest(run: LoadedRun) -> Manifest:
    """The run's manifest (built from the loaded run for a bare model file)."""
    if run.manifest is not None:
        return run.manifest
    return Manifest(
        dataset=run.config.data.dataset, num_classes=run.num_classes, class_names=list(run.class_names),
        input_shape=list(run.input_shape), label_encoding=run.label_encoding, loss={}, model_output=run.model_output,
        model_type=run.config.model.type,
    )


def export_run(run: LoadedRun, format_name: str, output: Path | None = None, *, examples: int = PARITY_EXAMPLES) -> ExportReport:
    """Export ``run`` to ``format_name``, check parity on up to ``examples`` test examples, write the report.

    Returns the report; raises ``ExportParityError`` (report attached, files kept) when top-1
    agreement is below 99.9% or a probability differs by more than 1e-4.
    """
    from trainer.inference.predict import probabilities
    from trainer.run.compile import versions

    fmt = check_can_export(format_name)
    path = export_path(run.run_dir, fmt, output)
    x, y, split = parity_examples(run, examples)  # before exporting: missing data costs no conversion
    run_probabilities = probabilities(run.model, x, run.model_output)  # what trainer predict on the run gives
    reference = float32_model(run.model)
    mixed = reference is not run.model
    expected = probabilities(reference, x, run.model_output) if mixed else run_probabilities
    model = inference_model(run, reference)
    model(x[:1])  # Keras exports only a model that has been called
    write_export(model, fmt, path)
    manifest = export_manifest(run)
    manifest.write(path.parent)
    runner = open_exported(path, fmt.name)
    with _quiet_export():
        got = np.asarray(runner.predict(x), dtype=np.float64)
    difference = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("inf")
    agreement = float(np.mean(got.argmax(axis=1) == expected.argmax(axis=1))) if got.shape == expected.shape else 0.0
    passed = agreement >= MIN_TOP1_AGREEMENT and difference <= MAX_PROBABILITY_DIFFERENCE
    spread = float(np.max(expected.max(axis=0) - expected.min(axis=0)))  # 0 for a model that ignores its input
    report_path = path.parent / f"export-{fmt.name}.json"
    numbers = f"top-1 agreement {agreement:.2%} (at least {MIN_TOP1_AGREEMENT:.1%} required), max probability difference {difference:.3g} (at most {MAX_PROBABILITY_DIFFERENCE:g} allowed) on {len(x)} {split} examples"
    warning = None if passed else (
        f"PARITY CHECK FAILED: {path} does not reproduce the Keras model ({numbers}); do not ship it."
    )
    report = ExportReport(
        format=fmt.name,
        path=str(path),
        file_size_bytes=size_of(path),
        input={"name": INPUT_NAME, "exported_name": str(runner.input_name), "shape": [None, *run.input_shape], "dtype": "float32",
               "values": "raw pixels 0..255 (the model scales them itself)"},
        output={"shape": [None, run.num_classes], "dtype": "float32", "values": "class probabilities (each row sums to 1)",
                "class_names": list(run.class_names), "softmax_added": run.model_output == "logits"},
        parity={
            "split": split, "examples": int(len(x)), "max_abs_probability_difference": difference, "top1_agreement": agreement,
            "keras_accuracy": float(np.mean(expected.argmax(axis=1) == y)) if y.ndim == 1 else None,
            "exported_accuracy": float(np.mean(got.argmax(axis=1) == y)) if y.ndim == 1 and got.ndim == 2 else None,
            "min_top1_agreement": MIN_TOP1_AGREEMENT, "max_allowed_difference": MAX_PROBABILITY_DIFFERENCE, "passed": passed,
            "keras_output_spread": spread,
            "keras_reference": "a float32 copy of the run's mixed-precision model" if mixed else "the run's model (float32)",
            **({"run_model_dtypes": sorted(compute_dtypes(run.model)),
                "max_abs_difference_to_mixed_precision_model": float(np.max(np.abs(got - run_probabilities))) if got.shape == run_probabilities.shape else None,
                "top1_agreement_with_mixed_precision_model": float(np.mean(got.argmax(axis=1) == run_probabilities.argmax(axis=1))) if got.shape == run_probabilities.shape else None}
               if mixed else {}),
            **({"note": "the Keras model gives (almost) the same probabilities for every example, so this check says little"}
               if spread < 1e-6 else {}),
        },
        run_dir=str(run.run_dir),
        report_path=str(report_path),
        manifest_path=str(path.parent / MANIFEST_FILE),
        warning=warning,
        exported_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        versions=versions(),
    )
    atomic_write_json(report_path, report.to_dict())
    if not passed:
        raise ExportParityError(f"{warning} The file is kept; the numbers are in {report_path}.", report)
    return report
