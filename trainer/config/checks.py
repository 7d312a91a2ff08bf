"""Pre-flight checks: do the loss, the label encoding and the model agree? (no TensorFlow)

Everything here runs before any data is read or any model is built, so a mismatch costs the
user a second, not an epoch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainer.config.schema import Config
from trainer.errors import ConfigError
from trainer.catalogue.losses import check_params, loss_info


@dataclass
class Plan:
    """What the checks decided: the label encoding, the loss's parameters, notices to show."""

    encoding: str
    loss_name: str
    loss_params: dict[str, Any]
    num_classes: int | None
    notices: list[str] = field(default_factory=list)


def _is_custom(name: str) -> bool:
    return ":" in name


def plan_run(config: Config) -> Plan:
    """Resolve ``labels.encoding: auto`` and ``from_logits``; refuse combinations that cannot train."""
    from trainer.data.catalog import DATASETS

    check_catalogue_names(config)
    check_augment(config)
    check_ema(config)
    notices: list[str] = model_input_notices(config)
    dataset = DATASETS.get(config.data.dataset)
    num_classes = dataset.num_classes if dataset is not None else None
    name = config.loss.name
    params = dict(config.loss.params)
    requested = config.labels.encoding

    if _is_custom(name):
        from trainer.catalogue.user_code import split_ref

        split_ref(name, "loss")  # a malformed reference is refused here; the import waits for `trainer run`
        if requested == "auto":
            raise ConfigError(
                f"labels.encoding: a custom loss ({name}) needs an explicit encoding; "
                "set labels.encoding: sparse (integer class ids) or onehot (one row per example)."
            )
        if mixes(config) and requested != "onehot":
            raise ConfigError(
                f"labels.encoding: data.augment {mixing_keys(config)} mixes the labels of two examples into soft one-hot "
                f"targets, which a custom loss ({name}) on sparse labels cannot take; set labels.encoding: onehot "
                "(the loss then gets one row of class weights per example) or remove mixup/cutmix."
            )
        check_metrics(config, requested)
        return Plan(requested, name, params, num_classes, notices)

    info = loss_info(name)
    check_params(info, params)
    encoding = info.encoding if requested == "auto" else requested
    if encoding != info.encoding:
        needs = "one-hot" if info.encoding == "onehot" else "sparse (integer)"
        fix = (
            "labels.encoding: onehot (or auto), or use loss: sparse_categorical_crossentropy"
            if info.encoding == "onehot"
            else "labels.encoding: sparse (or auto), or use loss: categorical_crossentropy"
        )
        raise ConfigError(
            f"labels.encoding: loss {info.name} needs {needs} labels but labels.encoding is {requested}; "
            f"set {fix}."
        )

    output = config.model.output
    if info.takes_logits:
        if "from_logits" in params:
            from_logits = params["from_logits"]
            if not isinstance(from_logits, bool):
                raise ConfigError(f"loss.from_logits: must be true or false; got {from_logits!r}")
            if from_logits and output == "softmax":
                raise ConfigError(
                    "loss.from_logits: is true but model.output is softmax, so the loss would apply softmax twice; "
                    "set model.output: logits, or loss.from_logits: false (or leave it out)."
                )
            if not from_logits and output == "logits":
                raise ConfigError(
                    "loss.from_logits: is false but model.output is logits (raw scores, not probabilities); "
                    "set loss.from_logits: true (or leave it out), or model.output: softmax."
                )
        else:
            params["from_logits"] = output == "logits"
            if output == "logits":
                notices.append(f"loss {info.name}: from_logits set to true because model.output is logits.")
    elif output == "logits":
        notices.append(
            f"loss {info.name} has no from_logits setting and will see raw scores (model.output: logits); "
            "use model.output: softmax if it expects probabilities."
        )
    name = info.name
    if mixes(config) and encoding == "sparse":
        name, params, encoding = mixing_loss(config, info.name, params, notices)
    check_metrics(config, encoding)
    return Plan(encoding, name, params, num_classes, notices)


def mixes(config: Config) -> bool:
    """Whether ``data.augment`` mixes examples (mixup or cutmix), so training targets are soft one-hot rows."""
    return config.data.augment is not None and config.data.augment.mixes


