"""Export a finished run to SavedModel, ONNX or LiteRT through Keras 3's ``model.export``, checked for parity.

An export keeps ``model.h5``'s contract: raw 0..255 pixels in (float32, ``(N, H, W, C)`` of the
trained shape, input named ``image``), class probabilities out (a logits model gets its softmax
inside the export). Every export is checked: up to 1,000 examples of the run's test split go
through the Keras model and through the exported one (``tf.saved_model.load``, onnxruntime,
``ai_edge_litert``'s interpreter); ``export-<format>.json`` beside the export records the
numbers and a signature (``provenance``: an HMAC of the export's and manifest's digests with
the user's key), and the run's ``manifest.json`` is copied there so ``trainer predict`` can use
the export. Writing follows ``trainer.outputs``' rule (``plan_export``): a new path, an empty
folder, or trainer's own previous export; built beside it and swapped in; on failure only what
this export made is removed. An export outside the bounds raises ``ExportParityError`` (exit 1); its file is kept,
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
from trainer.errors import BadInputError, ConfigError, DataError, TrainerError
from trainer.extras import require_modules
from trainer.inference.exported import open_exported
from trainer.inference.load import LoadedRun
from trainer.outputs import Made, check_replaceable
from trainer.readers.records import Manifest
from trainer.outputs import atomic_write_json
from trainer.readers.run_files import MANIFEST_FILE

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
    # Keras's exporters are TensorFlow by nature (tf.function, SavedModel), on every Keras backend
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
    signature: dict[str, Any] | None = None  # provenance: digests of the export and manifest, keyed with the user's export key
    signature_note: str | None = None

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
    if path.is_dir() and fmt.suffix and not path.is_symlink():
        raise ConfigError(f"--output {path}: is a folder; a {fmt.name} export is one file such as {path / fmt.default_name}.")
    return path


@dataclass
class ExportPlan:
    """Where an export, its manifest and its report go, after the output rule (trainer.outputs) was checked."""

    path: Path
    report_path: Path
    manifest_path: Path
    replaces_export: bool  # a previous export of trainer's own is there (recognised by its signed report)
    keeps_manifest: bool  # the manifest there is already this run's


def plan_export(run_dir: Path | None, fmt: ExportFormat, output: Path | None, manifest: Manifest | None) -> ExportPlan:
    """Check, before anything is written, that the export may go where it is asked to.

    Trainer writes a new file or folder, fills an empty folder, or replaces an export (and its
    report and manifest) that it recognises as its own by content: the report beside it is signed
    with this user's export key and names the digests of exactly those files. Anything else there
    (a foreign ``saved_model.pb`` folder, ``manifest.json``, the working directory) is refused and
    left as it was.
    """
    from trainer.inference.exported import export_owned, manifest_owned, report_owned, report_beside

    path = export_path(run_dir, fmt, output)
    assert path is not None
    what = "--output" if output is not None else "the export"
    with contextlib.suppress(OSError):
        cwd, resolved = Path.cwd().resolve(), path.resolve()
        if resolved == cwd or resolved in cwd.parents:
            raise BadInputError(f"{what} {path}: is the working directory (or holds it); give a new folder name (trainer writes only into folders it creates or that are empty).")
    replaces = False
    if path.is_symlink():
        raise BadInputError(f"{what} {path}: is a symbolic link; trainer does not write through links. Choose a new path.")
    if path.is_dir() and not fmt.suffix and not any(path.iterdir()):
        pass  # an empty folder: filled
    elif path.exists():
        replaces = check_replaceable(path, what, lambda p: export_owned(p, fmt.name))
    report_path = report_beside(path, fmt.name)
    check_replaceable(report_path, "the export report", report_owned)
    manifest_path = path.parent / MANIFEST_FILE
    keeps = False
    if manifest_path.exists() or manifest_path.is_symlink():
        keeps = manifest is not None and not manifest_path.is_symlink() and _same_record(manifest_path, manifest)
        if not keeps:
            check_replaceable(manifest_path, "the manifest beside the export", manifest_owned)
    _check_writable(path.parent, what, path)
    return ExportPlan(path, report_path, manifest_path, replaces, keeps)


def _same_record(path: Path, manifest: Manifest) -> bool:
    """Whether the manifest at ``path`` already holds exactly ``manifest`` (then it is left as it is)."""
    from trainer.readers.export_files import read_manifest_beside

    try:
        return read_manifest_beside(path)[0].to_dict() == manifest.to_dict()
    except TrainerError:
        return False


def _check_writable(folder: Path, what: str, path: Path) -> None:
    """The nearest existing folder above ``path`` must be a folder trainer may write into."""
    existing = folder
    while not existing.exists() and not existing.is_symlink() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise BadInputError(f"{what} {path}: cannot be written: {existing} is not a folder; nothing was changed.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BadInputError(f"{what} {path}: cannot be written: {existing} is not writable; nothing was changed.")


def check_can_export(format_name: str, backend: str | None = None) -> ExportFormat:
    """The format, with its packages present (``MissingExtraError``, exit 2, names the install command), on a
    backend that exports: ``backend`` (default: Keras's where it is loaded, else ``KERAS_BACKEND``) is not PyTorch,
    where Keras exports through ``torch.export``, which fails on trainer's models (a traceback, measured with torch 2.13)."""
    from trainer.runtime import loaded_keras_backend

    fmt = get_format(format_name)
    require_modules(("tensorflow",), None, f"trainer export --format {fmt.name} (Keras exports through TensorFlow)")
    check_export_backend(fmt)
    backend = backend or loaded_keras_backend() or os.environ.get("KERAS_BACKEND", "").strip() or "tensorflow"
    if backend == "torch":
        raise BadInputError(
            f"trainer export --format {fmt.name} does not run on the PyTorch backend (Keras exports through torch.export there, "
            "which fails on these models); run it with KERAS_BACKEND=tensorflow: model.h5 is the same on every backend."
        )
    require_modules(fmt.modules, fmt.extra, f"trainer export --format {fmt.name}")
    return fmt


# Formats Keras converts from a TensorFlow graph on the TensorFlow backend only (tf2onnx, the TFLite
# converter): on JAX Keras wants jax2onnx and refuses LiteRT; on PyTorch it goes through torch.onnx
# and litert-torch, which trainer's parity and graph checks were never run on. SavedModel works from
# every backend (Keras traces JAX through jax2tf), so it is not listed.
TENSORFLOW_BACKEND_FORMATS = ("onnx", "litert")


def check_export_backend(fmt: ExportFormat) -> None:
    """Refuse, in one line and the same on every other backend, a format that exports only on the TensorFlow backend."""
    from trainer.runtime import loaded_keras_backend
    from trainer.runtime.distribute import choose_backend

    if fmt.name not in TENSORFLOW_BACKEND_FORMATS:
        return
    loaded = loaded_keras_backend()
    backend, _ = choose_backend("none", os.environ, loaded)  # the one reading of KERAS_BACKEND (an unknown name refused there)
    if backend == "tensorflow":
        return
    where = "in this process" if loaded else f"KERAS_BACKEND={backend}"
    raise BadInputError(
        f"trainer export --format {fmt.name} needs the TensorFlow backend (Keras converts the model through "
        f"{'tf2onnx' if fmt.name == 'onnx' else 'the TFLite converter'}), but Keras runs on {backend} ({where}); rerun with "
        f"KERAS_BACKEND=tensorflow (a model trained on any backend loads there), or use --format savedmodel."
    )


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


def _make_parents(folder: Path, made: Made) -> None:
    """Create ``folder`` and the folders above it that are missing, each tracked as made by this process."""
    missing = []
    while not folder.exists() and not folder.is_symlink():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir()
        made.track_dir(created)


def write_export(model, fmt: ExportFormat, path: Path, made: Made) -> None:
    """``model.export`` into a temporary folder beside ``path``, then swapped into place.

    A previous export there (already recognised as trainer's own by ``plan_export``) is moved into
    the temporary folder and removed with it; nothing else is ever removed.
    """
    _make_parents(path.parent, made)
    staging = made.track_dir(Path(tempfile.mkdtemp(prefix=f".{path.name}.trainer-", dir=path.parent)))
    target = staging / (path.name if fmt.suffix else "savedmodel")
    with _quiet_export():
        model.export(str(target), format=fmt.keras_format, verbose=False)
    existed = path.exists()
    if existed and path.is_dir() and any(path.iterdir()):
        os.rename(path, staging / "previous")  # trainer's own previous export, checked by plan_export
        existed = False
    os.replace(target, path)  # a file, or a folder onto an empty folder or none
    if not existed:
        made.track_dir(path) if path.is_dir() else made.track_file(path)
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
    from trainer.inference.probabilities import probabilities

    fmt = check_can_export(format_name)
    manifest = export_manifest(run)
    plan = plan_export(run.run_dir, fmt, output, manifest)
    path, report_path = plan.path, plan.report_path
    x, y, split = parity_examples(run, examples)  # before exporting: missing data costs no conversion
    run_probabilities = probabilities(run.model, x, run.model_output)  # what trainer predict on the run gives
    reference = float32_model(run.model)
    mixed = reference is not run.model
    expected = probabilities(reference, x, run.model_output) if mixed else run_probabilities
    model = inference_model(run, reference)
    model(x[:1])  # Keras exports only a model that has been called
    made = Made()
    try:
        with made.undone_on_error():
            write_export(model, fmt, path, made)
            if not plan.keeps_manifest:
                existed = plan.manifest_path.exists()
                manifest.write(path.parent)
                if not existed:
                    made.track_file(plan.manifest_path)
            runner = open_exported(path, fmt.name, check_graph=False)  # just written by this process
            with _quiet_export():
                got = np.asarray(runner.predict(x), dtype=np.float64)
            signature, signature_note = export_signature(path, fmt, plan.manifest_path, run)
            report = _report(run, fmt, path, report_path, plan.manifest_path, runner, x, y, split, got, expected, run_probabilities, mixed)
            report.signature, report.signature_note = signature, signature_note
            existed = report_path.exists()
            atomic_write_json(report_path, report.to_dict())
            if not existed:
                made.track_file(report_path)
    except OSError as exc:
        raise BadInputError(f"{'--output' if output is not None else 'the export'} {path}: cannot be written ({exc.strerror or exc}); nothing was left behind.") from None
    if not report.passed:
        raise ExportParityError(f"{report.warning} The file is kept; the numbers are in {report_path}.", report)
    return report


def export_signature(path: Path, fmt: ExportFormat, manifest_path: Path, run: LoadedRun) -> tuple[dict[str, Any] | None, str | None]:
    """The signed digests of the export and its manifest (provenance), or ``(None, why)`` when there is no usable export key."""
    from trainer.inference.provenance import KeyUnavailable, sign
    from trainer.readers.export_files import export_digests, read_manifest_beside, sha256

    payload = {
        "version": 1, "format": fmt.name, "file": path.name, "files": export_digests(path),
        "manifest": sha256(read_manifest_beside(manifest_path)[1]),
        "input_shape": [int(d) for d in run.input_shape], "num_classes": int(run.num_classes),
    }
    try:
        return sign(payload), None
    except KeyUnavailable as exc:
        return None, f"unsigned: {exc}; trainer predict runs this export only with --trust-export"


def _report(run, fmt, path, report_path, manifest_path, runner, x, y, split, got, expected, run_probabilities, mixed) -> "ExportReport":
    """The export report's numbers (parity, signature of the export, versions)."""
    from trainer.models.compile import versions

    difference = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("inf")
    agreement = float(np.mean(got.argmax(axis=1) == expected.argmax(axis=1))) if got.shape == expected.shape else 0.0
    passed = agreement >= MIN_TOP1_AGREEMENT and difference <= MAX_PROBABILITY_DIFFERENCE
    spread = float(np.max(expected.max(axis=0) - expected.min(axis=0)))  # 0 for a model that ignores its input
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
        manifest_path=str(manifest_path),
        warning=warning,
        exported_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        versions=versions(),
    )
    return report
