"""The model behind the server: loaded once (a run, a model file, or an export ``trainer predict`` can read), called
by one request at a time, answering with ``trainer predict``'s records."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class _OneBatch:
    """A Keras model's ``predict`` for the server's one-image batches: ``predict_on_batch`` (no ``tf.data`` pipeline
    per call; measured ~30 ms per call with ``predict``, ~1 ms with this on the MNIST MLP), the same numbers."""

    def __init__(self, model: Any):
        self.model = model

    def predict(self, images: np.ndarray, batch_size: int = 256, verbose: int = 0) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(images))


@dataclass
class Classifier:
    """What ``predict_records`` needs (``model``, ``model_output``, ``class_name``) plus what the server reports."""

    model: Any
    model_output: str
    class_names: list[str]
    input_shape: tuple[int, ...]
    source: Path  # the run directory, model file or export loaded
    kind: str  # "keras", "savedmodel", "onnx", "litert"

    def __post_init__(self) -> None:
        self.lock = threading.Lock()  # Keras models and runners are not promised to be thread-safe: one call at a time

    def class_name(self, index: int) -> str:
        return self.class_names[index] if 0 <= index < len(self.class_names) else str(index)

    def classify(self, inputs: Any, top_k: int) -> list[dict[str, Any]]:
        """``trainer predict``'s records for ``inputs`` (``trainer.inference.predict.Inputs``)."""
        from trainer.inference.predict import predict_records

        with self.lock:
            return predict_records(self, inputs, top_k)

    def warm_up(self) -> None:
        """One prediction on a blank image, so the first request does not pay for tracing or compiling."""
        from trainer.inference.predict import Inputs

        self.classify(Inputs(np.zeros((1, *self.input_shape), np.float32), [("<warm-up>", None)]), 1)


def load_classifier(target: Path, *, config_path: Path | None = None, code_dirs: list[Path] | tuple[Path, ...] = (),
                    trust_export: bool = False) -> Classifier:
    """The model ``trainer predict TARGET`` would use, under the same trust rules (``load_predictor``), warmed up."""
    from trainer.errors import DataError
    from trainer.inference.exported import ExportedRun, load_predictor

    run = load_predictor(Path(target), config_path=config_path, code_dirs=code_dirs, trust_export=trust_export)
    if len(run.input_shape) != 3:
        raise DataError(f"the model takes inputs of shape {run.input_shape}; trainer serve handles image models (height, width, channels).")
    exported = isinstance(run, ExportedRun)
    classifier = Classifier(
        run.model if exported else _OneBatch(run.model), run.model_output, list(run.class_names) or [str(i) for i in range(run.num_classes)],
        tuple(int(d) for d in run.input_shape), Path(target), run.format if exported else "keras",
    )
    classifier.warm_up()
    return classifier