def mixing_keys(config: Config) -> str:
    augment = config.data.augment
    return " and ".join(key for key in ("mixup", "cutmix") if getattr(augment, key))


# Metrics that read integer labels: with mixing the labels are one-hot rows, and ``accuracy`` / ``top_k_accuracy`` follow.
SPARSE_ONLY_METRICS = {"sparse_categorical_accuracy": "accuracy", "sparse_top_k_categorical_accuracy": "top_k_accuracy"}


def mixing_loss(config: Config, loss_name: str, params: dict[str, Any], notices: list[str]) -> tuple[str, dict[str, Any], str]:
    """The one-hot twin of sparse cross-entropy for a run whose batches are mixed: (loss name, parameters, "onehot").

    Mixup and cutmix make each training target a weighted pair of classes; integer labels cannot say
    that. So the whole run (training, validation, test, and ``trainer eval`` through this same plan)
    uses one-hot labels and ``categorical_crossentropy`` with the same ``from_logits`` and
    ``label_smoothing``: on a one-hot row it is the same number as the sparse loss on the integer.
    """
    from trainer.catalogue.metrics import METRICS

    if params.get("ignore_class") is not None:
        raise ConfigError(
            f"loss.ignore_class: data.augment {mixing_keys(config)} trains on mixed one-hot targets, where no class can be "
            f"ignored; remove ignore_class ({params['ignore_class']!r}) or mixup/cutmix."
        )
    for prefix, specs in (("metrics", config.metrics), ("compile.weighted_metrics", config.compile.weighted_metrics)):
        for index, spec in enumerate(specs):
            canonical = METRICS.canonical(spec.name) if not _is_custom(spec.name) else None
            if canonical in SPARSE_ONLY_METRICS:
                raise ConfigError(
                    f"{prefix}.{index}: {spec.name} reads integer labels, but data.augment {mixing_keys(config)} trains on mixed "
                    f"one-hot targets; use {SPARSE_ONLY_METRICS[canonical]} (it follows the label encoding)."
                )
    twin = {key: value for key, value in params.items() if key != "ignore_class"}  # ignore_class None: the default
    notices.append(
        f"data.augment {mixing_keys(config)}: the labels are one-hot rows and {loss_name} runs as categorical_crossentropy "
        "(the same values on unmixed labels; validation, test and trainer eval are unchanged)."
    )
    return "categorical_crossentropy", twin, "onehot"


def check_catalogue_names(config: Config) -> None:
    """Unknown optimizer, metric or callback names, and a learning-rate schedule fought over by a callback,
    are refused here (by ``validate`` and before ``--dry-run``), not mid-run."""
    from trainer.catalogue.callbacks import CALLBACKS
    from trainer.catalogue.metrics import METRICS
    from trainer.catalogue.optimizers import OPTIMIZERS

    entries = [(OPTIMIZERS, "optimizer", config.optimizer)]
    entries += [(METRICS, f"metrics.{i}", spec) for i, spec in enumerate(config.metrics)]
    entries += [(CALLBACKS, f"callbacks.{i}.name", spec) for i, spec in enumerate(config.callbacks)]
    for registry, key, spec in entries:
        if not _is_custom(spec.name):
            registry.get(spec.name, key=key)
    from trainer.catalogue.callbacks import check_callbacks
    from trainer.catalogue.params import OPTIMIZER_PARAMS, check_optimizer_params, logged_names

    optimizer = OPTIMIZERS.canonical(config.optimizer.name)
    if optimizer in OPTIMIZER_PARAMS:
        check_optimizer_params(optimizer, config.optimizer.params)
    names = metric_log_names(config)
    logged = None if names is None else logged_names(names, config.data.validation != "none")
    check_callbacks(config.callbacks, logged)
    from trainer.config.monitor import resolve_monitor

    resolve_monitor(config, logged)  # train.monitor: the value that picks model.h5's epoch
    scheduled = isinstance(config.optimizer.params.get("learning_rate"), dict)
    uses_callback = any(spec.name in ("learning_rate_scheduler", "reduce_lr_on_plateau") for spec in config.callbacks)
    if scheduled and uses_callback:
        raise ConfigError(
            "optimizer.learning_rate: is a schedule, but a callback (learning_rate_scheduler or reduce_lr_on_plateau) "
            "also sets the learning rate; Keras cannot do both. Use a number for learning_rate, or drop the callback."
        )


