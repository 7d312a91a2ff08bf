"""The metric catalogue: names -> Keras metrics, with ``accuracy`` and top-k matched to the label encoding."""
from __future__ import annotations

from typing import Any

from trainer.catalogue.optimizers import check_keras_params
from trainer.catalogue.registry import Registry, construct

# name -> Keras class; "accuracy" and "top_k_accuracy" are chosen by the label encoding.
METRICS: Registry[str] = Registry("metrics")
for _name, _cls, _aliases in (
    ("categorical_accuracy", "CategoricalAccuracy", ()),
    ("sparse_categorical_accuracy", "SparseCategoricalAccuracy", ()),
    ("top_k_categorical_accuracy", "TopKCategoricalAccuracy", ()),
    ("sparse_top_k_categorical_accuracy", "SparseTopKCategoricalAccuracy", ()),
    ("auc", "AUC", ()),
    ("precision", "Precision", ()),
    ("recall", "Recall", ()),
    ("f1_score", "F1Score", ("f1",)),
    ("mean_squared_error", "MeanSquaredError", ("mse",)),
    ("mean_absolute_error", "MeanAbsoluteError", ("mae",)),
):
    METRICS.register(_name, _cls, _aliases)
METRICS.register("accuracy", "accuracy", ("acc",))
METRICS.register("top_k_accuracy", "top_k_accuracy", ("top_k",))

BY_ENCODING = {
    "accuracy": {"sparse": "SparseCategoricalAccuracy", "onehot": "CategoricalAccuracy"},
    "top_k_accuracy": {"sparse": "SparseTopKCategoricalAccuracy", "onehot": "TopKCategoricalAccuracy"},
}
# Trainer's defaults that differ from Keras's (a per-class F1 vector cannot be logged per epoch).
DEFAULTS: dict[str, dict[str, Any]] = {"f1_score": {"average": "macro"}}


def metric_class(name: str, encoding: str, key: str):
    """The Keras class for a catalogue name under ``encoding`` (sparse labels get one-hot-encoding variants)."""
    import keras

    canonical = METRICS.canonical(name) if isinstance(name, str) else None
    if canonical is None:
        METRICS.get(name, key=f"{key}.name")  # raises with the closest valid name
    if canonical in BY_ENCODING:
        return getattr(keras.metrics, BY_ENCODING[canonical][encoding])
    class_name = METRICS.get(canonical)
    if encoding == "sparse":
        from trainer.catalogue.metric_classes import SPARSE_VARIANTS

        if class_name in SPARSE_VARIANTS:
            return SPARSE_VARIANTS[class_name]
    return getattr(keras.metrics, class_name)


def build_metrics(
    specs: list[Any], encoding: str, config_dir: Any = None, records: list[dict[str, Any]] | None = None, *, prefix: str = "", key_prefix: str = "metrics"
) -> list[Any]:
    """Keras metric objects for the configured names; ``module:attr`` entries import user code (appended to ``records``)."""
    import keras

    from trainer.catalogue.user_code import instantiate, is_ref

    metrics = []
    for index, spec in enumerate(specs):
        key = f"{key_prefix}.{index}"
        params = dict(spec.params)
        if is_ref(spec.name):
            metric, entry = instantiate(spec.name, params, config_dir, key=key, base=keras.metrics.Metric, what="metric")
            if records is not None:
                records.append(entry)
            metrics.append(metric)
            continue
        cls = metric_class(spec.name, encoding, key)
        canonical = METRICS.canonical(spec.name)
        check_keras_params(cls, params, key, spec.name)
        params = {**DEFAULTS.get(canonical, {}), **params}
        default_name = f"top_{params.get('k', 5)}_accuracy" if canonical == "top_k_accuracy" else canonical
        name = params.pop("name", default_name)
        metrics.append(construct(cls, {"name": prefix + name, **params}, key, spec.name, shown=spec.params))
    return metrics


def check_metric_params(specs: list[Any], encoding: str, key_prefix: str = "metrics") -> list[str]:
    """Problems with built-in metrics' parameters under the run's label encoding (user code is checked when imported)."""
    from trainer.catalogue.params import METRIC_PARAMS, SPARSE_ONLY, check_values

    problems = []
    for index, spec in enumerate(specs):
        canonical = METRICS.canonical(spec.name) if ":" not in spec.name else None
        if canonical not in METRIC_PARAMS:
            continue
        table = {**METRIC_PARAMS[canonical], **(SPARSE_ONLY.get(canonical, {}) if encoding == "sparse" else {})}
        problems += check_values(spec.params, table, f"{key_prefix}.{index}", spec.name)
    return problems
