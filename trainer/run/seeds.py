"""Seeding a run: ``keras.utils.set_random_seed``, without starting TensorFlow on another backend."""
from __future__ import annotations

import sys


def set_random_seed(seed: int) -> None:
    """Seed Python, NumPy, Keras's global seed generator (and PyTorch on its backend), as ``keras.utils.set_random_seed`` does.

    Keras also seeds TensorFlow whenever it is installed, for ``tf.data`` pipelines, which on JAX
    and PyTorch imports it: 4-5 s of a JAX MNIST run on this project's machine, for nothing. So
    TensorFlow is seeded only where it feeds the batches (``needs_tf_data``: its own backend,
    multi_worker on JAX) or is already loaded; otherwise Keras is told, for this one call, that it
    is absent. The draws are the same either way (trainer's epoch order and augmentation are stateless).
    """
    import keras

    from trainer.data.batches import needs_tf_data

    if "tensorflow" in sys.modules or needs_tf_data():
        keras.utils.set_random_seed(seed)
        return
    from keras.src.utils import module_utils

    lazy = getattr(module_utils, "tensorflow", None)
    if lazy is None or not hasattr(lazy, "_available"):  # another Keras than 3.x's LazyModule: its own way
        keras.utils.set_random_seed(seed)
        return
    known = lazy._available
    lazy._available = False
    try:
        keras.utils.set_random_seed(seed)
    finally:
        lazy._available = known  # None again: TensorFlow is looked for when something needs it