def check_metrics(config: Config, encoding: str) -> None:
    """Built-in metrics' parameters (names, types, ranges) under the resolved label encoding, all at once."""
    from trainer.catalogue.params import check_metric_params, raise_problems

    problems = check_metric_params(config.metrics, encoding)
    problems += check_metric_params(config.compile.weighted_metrics, encoding, "compile.weighted_metrics")
    raise_problems(problems, "metrics", "the metrics")


def metric_log_names(config: Config) -> list[str] | None:
    """The names the configured metrics log under (None when user code makes them unknown until it is imported)."""
    from trainer.catalogue.metrics import METRICS

    names = []
    for prefix, specs in (("", config.metrics), ("weighted_", config.compile.weighted_metrics)):
        for spec in specs:
            canonical = METRICS.canonical(spec.name) if not _is_custom(spec.name) else None
            if canonical is None:
                return None
            default = f"top_{spec.params.get('k', 5)}_accuracy" if canonical == "top_k_accuracy" else canonical
            names.append(prefix + str(spec.params.get("name", default)))
    return names


def check_ema(config: Config) -> None:
    """``train.ema`` is kept inside one process's training step: refuse the settings it cannot follow yet."""
    if config.train.ema is None:
        return
    if config.distribute.strategy != "none":
        raise ConfigError(
            f"train.ema: not supported with distribute.strategy {config.distribute.strategy} yet (the average is kept "
            "by one process's training step); remove train.ema or use distribute.strategy: none."
        )
    if config.train.cache_features is True:
        raise ConfigError(
            "train.cache_features: true cannot be used with train.ema (the average covers the whole model, which "
            "then trains on images); set train.cache_features: auto or false, or remove train.ema."
        )


def model_input_notices(config: Config) -> list[str]:
    """Say how images will be adapted for the model (never silently); refuse a feature cache that cannot be."""
    from trainer.data.catalog import expected_image_shape
    from trainer.models.adaptation import adaptation_notice

    cache = config.train.cache_features
    if not config.model.has_backbone:
        if cache is True:
            raise ConfigError(
                f"train.cache_features: true needs a frozen backbone (a model type with a backbone, such as vgg16_head); "
                f"model.type is {config.model.type}, so set train.cache_features: auto or false."
            )
        return []
    if cache is True and not config.model.frozen_backbone:
        raise ConfigError(
            "train.cache_features: true needs a frozen backbone, but model.trainable_backbone is true "
            "(the features change every step); set train.cache_features: auto or false."
        )
    shape = expected_image_shape(config.data.dataset, config.data.image_size, config.data.color_mode)
    augmented = config.data.augment is not None and config.data.augment.active
    if cache is True and augmented:
        raise ConfigError(
            "train.cache_features: true cannot be, because data.augment changes the images every epoch and so the "
            "backbone's features; set train.cache_features: auto or false, or remove data.augment."
        )
    notice = adaptation_notice(shape, config.model.type, config.model.backbone) if shape is not None else None
    return [notice] if notice else []


def check_crop(crop: int, image_shape: tuple[int, ...], source: str = "") -> None:
    """``data.augment.crop`` pads by ``crop`` pixels and cuts back at a random place: it must be smaller than both sides.

    At ``crop`` >= a side the cut can land wholly in the padding (an all-black training image).
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    if crop and crop >= min(height, width):
        where = f" ({source})" if source else ""
        raise ConfigError(
            f"data.augment.crop: {crop} pixels is not smaller than the {height}x{width} images{where}; a crop of N pads "
            f"by N and cuts back at a random place, so it must be less than {min(height, width)} (try {max(1, min(height, width) // 8)})."
        )


def check_augment(config: Config) -> None:
    """``data.augment`` against the image size known before any file is read (folder datasets, or a download)."""
    from trainer.data.catalog import FOLDER_DATASET, expected_image_shape

    augment = config.data.augment
    if augment is None or not augment.crop:
        return
    if config.data.dataset != FOLDER_DATASET and config.data.path is not None:
        return  # the file decides the image size: checked once it is read (trainer.data.loaders)
    shape = expected_image_shape(config.data.dataset, config.data.image_size, config.data.color_mode)
    if shape is not None:
        check_crop(augment.crop, shape)
