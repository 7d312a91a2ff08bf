"""Checks of the whole catalogue before any data is read, and the ``trainer list`` tables' contents.

``check_catalogue`` builds every configured loss, metric, optimizer and callback once (imports
user code too), so a wrong name or parameter costs a second, not a data load and an epoch.
"""
from __future__ import annotations

from typing import Any

from trainer.config.checks import Plan, plan_run
from trainer.config.schema import Config
from trainer.errors import ConfigError


def check_catalogue(config: Config, plan: Plan | None = None) -> list[dict[str, Any]]:
    """Build (and throw away) everything the config names; returns the custom objects that the model will hold."""
    from trainer.catalogue.callbacks import build_callbacks
    from trainer.catalogue.losses import build_loss
    from trainer.catalogue.metrics import build_metrics
    from trainer.catalogue.optimizers import build_optimizer

    plan = plan or plan_run(config)
    records: list[dict[str, Any]] = []
    build_loss(plan.loss_name, plan.loss_params, config.config_dir, records)
    build_metrics(config.metrics, plan.encoding, config.config_dir, records)
    build_metrics(config.compile.weighted_metrics, plan.encoding, config.config_dir, records, key_prefix="compile.weighted_metrics")
    build_optimizer(config.optimizer.name, config.optimizer.params)  # parameters only: no model, no run length yet
    build_callbacks(config.callbacks, None, config.config_dir)
    return records


def catalogue_rows(kind: str) -> list[dict[str, Any]]:
    """One row per entry of a catalogue: name, aliases and parameters with their defaults."""
    if kind == "losses":
        from trainer.catalogue.losses import LOSSES

        return [
            {"name": name, "aliases": ", ".join(info.aliases), "labels": info.encoding, "parameters": _params(info.all_params)}
            for name, info in LOSSES.items()
        ]
    from trainer.catalogue.optimizers import keras_defaults

    if kind == "metrics":
        import keras

        from trainer.catalogue.metrics import BY_ENCODING, DEFAULTS, METRICS

        rows = []
        for name, class_name in METRICS.items():
            aliases = ", ".join(a for a, target in METRICS._aliases.items() if target == name)
            if name in BY_ENCODING:
                cls = getattr(keras.metrics, BY_ENCODING[name]["sparse"])
                note = f"{BY_ENCODING[name]['sparse']} or {BY_ENCODING[name]['onehot']} by label encoding"
            else:
                cls, note = getattr(keras.metrics, class_name), class_name
            defaults = {**keras_defaults(cls), **DEFAULTS.get(name, {})}
            if name in BY_ENCODING:
                defaults["name"] = "top_<k>_accuracy" if name == "top_k_accuracy" else name  # what the logs call it
            rows.append({"name": name, "aliases": aliases, "keras": note, "parameters": _params(defaults)})
        return rows
    if kind == "optimizers":
        import keras

        from trainer.catalogue.optimizers import OPTIMIZERS, REQUIRED, SCHEDULES

        from trainer.catalogue.params import RUN_LENGTH_DEFAULTS, RUN_LENGTH_SCHEDULES, TRAINER_OPTIMIZER_DEFAULTS

        rows = [
            {"name": name, "keras": cls, "parameters": _params({**keras_defaults(getattr(keras.optimizers, cls)), **TRAINER_OPTIMIZER_DEFAULTS})}
            for name, cls in OPTIMIZERS.items()
        ]
        rows += [
            {"name": f"learning_rate: {{name: {name}}}", "keras": f"schedules.{cls}", "parameters": _params(keras_defaults(getattr(keras.optimizers.schedules, cls)))}
            for name, cls in SCHEDULES.items()
        ]
        rows += [
            {"name": f"learning_rate: {{name: {name}}}", "keras": "(trainer) fractions of the run's steps", "parameters": _params({"peak": REQUIRED, **RUN_LENGTH_DEFAULTS})}
            for name in RUN_LENGTH_SCHEDULES
        ]
        return rows
    if kind == "callbacks":
        from trainer.catalogue.callbacks import CALLBACKS, callback_defaults

        return [
            {"name": name, "keras": info.keras_class or "(trainer)", "parameters": _params(callback_defaults(info))}
            for name, info in CALLBACKS.items()
        ]
    if kind == "models":
        return model_rows()
    from trainer.catalogue.registry import unknown_choice_message

    raise ConfigError(unknown_choice_message("trainer list", kind, CATALOGUES))


CATALOGUES = ("losses", "metrics", "optimizers", "callbacks", "models")


def model_rows() -> list[dict[str, Any]]:
    """One row per model type (its config keys and defaults), and one per ``resnet`` variant with the values it fills in."""
    from trainer.config.models import MODEL_TYPES, RESNET_VARIANTS

    def plain(value: Any) -> Any:
        return value.model_dump() if hasattr(value, "model_dump") else list(value) if isinstance(value, tuple) else value

    rows = []
    for name, entry in MODEL_TYPES.items():
        fields = {key: field for key, field in entry.config_class.model_fields.items() if key != "type"}
        defaults = {key: plain(field.default_factory() if field.default_factory else field.default) for key, field in fields.items()}
        rows.append({"name": f"model.type: {name}", "parameters": _params(defaults)})
        if name == "resnet":  # what each variant fills in for the options left unset
            for variant in RESNET_VARIANTS:
                config = entry.config_class(variant=variant)
                resolved = {key: plain(config.resolved(key)) for key in vars(RESNET_VARIANTS[variant])}
                rows.append({"name": f"  variant: {variant}", "parameters": _params(resolved)})
    return rows


def _params(defaults: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in defaults.items()) or "-"
