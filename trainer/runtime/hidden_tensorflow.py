"""Keras on JAX or PyTorch without starting TensorFlow: Keras imports it wherever it is installed, for nothing.

Keras 3 looks for TensorFlow through a lazy module (``tf.available``) in code every backend runs:
``keras.utils.set_random_seed`` seeds it for ``tf.data`` pipelines, and serializing any layer
(``get_config``, so every ``.h5`` save) checks for ``tf.TensorShape``. Where TensorFlow is
installed but not the backend, that import costs 4-5 s of a JAX run on this project's machine.
While TensorFlow is not loaded, no TensorFlow object can exist, so answering "absent" changes
no result; once it is loaded (the TensorFlow backend, ``tf.data`` for multi_worker on JAX, the
TensorBoard writer) Keras is left alone.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator


@contextlib.contextmanager
def keras_without_tensorflow() -> Iterator[None]:
    """While inside, Keras's optional-TensorFlow checks answer "not installed" unless TensorFlow is already loaded or is the backend."""
    import keras

    lazy = None
    if "tensorflow" not in sys.modules and keras.backend.backend() != "tensorflow":
        from keras.src.utils import module_utils

        lazy = getattr(module_utils, "tensorflow", None)
        if not hasattr(lazy, "_available") or getattr(lazy, "module", None) is not None:
            lazy = None  # another Keras than 3.x's LazyModule, or TensorFlow already found: leave it be
    if lazy is None:
        yield
        return
    known = lazy._available
    lazy._available = False
    try:
        yield
    finally:
        lazy._available = known  # unknown again: TensorFlow is looked for when something needs it


def set_random_seed(seed: int, *, tf_data: bool) -> None:
    """``keras.utils.set_random_seed`` (Python, NumPy, Keras's seed generator, PyTorch on its backend); TensorFlow's seed
    only when TensorFlow is the backend, is loaded, or feeds the batches (``tf_data``: ``trainer.data.batches.needs_tf_data()``)."""
    import keras

    if tf_data:
        keras.utils.set_random_seed(seed)
        return
    with keras_without_tensorflow():
        keras.utils.set_random_seed(seed)
