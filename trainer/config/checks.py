"""Pre-flight checks: do the loss, the label encoding and the model agree? (no TensorFlow)

Everything here runs before any data is read or any model is built, so a mismatch costs the
user a second, not an epoch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
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


def plan_run(config: Config, *, training: bool = True) -> Plan:
    """Resolve ``labels.encoding: auto`` and ``from_logits``; refuse combinations that cannot train.

    ``training``: the config is about to train (run, lr-find, sweep, validate), so settings that
    would make it train nothing are refused too (``check_trains``); eval and predict of a finished
    run pass False.
    """
    from trainer.catalogue.datasets import DATASETS

    check_catalogue_names(config)
    if training:
        check_trains(config)
    check_augment(config)
    check_ema(config)
    notices: list[str] = model_input_notices(config)
    if training:
        notices += never_applies_notices(config)
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
    from trainer.catalogue.metrics import check_metric_params
    from trainer.catalogue.params import raise_problems

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
    from trainer.catalogue.datasets import expected_image_shape
    from trainer.catalogue.adaptation import adaptation_notice

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
    from trainer.catalogue.datasets import IMAGE_FILE_DATASETS, expected_image_shape

    augment = config.data.augment
    if augment is None or not augment.crop:
        return
    if config.data.dataset not in IMAGE_FILE_DATASETS and config.data.path is not None:
        return  # the file decides the image size: checked once it is read (trainer.data.loaders)
    shape = expected_image_shape(config.data.dataset, config.data.image_size, config.data.color_mode)
    if shape is not None:
        check_crop(augment.crop, shape)


# --------------------------------------------------------------------------- settings that train nothing


def check_trains(config: Config) -> None:
    """Refuse settings under which ``model.fit`` would run every epoch and change no weight (a ``completed`` no-op).

    Each of these is accepted by Keras and trains nothing: a loss multiplied by zero, targets
    that carry no label, a learning rate that is zero at every step, mixing a batch of one with
    itself. What needs the data or the model (sample and class weights, trainable weights,
    gradient accumulation against the run's step count) is checked once those exist
    (``check_sample_weights``, ``check_class_weights``, ``check_updates``).
    """
    problems: list[str] = []
    if config.compile.loss_weights == 0:
        problems.append(
            "compile.loss_weights: 0 multiplies the loss (and so every gradient) by zero, so no weight would change; "
            "remove it or give a number > 0."
        )
    smoothing = config.loss.params.get("label_smoothing")
    if isinstance(smoothing, (int, float)) and not isinstance(smoothing, bool) and smoothing == 1:  # above 1: the range check says so
        problems.append(
            f"loss.label_smoothing: {smoothing!r} replaces every label with the uniform distribution, so the model would "
            "learn nothing from the labels; use a value below 1 (0.1 is common)."
        )
    zero_rate = zero_learning_rate(config.optimizer.params.get("learning_rate"))
    if zero_rate:
        problems.append(f"optimizer.learning_rate: {zero_rate}, so no weight would change; give it a rate > 0.")
    if mixes(config) and config.train.batch_size == 1:
        problems.append(
            f"train.batch_size: 1 with data.augment {mixing_keys(config)}: each example is mixed with its batch reversed, "
            "which for a batch of one is itself, so the mixing never applies; use a batch size of 2 or more, or remove "
            f"{mixing_keys(config)}."
        )
    if problems:
        if len(problems) == 1:
            raise ConfigError(problems[0])
        raise ConfigError("these settings would train nothing:", problems=problems)


def zero_learning_rate(rate: Any) -> str | None:
    """Why ``optimizer.learning_rate`` (a number or a schedule) is zero at every step, else None.

    A number must be > 0 (the parameter check says so); of the Keras schedules, those that scale
    ``initial_learning_rate`` stay at zero when it is zero (a cosine warm-up to ``warmup_target``
    and a polynomial decay to ``end_learning_rate`` excepted), and a piecewise constant schedule
    whose every value is zero.
    """
    if not isinstance(rate, dict):
        return None
    name = rate.get("name")

    def zero(key: str, default: Any = None) -> bool:
        value = rate.get(key, default)
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0

    if name in ("exponential_decay", "inverse_time_decay", "cosine_decay_restarts") and zero("initial_learning_rate"):
        return f"{name} with initial_learning_rate 0 is zero at every step"
    if name == "cosine_decay" and zero("initial_learning_rate") and (zero("warmup_target", 0) or zero("warmup_steps", 0) or rate.get("warmup_target") is None):
        return "cosine_decay with initial_learning_rate 0 (and no warm-up to a warmup_target > 0) is zero at every step"
    if name == "polynomial_decay" and zero("initial_learning_rate") and zero("end_learning_rate", 0.0001):
        return "polynomial_decay from initial_learning_rate 0 to end_learning_rate 0 is zero at every step"
    values = rate.get("values")
    if name == "piecewise_constant_decay" and isinstance(values, list) and values and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0 for v in values
    ):
        return "piecewise_constant_decay with every value 0 is zero at every step"
    return None


def check_sample_weights(weights: Any, path: str, key: str = "train.sample_weights") -> None:
    """The training examples' weights (after ``data.limit`` and ``data.validation``): finite, >= 0, and not all zero.

    All-zero weights make every batch's loss 0.0: the run would go through its epochs, change no
    weight and say ``completed``.
    """
    import numpy as np

    from trainer.errors import DataError

    values = np.asarray(weights)
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise DataError(f"{key}: {path} holds {values.dtype} weights; every weight must be a real number >= 0.")
    bad = []
    if np.isnan(values).any():
        bad.append(f"{int(np.isnan(values).sum())} NaN")
    if np.isinf(values).any():
        bad.append(f"{int(np.isinf(values).sum())} infinite")
    negative = values < 0
    if negative.any():
        bad.append(f"{int(negative.sum())} negative (the smallest {float(values[negative].min()):g})")
    if bad:
        raise DataError(f"{key}: {path} holds {', '.join(bad)} weight(s); every weight must be a finite number >= 0.")
    if len(values) and not values.any():
        raise DataError(
            f"{key}: {path} gives all {len(values):,} training examples weight 0, so the loss is 0 in every batch and "
            "nothing would train; every weight must be >= 0 and at least one > 0."
        )


def check_class_weights(class_weight: dict[int, float] | None, labels: Any, key: str = "train.class_weight") -> None:
    """Refuse class weights under which every training example weighs 0 (the classes present all weigh 0)."""
    import numpy as np

    if not class_weight or len(labels) == 0:
        return
    present = sorted(int(c) for c in np.unique(np.asarray(labels)))
    if all(class_weight.get(c, 1.0) == 0 for c in present):
        shown = ", ".join(map(str, present[:10])) + (" ..." if len(present) > 10 else "")
        raise ConfigError(
            f"{key}: every class of the training data ({shown}) has weight 0, so the loss is 0 in every batch and nothing "
            "would train; give at least one of them a weight > 0."
        )


def check_updates(model: Any, config: Config, total_steps: int | None) -> None:
    """The model has weights to train, and ``gradient_accumulation_steps`` reaches an update within the run.

    ``total_steps``: the optimizer steps the run takes (None when unknown: nothing is checked then).
    """
    if not list(getattr(model, "trainable_weights", [None])):
        raise ConfigError(
            f"model.type {config.model.type}: the built model has no trainable weights (every layer is frozen), so "
            "nothing would train; unfreeze a layer (e.g. model.trainable_backbone) or train another model."
        )
    accumulate = config.optimizer.params.get("gradient_accumulation_steps")
    if total_steps and isinstance(accumulate, int) and not isinstance(accumulate, bool) and accumulate > total_steps:
        raise ConfigError(
            f"optimizer.gradient_accumulation_steps: {accumulate} batches per update, but the run takes {total_steps:,} "
            f"steps in all (train.epochs x steps per epoch), so the weights would never be updated; use at most "
            f"{total_steps}, or train longer."
        )


def never_applies_notices(config: Config) -> list[str]:
    """Settings that are accepted but cannot act within this run's epochs: said once, as notices (the run still trains).

    ``early_stopping`` / ``reduce_lr_on_plateau`` act after ``patience`` epochs without improvement
    counted from the first epoch, which always improves: with E epochs at most E - 1 can follow it.
    ``early_stopping`` does nothing before ``start_from_epoch``. A ``data.augment`` section with
    nothing switched on changes no image.
    """
    fine_tune = getattr(config.model, "fine_tune", None)
    epochs = config.train.epochs + (fine_tune.epochs if fine_tune is not None else 0) - config.train.initial_epoch
    notices = []
    for index, spec in enumerate(config.callbacks):
        params = spec.params
        if spec.name not in ("early_stopping", "reduce_lr_on_plateau"):
            continue
        patience, start = params.get("patience", 0), params.get("start_from_epoch", 0)
        acts = "stop the run" if spec.name == "early_stopping" else "lower the learning rate"
        if isinstance(start, int) and not isinstance(start, bool) and start >= epochs + config.train.initial_epoch and spec.name == "early_stopping":
            notices.append(
                f"callbacks.{index}: early_stopping start_from_epoch {start} is not before the run's last epoch "
                f"({epochs + config.train.initial_epoch}), so it never acts in this run."
            )
        elif isinstance(patience, int) and not isinstance(patience, bool) and patience >= epochs:
            notices.append(
                f"callbacks.{index}: {spec.name} patience {patience} needs {patience} epochs without improvement after the "
                f"first, but this run trains {epochs}, so it can never {acts}."
            )
    augment = config.data.augment
    if augment is not None and not augment.active:
        notices.append("data.augment: nothing is switched on (every setting is off or 0), so no image is changed.")
    return notices


def check_sweep(config: Any, file: str | Path | None = None) -> None:
    """Refuse a ``sweep.space`` whose keys or values the schema would refuse in a trial; every problem at once.

    Each bound and each choice is applied to the config as the trial's ``--set`` override would be
    and validated. ``file``: the YAML file, for line numbers in the messages.
    """
    from trainer.config.loading import load_config, read_yaml
    from trainer.config.sweep import override_text, sweep_on_test_message, validates_on_test

    sweep = config.sweep
    if sweep is None:
        return
    marks: dict[Any, int] = {}
    if file is not None and Path(file).is_file():
        marks = read_yaml(Path(file))[1].marks

    def where(key: str) -> str:
        line = marks.get(("sweep", "space", key)) or marks.get(("sweep", "space")) or marks.get(("sweep",))
        return f"{file}:{line}: " if file and line else f"{file}: " if file else ""

    problems: list[str] = []
    metric = sweep.metric_for(config)
    if metric.startswith("val_") and config.data.validation == "none":
        line = marks.get(("sweep", "metric"))
        problems.append(
            f"{f'{file}:{line}: ' if file and line else where('')}sweep.metric: {metric!r} needs a validation split, "
            "but data.validation is none; set data.validation: 0.1 (held out of the training data) or use a training metric (accuracy, loss)"
        )
    if metric.startswith("val_") and validates_on_test(config):
        raise ConfigError(sweep_on_test_message(config, metric, marks.get(("sweep", "metric")) or marks.get(("data",)), file))
    base = {k: v for k, v in config.to_dict().items() if k != "sweep"}
    for key, space in sweep.space.items():
        for value in space.candidate_values():
            text = override_text(key, value)
            try:
                load_config(None, [text], base=base)
            except ConfigError as exc:
                details = [_without_source(problem, text) for problem in exc.problems] or [exc.message]
                problems.append(f"{where(key)}sweep.space.{key}: the value {value!r} is refused: {'; '.join(details)}")
    if problems:
        count = len(problems)
        raise ConfigError(f"{file or 'config'}: {count} problem{'s' if count > 1 else ''} in sweep.space:", problems=problems)


def _without_source(problem: str, text: str) -> str:
    prefix = f"--set {text}: "
    return problem[len(prefix):] if problem.startswith(prefix) else problem
