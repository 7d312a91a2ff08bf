"""Use an exported model (SavedModel folder, ``.onnx`` or ``.tflite`` file) as ``trainer predict`` uses a run.

Each format has a small runner with ``predict(images) -> probabilities``: ``tf.saved_model.load``
for SavedModel, onnxruntime for ONNX, ``ai_edge_litert``'s interpreter for LiteRT. An export
needs the run's ``manifest.json`` beside it (``trainer export`` copies it there) for its class
names and input shape.

An export is a program, so it runs only when the signed ``export-<format>.json`` beside it proves
that this user's trainer wrote exactly these files (``provenance``) and its graph passes the
static checks (``export_checks``), or when the caller says ``trust_export``. The files are read
once (bytes, or a private copy of a SavedModel folder): what is checked is what runs. The
manifest must agree with the export's own input shape and class count. Nothing here prints.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.errors import BadInputError, RunDirError, TrainerError
from trainer.extras import require_modules
from trainer.inference.provenance import check_signature
from trainer.readers.export_files import export_digests, export_files, read_export_file, read_export_report, read_manifest_beside, sha256
from trainer.readers.records import Manifest
from trainer.readers.run_files import MANIFEST_FILE

SAVED_MODEL_FILE = "saved_model.pb"
SUFFIX_FORMATS = {".onnx": "onnx", ".tflite": "litert"}
# format -> (Python modules its runner imports, the pyproject extra holding them)
RUNNER_NEEDS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "savedmodel": (("tensorflow",), None),  # tf.saved_model.load
    "onnx": (("onnxruntime", "onnx"), "onnx"),  # onnx parses the graph for the static check
    "litert": (("ai_edge_litert",), "litert"),
}
BATCH_SIZE = 256


def export_format_of(path: Path) -> str | None:
    """``savedmodel``, ``onnx`` or ``litert`` when ``path`` is an exported model, else None."""
    path = Path(path)
    if path.is_dir():
        return "savedmodel" if (path / SAVED_MODEL_FILE).is_file() else None
    return SUFFIX_FORMATS.get(path.suffix.lower()) if path.is_file() else None


class SavedModelRunner:
    """A SavedModel's ``serving_default`` signature (``tf.saved_model.load``)."""

    def __init__(self, path: Path):
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        if "serving_default" not in loaded.signatures:
            raise ValueError("it has no serving_default signature")
        self.function = loaded.signatures["serving_default"]
        inputs = self.function.structured_input_signature[1]
        if len(inputs) != 1 or len(self.function.structured_outputs) != 1:
            raise ValueError(f"its serving_default signature takes {len(inputs)} inputs and gives {len(self.function.structured_outputs)} outputs; expected one each")
        self.input_name = next(iter(inputs))
        self.input_shape = _dims(inputs[self.input_name].shape.as_list())
        self.output_shape = _dims(next(iter(self.function.structured_outputs.values())).shape.as_list())

    def predict(self, images: np.ndarray, batch_size: int = BATCH_SIZE, verbose: int = 0) -> np.ndarray:
        import tensorflow as tf

        def run(batch):
            outputs = self.function(**{self.input_name: tf.constant(batch)})
            return next(iter(outputs.values())).numpy()

        return _in_batches(run, images, batch_size)


class OnnxRunner:
    """An ONNX model (its checked bytes, so nothing is read from beside it) through onnxruntime on the CPU."""

    def __init__(self, model: bytes):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"it takes {len(inputs)} inputs and gives {len(outputs)} outputs; expected one each")
        self.input_name = inputs[0].name
        self.input_shape, self.output_shape = _dims(inputs[0].shape), _dims(outputs[0].shape)

    def predict(self, images: np.ndarray, batch_size: int = BATCH_SIZE, verbose: int = 0) -> np.ndarray:
        return _in_batches(lambda batch: self.session.run(None, {self.input_name: batch})[0], images, batch_size)


