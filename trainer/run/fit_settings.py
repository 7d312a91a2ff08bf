"""The ``train`` section as ``model.fit`` settings: class and sample weights, steps, initial epoch."""
from __future__ import annotations

from typing import Any

from trainer.config import Config


def fit_kwargs(config: Config, y_train, num_classes: int) -> dict[str, Any]:
    """The ``train`` section's ``model.fit`` settings beyond epochs and batches (``class_weight: balanced`` computed here).

    ``num_classes`` is the loaded data's (a folder dataset's classes are its folders).
    """
    import numpy as np

    from trainer.errors import ConfigError

    train = config.train
    class_weight = train.class_weight
    if class_weight == "balanced":
        counts = np.bincount(y_train)
        class_weight = {c: float(len(y_train) / (len(counts) * n)) for c, n in enumerate(counts) if n > 0}
    elif class_weight is not None:
        outside = [c for c in class_weight if not 0 <= c < num_classes]
        if outside:
            raise ConfigError(f"train.class_weight: class ids {outside} are outside 0..{num_classes - 1} of {config.data.dataset}")
        class_weight = {c: float(class_weight.get(c, 1.0)) for c in range(num_classes)}  # unnamed classes weigh 1
        from trainer.config.checks import check_class_weights

        check_class_weights(class_weight, y_train)
    return {
        "class_weight": class_weight,
        "initial_epoch": train.initial_epoch,
        "steps_per_epoch": train.steps_per_epoch,
        "validation_steps": train.validation_steps,
    }


def load_sample_weights(config: Config, train_examples: int, validation_examples: int, train_rows=None):
    """``train.sample_weights``: a .npy with one weight per training example (as read, after ``data.limit``).

    When ``data.validation`` is a fraction, the weights of the examples split off for validation are dropped
    (``train_rows``: the rows that train, ``LoadedData.train_rows``).
    """
    import numpy as np

    from trainer.errors import DataError

    path = config.train.sample_weights
    if path is None:
        return None
    from trainer.readers.decoders import open_npy

    weights = open_npy(path, "train.sample_weights")  # header checked, data memory-mapped: read below only if it fits
    if config.data.limit is not None and weights.ndim == 1 and len(weights) > config.data.limit:
        weights = weights[: config.data.limit]
    expected = train_examples + (validation_examples if isinstance(config.data.validation, float) else 0)
    if weights.ndim != 1 or len(weights) != expected or not np.issubdtype(weights.dtype, np.number):
        kind = "" if np.issubdtype(weights.dtype, np.number) else f" ({weights.dtype} values are not numbers)"
        raise DataError(
            f"train.sample_weights: {path} holds a {weights.dtype} array of shape {weights.shape}{kind}; "
            f"expected one number per training example, shape ({expected},)."
        )
    from trainer.config.checks import check_sample_weights

    check_sample_weights(weights, path)  # the whole file: a bad weight is wrong wherever it is
    kept = weights[np.asarray(train_rows)] if train_rows is not None else weights[:train_examples]
    kept = np.asarray(kept, dtype="float32")
    check_sample_weights(kept, path)  # all zero on the examples that train (validation's held out) trains nothing
    return kept
