"""The loss catalogue: names, aliases, the label encoding each needs, and the Keras builder.

The catalogue itself is plain data so that ``trainer validate`` can check loss/label agreement
without importing TensorFlow; ``build_loss`` imports Keras only when called.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainer.catalogue.registry import Registry, check_parameters


@dataclass(frozen=True)
class LossInfo:
    name: str
    keras_class: str
    encoding: str  # "sparse" (integer class ids) or "onehot" (one row per example)
    params: dict[str, Any] = field(default_factory=dict)  # parameter -> Keras default
    aliases: tuple[str, ...] = ()

    @property
    def takes_logits(self) -> bool:
        return "from_logits" in self.params


_COMMON = {"reduction": "sum_over_batch_size"}
_XENT = {"from_logits": False, "label_smoothing": 0.0, "axis": -1, **_COMMON}

LOSSES: Registry[LossInfo] = Registry("loss")
for _info in (
    LossInfo("mean_squared_error", "MeanSquaredError", "onehot", dict(_COMMON), ("mse",)),
    LossInfo("mean_absolute_error", "MeanAbsoluteError", "onehot", dict(_COMMON), ("mae",)),
    LossInfo("mean_absolute_percentage_error", "MeanAbsolutePercentageError", "onehot", dict(_COMMON), ("mape",)),
    LossInfo("mean_squared_logarithmic_error", "MeanSquaredLogarithmicError", "onehot", dict(_COMMON), ("msle",)),
    LossInfo("huber", "Huber", "onehot", {"delta": 1.0, **_COMMON}, ("huber_loss",)),
    LossInfo("log_cosh", "LogCosh", "onehot", dict(_COMMON), ("logcosh",)),
    LossInfo("binary_crossentropy", "BinaryCrossentropy", "onehot", dict(_XENT), ("bce",)),
    LossInfo("categorical_crossentropy", "CategoricalCrossentropy", "onehot", dict(_XENT), ("cce",)),
    LossInfo(
        "sparse_categorical_crossentropy",
        "SparseCategoricalCrossentropy",
        "sparse",
        {"from_logits": False, "ignore_class": None, "axis": -1, **_COMMON},
        ("scce",),
    ),
    LossInfo(
        "binary_focal_crossentropy",
        "BinaryFocalCrossentropy",
        "onehot",
        {"apply_class_balancing": False, "alpha": 0.25, "gamma": 2.0, **_XENT},
    ),
    LossInfo(
        "categorical_focal_crossentropy",
        "CategoricalFocalCrossentropy",
        "onehot",
        {"alpha": 0.25, "gamma": 2.0, **_XENT},
    ),
    LossInfo("hinge", "Hinge", "onehot", dict(_COMMON)),
    LossInfo("squared_hinge", "SquaredHinge", "onehot", dict(_COMMON)),
    LossInfo("categorical_hinge", "CategoricalHinge", "onehot", dict(_COMMON)),
    LossInfo("kl_divergence", "KLDivergence", "onehot", dict(_COMMON), ("kld", "kullback_leibler_divergence")),
    LossInfo("cosine_similarity", "CosineSimilarity", "onehot", {"axis": -1, **_COMMON}),
    LossInfo("poisson", "Poisson", "onehot", dict(_COMMON)),
):
    # ``name`` is a parameter too (the Keras default is the loss's own name, "huber_loss" for huber).
    _info.params["name"] = "huber_loss" if _info.name == "huber" else _info.name
    LOSSES.register(_info.name, _info, _info.aliases)


def loss_info(name: str, key: str = "loss") -> LossInfo:
    """The catalogue entry for a built-in loss name (aliases accepted)."""
    return LOSSES.get(name, key=f"{key}.name" if key != "loss" else key)


def check_params(info: LossInfo, params: dict[str, Any], key: str = "loss") -> None:
    """Refuse parameters the loss does not take, naming the ones it does."""
    check_parameters(params, list(info.params), key, info.name)


def build_loss(name: str, params: dict[str, Any], config_dir: Any = None, records: list[dict[str, Any]] | None = None):
    """A Keras loss object for a built-in name, or user code for ``module:attr``; imports are appended to ``records``."""
    import keras

    from trainer.catalogue.user_code import instantiate, is_ref

    if is_ref(name):
        loss, entry = instantiate(name, params, config_dir, key="loss", base=keras.losses.Loss, what="loss")
        if records is not None:
            records.append(entry)
        return loss
    info = loss_info(name)
    check_params(info, params)
    return getattr(keras.losses, info.keras_class)(**params)