class LiteRTRunner:
    """A ``.tflite`` model (its checked bytes) through ``ai_edge_litert``'s interpreter, resized to each batch."""

    def __init__(self, model: bytes):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=model)
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"it takes {len(inputs)} inputs and gives {len(outputs)} outputs; expected one each")
        self.input, self.output_index = inputs[0], outputs[0]["index"]
        self.input_name = self.input["name"]
        self.input_shape = _dims(list(self.input.get("shape_signature", self.input["shape"])))
        self.output_shape = _dims(list(outputs[0].get("shape_signature", outputs[0]["shape"])))
        self.batch: int | None = None

    def predict(self, images: np.ndarray, batch_size: int = BATCH_SIZE, verbose: int = 0) -> np.ndarray:
        def run(batch):
            if len(batch) != self.batch:
                self.interpreter.resize_tensor_input(self.input["index"], list(batch.shape))
                self.interpreter.allocate_tensors()
                self.batch = len(batch)
            self.interpreter.set_tensor(self.input["index"], batch)
            self.interpreter.invoke()
            return np.array(self.interpreter.get_tensor(self.output_index))

        return _in_batches(run, images, batch_size)


RUNNERS = {"savedmodel": SavedModelRunner, "onnx": OnnxRunner, "litert": LiteRTRunner}


def _dims(shape) -> tuple[int | None, ...]:
    """A shape with every unknown dimension (None, -1, a symbolic name) as None."""
    return tuple(int(d) if isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 else None for d in (shape or ()))


def _in_batches(run, images: np.ndarray, batch_size: int) -> np.ndarray:
    images = np.ascontiguousarray(images, dtype=np.float32)
    return np.concatenate([run(images[start:start + batch_size]) for start in range(0, len(images), batch_size)])


@dataclass
class StagedExport:
    """An export's files as read once: the bytes of a one-file export, or a private copy of a SavedModel folder.

    What is checked (digests, graph) is exactly what is run: nothing is read twice from a
    folder someone else may change meanwhile.
    """

    path: Path
    format: str
    digests: dict[str, str]
    content: bytes | None = None
    copy: Path | None = None

    def remove(self) -> None:
        if self.copy is not None:
            shutil.rmtree(self.copy, ignore_errors=True)
            self.copy = None


def stage_export(path: Path, format_name: str) -> StagedExport:
    """Read the export at ``path`` (bounded, no links) into memory or a private temporary copy, with its digests."""
    path = Path(path)
    if format_name != "savedmodel":
        content = read_export_file(path, path)
        return StagedExport(path, format_name, {path.name: sha256(content)}, content=content)
    copy = Path(tempfile.mkdtemp(prefix="trainer-export-"))
    staged = StagedExport(path, format_name, {}, copy=copy)
    try:
        for name, file in export_files(path):
            data = read_export_file(file, path)
            target = copy / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            staged.digests[name] = sha256(data)
    except BaseException:
        staged.remove()
        raise
    return staged


