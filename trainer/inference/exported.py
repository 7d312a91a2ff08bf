"""Use an exported model (SavedModel folder, ``.onnx`` or ``.tflite`` file) as ``trainer predict`` uses a run.

Each format has a small runner with ``predict(images) -> probabilities``: ``tf.saved_model.load``
for SavedModel, onnxruntime for ONNX, ``ai_edge_litert``'s interpreter for LiteRT. An export
needs the run's ``manifest.json`` beside it (``trainer export`` copies it there) for its class
names and input shape. Nothing here prints.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.errors import BadInputError, RunDirError
from trainer.extras import require_modules
from trainer.run.records import Manifest
from trainer.run.rundir import MANIFEST_FILE

SAVED_MODEL_FILE = "saved_model.pb"
SUFFIX_FORMATS = {".onnx": "onnx", ".tflite": "litert"}
# format -> (Python modules its runner imports, the pyproject extra holding them)
RUNNER_NEEDS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "savedmodel": ((), None),
    "onnx": (("onnxruntime",), "onnx"),
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

        self.function = tf.saved_model.load(str(path)).signatures["serving_default"]
        self.input_name = next(iter(self.function.structured_input_signature[1]))

    def predict(self, images: np.ndarray, batch_size: int = BATCH_SIZE, verbose: int = 0) -> np.ndarray:
        import tensorflow as tf

        def run(batch):
            outputs = self.function(**{self.input_name: tf.constant(batch)})
            return next(iter(outputs.values())).numpy()

        return _in_batches(run, images, batch_size)


class OnnxRunner:
    """An ONNX model through onnxruntime on the CPU."""

    def __init__(self, path: Path):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, images: np.ndarray, batch_size: int = BATCH_SIZE, verbose: int = 0) -> np.ndarray:
        return _in_batches(lambda batch: self.session.run(None, {self.input_name: batch})[0], images, batch_size)


class LiteRTRunner:
    """A ``.tflite`` model through ``ai_edge_litert``'s interpreter, resized to each batch."""

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path))
        self.input = self.interpreter.get_input_details()[0]
        self.output_index = self.interpreter.get_output_details()[0]["index"]
        self.input_name = self.input["name"]
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


def _in_batches(run, images: np.ndarray, batch_size: int) -> np.ndarray:
    images = np.ascontiguousarray(images, dtype=np.float32)
    return np.concatenate([run(images[start:start + batch_size]) for start in range(0, len(images), batch_size)])


def open_exported(path: Path, format_name: str | None = None):
    """The runner for the exported model at ``path`` (its format from the path when not given)."""
    format_name = format_name or export_format_of(path)
    if format_name is None:
        raise RunDirError(f"{path} is not an exported model; expected a SavedModel folder (with {SAVED_MODEL_FILE}), a .onnx or a .tflite file.")
    modules, extra = RUNNER_NEEDS[format_name]
    require_modules(modules, extra, f"running a {format_name} model")
    try:
        return RUNNERS[format_name](Path(path))
    except (ValueError, RuntimeError, OSError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise RunDirError(f"cannot load the exported {format_name} model {path}: {reason}") from None
    except Exception as exc:  # noqa: BLE001 - onnxruntime and TensorFlow raise their own types for damaged files
        if type(exc).__module__.startswith(("onnxruntime", "tensorflow")):
            raise RunDirError(f"cannot load the exported {format_name} model {path}: {str(exc).splitlines()[0][:200]}") from None
        raise


def manifest_beside(path: Path) -> tuple[Manifest, Path]:
    """The run's manifest next to an export (or inside a SavedModel folder); a RunDirError says what is missing."""
    path = Path(path)
    candidates = [path.parent / MANIFEST_FILE] + ([path / MANIFEST_FILE] if path.is_dir() else [])
    for candidate in candidates:
        manifest = Manifest.read(candidate.parent)
        if manifest is not None:
            return manifest, candidate
    raise RunDirError(
        f"{path.parent / MANIFEST_FILE} is missing; an exported model needs the run's {MANIFEST_FILE} beside it "
        f"(trainer export copies it there) for its class names and input shape."
    )


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

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_name(self, index: int) -> str:
        return self.class_names[index] if 0 <= index < len(self.class_names) else str(index)


def load_exported_run(path: Path) -> ExportedRun:
    """An exported model plus the manifest beside it, ready for ``predict_records``."""
    path = Path(path)
    format_name = export_format_of(path)
    manifest, _ = manifest_beside(path)
    if len(manifest.input_shape) != 3:
        raise RunDirError(f"{path.parent / MANIFEST_FILE}: input_shape {manifest.input_shape} is not (height, width, channels).")
    runner = open_exported(path, format_name)
    names = list(manifest.class_names) or [str(i) for i in range(manifest.num_classes)]
    return ExportedRun(runner, path, path.parent, format_name, names, tuple(int(d) for d in manifest.input_shape), manifest)


def check_predictor(target: Path, config_path: Path | None = None) -> None:
    """Refuse a bad predict target before TensorFlow starts: an export's manifest, or a run's paths and manifest."""
    if export_format_of(Path(target)) is not None:
        if config_path is not None:
            raise BadInputError(f"--config applies to a Keras model file; {target} is an exported model, which reads the {MANIFEST_FILE} beside it.")
        manifest_beside(Path(target))
        return
    from trainer.inference.load import open_run

    open_run(Path(target), config_path)


def load_predictor(target: Path, *, config_path: Path | None = None, code_dirs: list[Path] | tuple[Path, ...] = ()):
    """What ``trainer predict`` classifies with: an exported model (with its manifest), or a run / model file."""
    check_predictor(target, config_path)
    if export_format_of(Path(target)) is not None:
        return load_exported_run(Path(target))
    from trainer.inference.load import load_run

    return load_run(Path(target), config_path=config_path, code_dirs=code_dirs)
