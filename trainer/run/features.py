"""The frozen backbone computed once: features per split, then the head trained on them alone.

A frozen backbone in inference mode is a fixed function of its input, so running it every
epoch repeats identical work. ``CachedFeatureTraining`` runs the model's ``features``
sub-model once per split (streamed in chunks to ``.npy`` files in the run directory), fits
the ``head`` sub-model on those arrays and, because ``head``'s weights *are* the full model's,
leaves the full model trained: ``model.h5`` is still saved whole and takes images.

With ``shared_dir`` (a sweep's trials), the features are kept in that folder between runs, named
by a fingerprint of what determines them: the backbone's layers (its preprocessing layers
included) and weights, and the input pixels of the split. A run whose backbone and data are the
same reads them instead of running the backbone again.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

FEATURES_DIR = "features"  # inside the run directory, removed when the run ends
CHUNK = 128  # images per backbone call; inference only, so it does not change any result


def uses_cached_features(config) -> bool:
    """Cache when the backbone is frozen, nothing random happens before it, and the user did not say false.

    Input augmentation is a random step before the backbone, so it turns the cache off.
    """
    if not config.model.frozen_backbone or _augmented(config):
        return False
    return config.train.cache_features is not False


def _augmented(config) -> bool:
    augment = getattr(config.data, "augment", None)
    return augment is not None and augment.active


def augmentation_stops_cache(config) -> str | None:
    """The one-line notice when augmentation is why a frozen backbone's features are not cached, else None."""
    if config.model.frozen_backbone and _augmented(config) and config.train.cache_features is not False:
        return ("data.augment changes the images every epoch, so the frozen backbone runs on every batch "
                "(its features are not cached).")
    return None


def compute_features(features_model, x: np.ndarray, path: Path, events: Any, label: str) -> np.ndarray:
    """Run ``features_model`` over ``x`` in chunks, writing to the ``.npy`` at ``path``; returns it memory-mapped."""
    shape = (len(x), *(int(d) for d in features_model.output.shape[1:]))
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    steps = -(-len(x) // CHUNK)
    events.on_phase_start(f"backbone features ({label})", steps)
    for step, start in enumerate(range(0, len(x), CHUNK), start=1):
        batch = np.asarray(x[start : start + CHUNK], dtype=np.float32)
        out[start : start + len(batch)] = np.asarray(features_model.predict_on_batch(batch), dtype=np.float32)
        events.on_progress(step, {})
    events.on_phase_end()
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


def _layer_kinds(model) -> list[str]:
    """The layer classes of a model, nested models included, in order."""
    kinds: list[str] = []
    for layer in model.layers:
        kinds.append(type(layer).__name__)
        if hasattr(layer, "layers"):
            kinds += _layer_kinds(layer)
    return kinds


class CachedFeatureTraining:
    """Fit a backbone model's ``head`` on features computed once; evaluate the test split the same way."""

    def __init__(self, model, data, run_dir: Path, events: Any, make_dataset: Callable[..., Any], shared_dir: Path | None = None):
        self.model = model
        self.head = model.get_layer("head")
        self.data = data
        self.events = events
        self.make_dataset = make_dataset
        self.cache_dir = Path(run_dir) / FEATURES_DIR
        self.shared_dir = Path(shared_dir) if shared_dir is not None else None
        self._features: dict[str, np.ndarray] = {}
        self._backbone_digest: str | None = None

    def features(self, split: str) -> np.ndarray:
        """The backbone's output for ``split``, computed on first use (validation = test shares one copy)."""
        x, _ = self.data.split(split)
        for name, cached in self._features.items():
            if self.data.split(name)[0] is x:
                return cached
        if self.shared_dir is not None:
            self._features[split] = self.shared_features(split, x)
            return self._features[split]
        self.cache_dir.mkdir(exist_ok=True)
        self._features[split] = compute_features(
            self.model.get_layer("features"), x, self.cache_dir / f"{split}.npy", self.events, split
        )
        return self._features[split]

    def shared_features(self, split: str, x: np.ndarray) -> np.ndarray:
        """``split``'s features from the shared folder, computed and added there when absent (atomically)."""
        path = self.shared_dir / f"{split}-{self.fingerprint(x)}.npy"
        if path.is_file():
            self.events.on_notice(f"backbone features ({split}) reused from {path}: same backbone, weights and images.")
            return np.load(path, mmap_mode="r")
        self.shared_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.stem}.{os.getpid()}.npy")  # another process may compute the same file
        compute_features(self.model.get_layer("features"), x, partial, self.events, split)
        os.replace(partial, path)
        return np.load(path, mmap_mode="r")

    def fingerprint(self, x: np.ndarray) -> str:
        """What the features depend on: the backbone's layers and weights, what it makes of a few images, and the images.

        Layer names are left out (Keras numbers them by what was built before); the backbone's
        output on the first images stands for everything its configuration does to pixels.
        """
        backbone = self.model.get_layer("features")
        if self._backbone_digest is None:
            digest = hashlib.sha256(" ".join(_layer_kinds(backbone)).encode())
            for weight in backbone.get_weights():
                digest.update(str((weight.shape, weight.dtype)).encode())
                digest.update(np.ascontiguousarray(weight).tobytes())
            self._backbone_digest = digest.hexdigest()
        digest = hashlib.sha256(self._backbone_digest.encode())
        digest.update(str((x.shape, x.dtype)).encode())
        probe = np.asarray(backbone.predict_on_batch(np.asarray(x[:8], dtype=np.float32)), dtype=np.float32)
        digest.update(np.ascontiguousarray(probe).tobytes())
        for start in range(0, len(x), 4096):  # in slices: a memory-mapped split is not read whole at once
            digest.update(np.ascontiguousarray(x[start : start + 4096]).tobytes())
        return digest.hexdigest()[:24]

    def fit(
        self, compile_head: Callable[[Any], None], *, epochs: int, callbacks: list[Any], shuffle: bool,
        weights: np.ndarray | None = None, xla: bool = True, **fit_settings: Any,
    ):
        """Compile and fit the head on cached features; validation metrics are the full model's (same function)."""
        train = self.features("train")
        validation = None
        if self.data.x_val is not None:
            validation = self.make_dataset(self.features("validation"), self.data.y_val)
        compile_head(self.head)
        # XLA fuses the head's dense layers and Adam update (Keras turns it off on CPU by default): ~20% faster
        # epochs. It draws other dropout masks than the plain path; compile.jit_compile: false switches it off.
        self.head.jit_compile = xla
        return self.head.fit(
            self.make_dataset(train, self.data.y_train, shuffle=shuffle, weights=weights), validation_data=validation,
            epochs=epochs, callbacks=callbacks, verbose=0, shuffle=False, **fit_settings,
        )

    def evaluate_test(self) -> dict[str, float]:
        """Test metrics from the cached test features: equal to the full model's on the test images."""
        result = self.head.evaluate(self.make_dataset(self.features("test"), self.data.y_test), verbose=0, return_dict=True)
        return {k: float(v) for k, v in result.items()}

    def cleanup(self) -> None:
        """Drop the feature files: they are a cache, not part of the run directory's contract."""
        self._features.clear()
        shutil.rmtree(self.cache_dir, ignore_errors=True)