def open_staged(staged: StagedExport, *, check_graph: bool):
    """The runner for a staged export; its graph is checked first (export_checks) unless ``check_graph`` is False."""
    from trainer.inference.export_checks import CHECKS

    format_name, path = staged.format, staged.path
    modules, extra = RUNNER_NEEDS[format_name]
    require_modules(modules, extra, f"running a {format_name} model")
    source: Any = staged.content if staged.content is not None else staged.copy
    if check_graph:
        graph = staged.content if staged.content is not None else (staged.copy / SAVED_MODEL_FILE).read_bytes()
        CHECKS[format_name](graph, path)
    try:
        return RUNNERS[format_name](source)
    except (ValueError, RuntimeError, OSError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise RunDirError(f"cannot load the exported {format_name} model {path}: {reason}") from None
    except Exception as exc:  # noqa: BLE001 - onnxruntime and TensorFlow raise their own types for damaged files
        if type(exc).__module__.startswith(("onnxruntime", "tensorflow", "google.protobuf")):
            raise RunDirError(f"cannot load the exported {format_name} model {path}: {str(exc).splitlines()[0][:200]}") from None
        raise


def open_exported(path: Path, format_name: str | None = None, *, check_graph: bool = True):
    """The runner for the exported model at ``path`` (its format from the path when not given), read once and checked."""
    format_name = format_name or export_format_of(path)
    if format_name is None:
        raise RunDirError(f"{path} is not an exported model; expected a SavedModel folder (with {SAVED_MODEL_FILE}), a .onnx or a .tflite file.")
    staged = stage_export(Path(path), format_name)
    try:
        return open_staged(staged, check_graph=check_graph)
    finally:
        staged.remove()  # tf.saved_model.load has read every file it needs


def report_beside(path: Path, format_name: str) -> Path:
    """Where ``trainer export`` writes the report of the export at ``path``."""
    return Path(path).parent / f"export-{format_name}.json"


def manifest_beside(path: Path) -> tuple[Manifest, Path, bytes]:
    """The run's manifest next to an export (or inside a SavedModel folder), its path and bytes; a RunDirError says what is missing."""
    path = Path(path)
    candidates = [path.parent / MANIFEST_FILE] + ([path / MANIFEST_FILE] if path.is_dir() else [])
    for candidate in candidates:
        if candidate.exists() or candidate.is_symlink():
            manifest, data = read_manifest_beside(candidate)
            return manifest, candidate, data
    raise RunDirError(
        f"{path.parent / MANIFEST_FILE} is missing; an exported model needs the run's {MANIFEST_FILE} beside it "
        f"(trainer export copies it there) for its class names and input shape."
    )


def signature_problem(path: Path, format_name: str, digests: dict[str, str], manifest_bytes: bytes) -> str | None:
    """None when the report beside ``path`` proves that this user's trainer wrote exactly these files; else why not."""
    report_path = report_beside(path, format_name)
    if not report_path.exists() and not report_path.is_symlink():
        return f"there is no {report_path.name} beside it (trainer export writes one, signed)"
    report = read_export_report(report_path)
    signature = report.signature
    if signature is None:
        return f"{report_path} holds no signature (written by an older trainer, or without an export key)"
    if signature.format != format_name or signature.file != Path(path).name:
        return f"{report_path} is the report of another export ({signature.file})"
    problem = check_signature(signature.model_dump())
    if problem:
        return f"{report_path}: {problem}"
    if signature.files != digests:
        changed = sorted(set(signature.files) ^ set(digests)) or sorted(n for n in digests if digests[n] != signature.files[n])
        return f"its files changed since it was exported ({changed[0]})"
    if signature.manifest != sha256(manifest_bytes):
        return f"the {MANIFEST_FILE} beside it changed since it was exported"
    return None


def _verified_signature(report_path: Path):
    """The signature of the report at ``report_path`` when this user's key made it, else None (never raises for a bad file)."""
    try:
        report = read_export_report(report_path)
    except TrainerError:
        return None
    if report.signature is None or check_signature(report.signature.model_dump()) is not None:
        return None
    return report.signature


def report_owned(report_path: Path) -> bool:
    """Whether an export report is trainer's own: signed with this user's export key."""
    return _verified_signature(Path(report_path)) is not None


def export_owned(path: Path, format_name: str) -> bool:
    """Whether the export at ``path`` is trainer's own: its signed report names exactly its files' digests."""
    path = Path(path)
    signature = _verified_signature(report_beside(path, format_name))
    return signature is not None and signature.format == format_name and signature.file == path.name and signature.files == export_digests(path)


def manifest_owned(manifest_path: Path) -> bool:
    """Whether a ``manifest.json`` beside exports is trainer's own: a signed report in its folder names its digest."""
    digest = sha256(read_manifest_beside(manifest_path)[1])
    signatures = (_verified_signature(Path(manifest_path).parent / f"export-{name}.json") for name in RUNNERS)
    return any(signature is not None and signature.manifest == digest for signature in signatures)


def refuse_untrusted(path: Path, problem: str) -> RunDirError:
    from trainer.inference.export_checks import TRUST_HINT

    return RunDirError(
        f"{path}: not run, because trainer cannot tell that it wrote this export: {problem}. An exported model is a program "
        f"(a SavedModel's graph can read and write files); {TRUST_HINT}."
    )


def check_manifest_matches(path: Path, manifest: Manifest, input_shape: tuple, output_shape: tuple, source: str) -> None:
    """Refuse a manifest whose input shape or class count disagrees with the export's own signature."""
    where = f"{path.parent / MANIFEST_FILE}"
    if len(manifest.input_shape) != 3:
        raise RunDirError(f"{where}: input_shape {manifest.input_shape} is not (height, width, channels).")
    if manifest.class_names and len(manifest.class_names) != manifest.num_classes:
        raise RunDirError(f"{where}: class_names lists {len(manifest.class_names)} names but num_classes is {manifest.num_classes}.")
    expected_input = (None, *manifest.input_shape)
    if len(input_shape) != 4 or any(a is not None and b is not None and a != b for a, b in zip(input_shape, expected_input)):
        raise RunDirError(f"{where}: input_shape {manifest.input_shape} disagrees with {source}, which takes {list(input_shape)}; this manifest is not the export's.")
    if len(output_shape) != 2 or (output_shape[1] is not None and output_shape[1] != manifest.num_classes):
        raise RunDirError(f"{where}: num_classes {manifest.num_classes} disagrees with {source}, which gives {list(output_shape)}; this manifest is not the export's.")


@dataclass
class ExportedRun:
    """An exported model dressed as a run for ``predict_records``: it outputs probabilities (softmax is in the export)."""

    model: Any  # a runner: predict(images) -> probabilities
    model_path: Path
    run_dir: Path  # the folder holding the export
    format: str
    class_names: list[str]
    input_shape: tuple[int, ...]
    manifest: Manifest
    model_output: str = "softmax"
    trusted_by: str = "signature"  # "signature" (this user's trainer wrote it) or "--trust-export"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_name(self, index: int) -> str:
        return self.class_names[index] if 0 <= index < len(self.class_names) else str(index)


def load_exported_run(path: Path, *, trust_export: bool = False) -> ExportedRun:
    """An exported model plus the manifest beside it, ready for ``predict_records``.

    Run only when the report beside it proves this user's trainer wrote it and its graph passes
    the static checks, or when ``trust_export``; the manifest must agree with the export's signature.
    """
    path = Path(path)
    format_name = export_format_of(path)
    if format_name is None:
        raise RunDirError(f"{path} is not an exported model; expected a SavedModel folder (with {SAVED_MODEL_FILE}), a .onnx or a .tflite file.")
    manifest, _, manifest_bytes = manifest_beside(path)
    staged = stage_export(path, format_name)
    try:
        if not trust_export:
            problem = signature_problem(path, format_name, staged.digests, manifest_bytes)
            if problem:
                raise refuse_untrusted(path, problem)
        runner = open_staged(staged, check_graph=not trust_export)
    finally:
        staged.remove()
    check_manifest_matches(path, manifest, runner.input_shape, runner.output_shape, f"the exported model {path}")
    names = list(manifest.class_names) or [str(i) for i in range(manifest.num_classes)]
    return ExportedRun(
        runner, path, path.parent, format_name, names, tuple(int(d) for d in manifest.input_shape), manifest,
        trusted_by="--trust-export" if trust_export else "signature",
    )


def check_predictor(target: Path, config_path: Path | None = None, *, trust_export: bool = False) -> None:
    """Refuse a bad predict target before TensorFlow starts: an export's manifest and signature, or a run's paths and manifest."""
    format_name = export_format_of(Path(target))
    if format_name is not None:
        if config_path is not None:
            raise BadInputError(f"--config applies to a Keras model file; {target} is an exported model, which reads the {MANIFEST_FILE} beside it.")
        manifest, _, manifest_bytes = manifest_beside(Path(target))
        if len(manifest.input_shape) != 3:
            raise RunDirError(f"{Path(target).parent / MANIFEST_FILE}: input_shape {manifest.input_shape} is not (height, width, channels).")
        if not trust_export:
            problem = signature_problem(Path(target), format_name, export_digests(target), manifest_bytes)
            if problem:
                raise refuse_untrusted(Path(target), problem)
        return
    if trust_export:
        raise BadInputError(f"--trust-export applies to an exported model (SavedModel folder, .onnx, .tflite); {target} is not one.")
    from trainer.inference.load import open_run

    open_run(Path(target), config_path)


def load_predictor(target: Path, *, config_path: Path | None = None, code_dirs: list[Path] | tuple[Path, ...] = (), trust_export: bool = False):
    """What ``trainer predict`` classifies with: an exported model (with its manifest), or a run / model file."""
    check_predictor(target, config_path, trust_export=trust_export)
    if export_format_of(Path(target)) is not None:
        return load_exported_run(Path(target), trust_export=trust_export)
    from trainer.inference.load import load_run

    return load_run(Path(target), config_path=config_path, code_dirs=code_dirs)
