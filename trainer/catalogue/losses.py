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
    trainer_params: dict[str, Any] = field(default_factory=dict)  # parameters trainer adds to the Keras class's

    @property
    def takes_logits(self) -> bool:
        return "from_logits" in self.params

    @property
    def all_params(self) -> dict[str, Any]:
        """Every parameter the config may give, with its default."""
        return {**self.params, **self.trainer_params}


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
        # label_smoothing > 0 builds trainer's SmoothedSparseCategoricalCrossentropy (trainer.catalogue.loss_classes)
        {"label_smoothing": 0.0},
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
    """Refuse parameters the loss does not take (naming the ones it does) and label smoothing it cannot do."""
    from trainer.catalogue.params import LOSS_VALUES, check_values, raise_problems

    check_parameters(params, list(info.all_params), key, info.name)
    problems = check_values({k: v for k, v in params.items() if k in LOSS_VALUES}, LOSS_VALUES, key, info.name)
    if info.trainer_params.get("label_smoothing") is not None and smooths(params):
        for name, default in (("ignore_class", None), ("axis", -1)):
            if params.get(name, default) != default:
                problems.append(
                    f"{key}.{name}: {info.name} with label_smoothing takes no {name} (only the default, {default!r}); "
                    f"got {params[name]!r}. Remove {name} or label_smoothing."
                )
    raise_problems(problems, key, info.name)


def smooths(params: dict[str, Any]) -> bool:
    """Whether ``params`` ask for label smoothing (a number above 0)."""
    value = params.get("label_smoothing", 0.0)
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0


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
    if info.trainer_params.get("label_smoothing") is not None:
        params = dict(params)
        if smooths(params):
            from trainer.catalogue.loss_classes import SmoothedSparseCategoricalCrossentropy

            kept = {k: v for k, v in params.items() if k not in ("ignore_class", "axis")}  # only their defaults pass check_params
            return SmoothedSparseCategoricalCrossentropy(**kept)
        params.pop("label_smoothing", None)  # 0: Keras's own loss, exactly as without the key
    return getattr(keras.losses, info.keras_class)(**params)
