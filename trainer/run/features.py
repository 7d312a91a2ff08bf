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
from typing import Any, Callable, Iterable

import numpy as np

FEATURES_DIR = "features"  # inside the run directory, removed when the run ends
CHUNK = 128  # images per backbone call; inference only, so it does not change any result
SPOT_ROWS = 8  # rows of a shared feature file computed again, at random, before it is reused


def uses_cached_features(config) -> bool:
    """Cache when the backbone is frozen, nothing random happens before it, and the user did not say false.

    Input augmentation is a random step before the backbone, so it turns the cache off.
    """
    if not config.model.frozen_backbone or _augmented(config) or config.train.ema is not None:  # train.ema: the model trains on images
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
    if config.model.frozen_backbone and config.train.ema is not None and config.train.cache_features is not False:
        return "train.ema averages the whole model at every step, so the frozen backbone runs on every batch (its features are not cached)."
    return None


def compute_features(features_model, x: np.ndarray, path: Path, events: Any, label: str, *, key: str | None = None) -> np.ndarray:
    """Run ``features_model`` over ``x`` in chunks, writing the ``.npy`` at ``path``; returns it memory-mapped.

    ``key``: also write the index record a shared cache checks before reuse (``write_features``).
    """
    shape = (len(x), *(int(d) for d in features_model.output.shape[1:]))
    steps = -(-len(x) // CHUNK)

    def chunks():
        for step, start in enumerate(range(0, len(x), CHUNK), start=1):
            batch = np.asarray(x[start : start + CHUNK], dtype=np.float32)
            yield np.asarray(features_model.predict_on_batch(batch), dtype=np.float32)
            events.on_progress(step, {})

    events.on_phase_start(f"backbone features ({label})", steps)
    write_features(path, shape, chunks(), key=key, split=label if key is not None else None)
    events.on_phase_end()
    return np.load(path, mmap_mode="r")


def write_features(path: Path, shape: tuple[int, ...], chunks: Iterable[np.ndarray], *, key: str | None = None, split: str | None = None) -> str:
    """Write float32 ``chunks`` (rows, in order) as the ``.npy`` at ``path`` and return the SHA-256 of its data.

    Ordinary writes to a temporary file beside ``path``, renamed into place when complete: a full
    disk is an ``OSError`` (ENOSPC), never SIGBUS as a memory-mapped write would be. With ``key``
    (a shared cache), the index record ``read_feature_cache`` checks is written after the array.
    Any failure removes the temporary file and is a ``RunFailedError`` naming ``path``.
    """
    from trainer.errors import RunFailedError
    from trainer.outputs import Made
    from trainer.readers.cache_files import FEATURE_CACHE_KIND, feature_index_path
    from trainer.run.rundir import atomic_write_json

    path = Path(path)
    digest = hashlib.sha256()
    made = Made()
    partial = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")  # another process may compute the same file
    try:
        with made.undone_on_error():
            made.track_file(partial)
            with open(partial, "xb") as handle:
                np.lib.format.write_array_header_1_0(handle, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": tuple(shape)})
                rows = 0
                for chunk in chunks:
                    chunk = np.ascontiguousarray(chunk, dtype=np.float32)
                    if chunk.shape[1:] != tuple(shape[1:]) or rows + len(chunk) > shape[0]:
                        raise ValueError(f"features of shape {chunk.shape} do not fit {shape} after {rows} rows")
                    data = memoryview(chunk).cast("B")
                    handle.write(data)
                    digest.update(data)
                    rows += len(chunk)
                if rows != shape[0]:
                    raise ValueError(f"{rows} rows of features written, {shape[0]} expected")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, path)
        if key is not None:
            atomic_write_json(feature_index_path(path), {
                "kind": FEATURE_CACHE_KIND, "version": 1, "key": key, "split": split,
                "shape": list(shape), "dtype": "float32", "sha256": digest.hexdigest(),
            })
    except OSError as exc:
        raise RunFailedError(f"cannot write the backbone features {path}: {exc.strerror or exc}.") from None
    return digest.hexdigest()


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
        """``split``'s features from the shared folder, checked by their digest; computed and added there when absent or changed."""
        from trainer.errors import RunDirError
        from trainer.readers.cache_files import feature_index_path, read_feature_cache

        key = self.fingerprint(x)
        path = self.shared_dir / f"{split}-{key}.npy"
        backbone = self.model.get_layer("features")
        shape = (len(x), *(int(d) for d in backbone.output.shape[1:]))
        if path.exists() or path.is_symlink() or feature_index_path(path).exists() or feature_index_path(path).is_symlink():
            try:
                features = read_feature_cache(path, folder=self.shared_dir, key=key, split=split, shape=shape)
                self.spot_check(features, x, path)
            except RunDirError as exc:  # replaced below (os.replace), never trained on
                self.events.on_notice(f"backbone features ({split}) in {path} are not reused: {exc.message} They are computed again.")
            else:
                self.events.on_notice(f"backbone features ({split}) reused from {path}: same backbone, weights and images (digest and sample checked).")
                return features
        if path.is_dir() and not path.is_symlink():  # not trainer's to remove: this run keeps its own copy instead
            self.events.on_notice(f"{path} is a folder, not a feature file; the features of this run are kept in its run directory instead.")
            self.cache_dir.mkdir(exist_ok=True)
            return compute_features(backbone, x, self.cache_dir / f"{split}.npy", self.events, split)
        try:
            self.shared_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            from trainer.errors import RunFailedError

            raise RunFailedError(f"cannot create the shared feature cache {self.shared_dir}: {exc.strerror or exc}.") from None
        return compute_features(backbone, x, path, self.events, split, key=key)

    def spot_check(self, features: np.ndarray, x: np.ndarray, path: Path) -> None:
        """The backbone run again on a few rows drawn at random must give the cached rows; else ``RunDirError``.

        The digest proves the file is the one its index describes; this proves the pair is what
        the backbone makes of these images, so a file and index rewritten together are caught
        too (each forged row is found with the chance ``SPOT_ROWS`` / rows per run).
        """
        from trainer.errors import RunDirError

        if not len(x):
            return
        rows = np.sort(np.random.default_rng(int.from_bytes(os.urandom(8), "little")).choice(len(x), min(SPOT_ROWS, len(x)), replace=False))
        backbone = self.model.get_layer("features")
        fresh = np.asarray(backbone.predict_on_batch(np.asarray(x[rows], dtype=np.float32)), dtype=np.float32)
        cached = np.asarray(features[rows], dtype=np.float32)
        scale = float(np.max(np.abs(fresh))) if fresh.size else 0.0
        if cached.shape != fresh.shape or not np.allclose(cached, fresh, rtol=1e-3, atol=1e-4 * max(scale, 1.0)):
            raise RunDirError(f"{path}: rows {rows.tolist()} differ from what the backbone makes of those images now.")

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
        # On PyTorch jit_compile is torch.compile, minutes of C++ compiling on a CPU (a 1-epoch run took 270 s
        # instead of 5): there the head keeps what its compile chose (auto: eager; jit_compile: true compiles).
        import keras

        if keras.backend.backend() != "torch":
            self.head.jit_compile = xla
        return self.head.fit(
            self.make_dataset(train, self.data.y_train, shuffle=shuffle, weights=weights), validation_data=validation,
            epochs=epochs, callbacks=callbacks, verbose=0, shuffle=False, **fit_settings,
        )

    def evaluate_test(self) -> dict[str, float]:
        """Test metrics from the cached test features: equal to the full model's on the test images."""
        result = self.head.evaluate(self.make_dataset(self.features("test"), self.data.y_test), verbose=0, return_dict=True)
        return {k: float(v) for k, v in result.items()}

    def test_probabilities(self) -> np.ndarray:
        """The head's outputs on the cached test features (the full model's on the test images)."""
        return np.asarray(self.head.predict(self.make_dataset(self.features("test"), self.data.y_test), verbose=0))

    def cleanup(self) -> None:
        """Drop the feature files: they are a cache, not part of the run directory's contract."""
        self._features.clear()
        shutil.rmtree(self.cache_dir, ignore_errors=True)

