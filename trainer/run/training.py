"""Orchestrates one training run: checks -> device -> data -> model -> fit -> run directory.

Returns a ``RunResult``; all display goes through the ``reporter`` the caller passes in.
"""
from __future__ import annotations

import atexit
import contextlib
import gc
import math
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.run.checkpoint import NonFiniteLoss, ResumeState, RunLock, checkpointer, loss_guard, truncate_history
from trainer.config.checks import Plan, plan_run
from trainer.config.schema import Config
from trainer.errors import RunFailedError, RunInterrupted
from trainer.run.rundir import (
    CONFIG_FILE,
    HISTORY_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    MODEL_FILE,
    HistoryWriter,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    create_run_dir,
)


class NullReporter:
    """A reporter that shows nothing (library use, tests)."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


@dataclass
class RunResult:
    status: str
    run_dir: Path | None
    plan: Plan
    model_summary: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    found = {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__}
    if keras.backend.backend() == "jax":
        import jax

        found["jax"] = jax.__version__
    return found


def summarize(model) -> str:
    """``mlp: 55,050 parameters (55,050 trainable)``."""
    total = model.count_params()
    trainable = sum(int(math.prod(w.shape)) for w in model.trainable_weights)
    return f"{model.name}: {total:,} parameters ({trainable:,} trainable)"


def model_summary_text(model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line), line_length=100)
    return "\n".join(lines)


def compile_model(model, config: Config, plan: Plan, steps_per_epoch: int | None = None) -> list[dict[str, Any]]:
    """Compile with the configured loss, optimizer and metrics (accuracy always included).

    Returns the user code (``module:attr``) the compiled model holds, for ``manifest.json``.
    """
    from trainer.catalogue.losses import build_loss
    from trainer.catalogue.metrics import build_metrics
    from trainer.catalogue.optimizers import build_optimizer

    specs = list(config.metrics)
    if not any(s.name in ("accuracy", "acc") for s in specs):
        from trainer.config.schema import NamedSpec

        specs.append(NamedSpec(name="accuracy"))
    records: list[dict[str, Any]] = []
    model.compile(
        optimizer=build_optimizer(config.optimizer.name, config.optimizer.params),
        loss=build_loss(plan.loss_name, plan.loss_params, config.config_dir, records),
        metrics=build_metrics(specs, plan.encoding, config.config_dir, records),
        **compile_kwargs(config, plan, records, steps_per_epoch),
    )
    return records


# Batch-level progress and the NaN guard see every Nth batch; about this many updates per epoch.
UPDATES_PER_EPOCH = 20
MAX_STEPS_PER_EXECUTION = 200


def resolve_steps_per_execution(config: Config, steps_per_epoch: int | None) -> int:
    """``compile.steps_per_execution: auto``: several training steps per call of the compiled step function.

    On small models most of a step's time is Python and dispatch overhead, paid once per call;
    running ~1/20 of an epoch per call removes it without changing the math. Per-batch
    callbacks of the user's own, eager runs and unknown epoch lengths keep one step per call.
    """
    setting = config.compile.steps_per_execution
    if setting != "auto":
        return int(setting)
    custom_callbacks = any(":" in spec.name for spec in config.callbacks)
    if config.compile.run_eagerly or custom_callbacks or not steps_per_epoch:
        return 1
    return max(1, min(MAX_STEPS_PER_EXECUTION, steps_per_epoch // UPDATES_PER_EPOCH))


def compile_kwargs(config: Config, plan: Plan, records: list[dict[str, Any]], steps_per_epoch: int | None = None) -> dict[str, Any]:
    """The ``compile`` section as ``model.compile`` keyword arguments (weighted metrics are named ``weighted_<name>``)."""
    from trainer.catalogue.metrics import build_metrics

    section = config.compile
    return {
        "loss_weights": section.loss_weights,
        "weighted_metrics": build_metrics(
            section.weighted_metrics, plan.encoding, config.config_dir, records, prefix="weighted_", key_prefix="compile.weighted_metrics"
        ) or None,
        "run_eagerly": section.run_eagerly,
        "steps_per_execution": resolve_steps_per_execution(config, steps_per_epoch),
        "jit_compile": section.jit_compile,
    }


def fit_kwargs(config: Config, y_train) -> dict[str, Any]:
    """The ``train`` section's ``model.fit`` settings beyond epochs and batches (``class_weight: balanced`` computed here)."""
    import numpy as np

    from trainer.errors import ConfigError

    train = config.train
    class_weight = train.class_weight
    if class_weight == "balanced":
        counts = np.bincount(y_train)
        class_weight = {c: float(len(y_train) / (len(counts) * n)) for c, n in enumerate(counts) if n > 0}
    elif class_weight is not None:
        from trainer.data.catalog import DATASETS

        num_classes = DATASETS[config.data.dataset].num_classes
        outside = [c for c in class_weight if not 0 <= c < num_classes]
        if outside:
            raise ConfigError(f"train.class_weight: class ids {outside} are outside 0..{num_classes - 1} of {config.data.dataset}")
        class_weight = {c: float(class_weight.get(c, 1.0)) for c in range(num_classes)}  # unnamed classes weigh 1
    return {
        "class_weight": class_weight,
        "initial_epoch": train.initial_epoch,
        "steps_per_epoch": train.steps_per_epoch,
        "validation_steps": train.validation_steps,
    }


def load_sample_weights(config: Config, train_examples: int, validation_examples: int):
    """``train.sample_weights``: a .npy with one weight per training example (as read, after ``data.limit``).

    When ``data.validation`` is a fraction, the weights of the examples split off for validation are dropped.
    """
    import numpy as np

    from trainer.errors import DataError

    path = config.train.sample_weights
    if path is None:
        return None
    try:
        weights = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"train.sample_weights: cannot read {path} as a .npy array: {exc}") from None
    weights = np.asarray(weights)
    if config.data.limit is not None and weights.ndim == 1 and len(weights) > config.data.limit:
        weights = weights[: config.data.limit]
    expected = train_examples + (validation_examples if isinstance(config.data.validation, float) else 0)
    if weights.ndim != 1 or len(weights) != expected or not np.issubdtype(weights.dtype, np.number):
        raise DataError(
            f"train.sample_weights: {path} holds a {weights.dtype} array of shape {weights.shape}; "
            f"expected one number per training example, shape ({expected},)."
        )
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise DataError(f"train.sample_weights: {path} has negative, NaN or infinite weights; all must be finite and >= 0.")
    return weights[:train_examples].astype("float32")


def _epoch_recorder(history: HistoryWriter | None, reporter: Any, rows: list[dict[str, Any]], train_examples: int):
    import keras

    class EpochRecorder(keras.callbacks.Callback):
        """Appends a history row per epoch (with learning rate, time, throughput) and feeds the reporter."""

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()
            reporter.epoch_start(epoch + 1, self.params.get("epochs"), self.params.get("steps"))

        def on_train_batch_end(self, batch, logs=None):
            reporter.batch_end(batch + 1, logs or {})

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self._start
            logs = dict(logs or {})
            row: dict[str, Any] = {"epoch": epoch + 1}
            keys = [k for k in logs if not k.startswith("val_") and k != "learning_rate"]
            keys += [k for k in logs if k.startswith("val_")]
            for key in keys:
                row[key] = float(logs[key])
            row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            row["epoch_seconds"] = round(seconds, 4)
            row["examples_per_second"] = round(train_examples / seconds, 1) if seconds > 0 else None
            rows.append(row)
            if history is not None:
                history.append(row)
            reporter.epoch_end(epoch + 1, row)

    return EpochRecorder()


def run_training(
    config: Config, run_dir: Path | None, *, reporter: Any = None, dry_run: bool = False, resume: ResumeState | None = None,
    distribute: Any = None,
) -> RunResult:
    """Train the model ``config`` describes and write the run directory (nothing is written for a dry run).

    With ``resume`` (from ``checkpoint.check_resume``) training continues in ``run_dir`` from its checkpoint.
    ``distribute`` is a resolved ``distribute.DistributeSetup`` (default: ``config.distribute`` resolved
    from this process's environment); only process 0 writes ``run_dir``.
    """
    reporter = reporter or NullReporter()
    started = time.perf_counter()
    plan = plan_run(config)
    for text in plan.notices:
        reporter.notice(text)

    import keras

    from trainer.data.loaders import load_data
    from trainer.data.pipeline import make_dataset
    from trainer.models import build_model

    from trainer.catalogue.overview import check_catalogue

    device, distribution = start_distribution_for(config, distribute)  # before any computation (JAX joins its peers here)
    check_catalogue(config, plan)  # names, parameters and user code, before any data is read
    for text in distribution.setup.notices + distribution.notices:
        reporter.notice(text)
    keras.utils.set_random_seed(config.seed)
    data = load_data(config.data, seed=config.seed)
    for text in data.notices:
        reporter.notice(text)
    steps_per_epoch = config.train.steps_per_epoch or math.ceil(len(data.x_train) / config.train.batch_size)
    with distribution.scope():
        model = build_model(config.model, data.input_shape, data.num_classes)
        custom_objects = compile_model(model, config, plan, steps_per_epoch)
    sample_weights = load_sample_weights(config, len(data.x_train), 0 if data.x_val is None else len(data.x_val))
    fit_settings = fit_kwargs(config, data.y_train)
    summary = summarize(model)
    sizes = data.sizes()
    reporter.header(
        [
            ("dataset", f"{data.dataset} from {data.source}"),
            ("examples", f"train {sizes['train']:,}  validation {sizes['validation']:,}  test {sizes['test']:,}"),
            ("model", summary),
            ("labels", f"{plan.encoding}, {data.num_classes} classes"),
            ("device", device.description),
            *((("distribute", distribution.summary()),) if distribution.setup.strategy != "none" else ()),
            ("run directory", str(run_dir) if run_dir and not dry_run else "(dry run: nothing written)"),
        ]
    )
    result = RunResult("dry-run", None if dry_run else run_dir, plan, model_summary_text(model) if dry_run else "")  # rendering costs ~0.1 s
    if dry_run:
        return result
    assert run_dir is not None
    import tensorflow as tf

    if not distribution.is_chief:  # the one place that decides who writes: the others write to a private scratch folder
        run_dir = Path(tempfile.mkdtemp(prefix=f"trainer-process{distribution.setup.process_id}-"))
        atexit.register(shutil.rmtree, run_dir, True)
        result.run_dir = None

    epoch_variable = tf.Variable(0, dtype=tf.int64, trainable=False)  # the shuffle order of epoch N depends on N only

    def dataset(x, y, shuffle=False, weights=None):
        return make_dataset(
            x, y, batch_size=config.train.batch_size, encoding=plan.encoding, num_classes=data.num_classes,
            shuffle=shuffle, seed=config.seed, weights=weights, epoch_variable=epoch_variable,
            **({"drop_remainder": True} if distribution.full_batches else {}),
        )

    train_ds = dataset(data.x_train, data.y_train, shuffle=config.train.shuffle, weights=sample_weights)
    if config.train.steps_per_epoch is not None:
        train_ds = train_ds.repeat()  # epochs of steps_per_epoch batches may run past the end of the data
    val_ds = dataset(data.x_val, data.y_val) if data.x_val is not None else None
    test_ds = dataset(data.x_test, data.y_test)

    if resume is None and distribution.is_chief:
        create_run_dir(run_dir)
    lock = RunLock(run_dir).acquire()  # noqa: F841 - held until the process ends
    atomic_write_text(run_dir / CONFIG_FILE, config.to_yaml())
    manifest = {
        "dataset": data.dataset,
        "num_classes": data.num_classes,
        "class_names": data.class_names,
        "input_shape": list(data.input_shape),
        "label_encoding": plan.encoding,
        "loss": {"name": plan.loss_name, **plan.loss_params},
        "model_output": config.model.output,
        "custom_objects": custom_objects,
    }
    atomic_write_json(run_dir / MANIFEST_FILE, manifest)

    from trainer.catalogue.callbacks import build_callbacks

    rows: list[dict[str, Any]] = truncate_history(run_dir / HISTORY_FILE, resume.epoch) if resume else []
    recorder = _epoch_recorder(HistoryWriter(run_dir / HISTORY_FILE), reporter, rows, sizes["train"])
    user_callbacks = build_callbacks(config.callbacks, run_dir, config.config_dir)
    callbacks = [recorder, loss_guard(), *user_callbacks, checkpointer(run_dir, user_callbacks, epoch_variable, resume)]

    base = {
        "seed": config.seed, "device": device.to_dict(), "distribute": distribution.to_dict(), "versions": versions(), "run_dir": str(run_dir),
    }

    def write_metrics(status: str, test: dict[str, Any] | None, reason: str | None = None) -> dict[str, Any]:
        last = rows[-1] if rows else {}
        metrics = {
            "status": status,
            **({"reason": reason} if reason else {}),
            "train": {k: v for k, v in last.items() if k not in ("epoch",) and not k.startswith("val_")} or None,
            "validation": {k[4:]: v for k, v in last.items() if k.startswith("val_")} or None,
            "test": test,
            "epochs_completed": len(rows),
            "wall_seconds": round(time.perf_counter() - started, 3),
            **base,
        }
        atomic_write_json(run_dir / METRICS_FILE, metrics)
        return metrics

    from trainer.run.features import CachedFeatureTraining, uses_cached_features

    cached = None
    if uses_cached_features(config) and distribution.setup.strategy == "none":  # the cache is one process's, on one device
        cached = CachedFeatureTraining(model, data, run_dir, reporter, dataset)
    # TensorFlow, Keras and the traced functions are millions of long-lived Python objects; a full
    # garbage collection scans them all (0.3-0.6 s each, several per run). Freezing them excludes
    # them from later scans; new garbage is still collected as usual.
    gc.freeze()
    try:
        fit_settings = {**fit_settings, **({"initial_epoch": resume.epoch} if resume else {})}
        if cached is not None:
            reporter.notice("the backbone is frozen: its features are computed once per split and only the head trains (train.cache_features).")
            cached.fit(
                lambda head: compile_model(head, config, plan, steps_per_epoch), epochs=config.train.epochs, callbacks=callbacks,
                shuffle=config.train.shuffle, weights=sample_weights, xla=config.compile.jit_compile is not False,
                **fit_settings,
            )
        else:
            model.fit(
                train_ds, validation_data=val_ds, epochs=config.train.epochs, callbacks=callbacks, verbose=0, shuffle=False,
                **fit_settings,
            )
    except NonFiniteLoss as exc:
        write_metrics("failed", None, exc.reason)
        kept = f"the checkpoint of epoch {len(rows)} is kept" if rows else "no epoch had completed, so there is no checkpoint"
        raise RunFailedError(f"{exc.reason}; the run stopped and {kept}. See {run_dir / METRICS_FILE}") from None
    except tf.errors.ResourceExhaustedError as exc:
        write_metrics("failed", None, f"out of memory: {exc.message}")
        raise RunFailedError(f"out of memory during training ({exc.message}); try a smaller train.batch_size or model.") from None
    except RunFailedError as exc:
        with contextlib.suppress(OSError):
            write_metrics("failed", None, exc.message)
        raise
    except OSError as exc:
        raise RunFailedError(f"cannot write to the run directory {run_dir}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        write_metrics("interrupted", None)
        raise RunInterrupted(f"interrupted after {len(rows)} completed epoch(s); the run directory is {run_dir}") from None
    finally:
        reporter.close()

    gc.freeze()  # the same for what training built
    if cached is not None:
        test = cached.evaluate_test()
        cached.cleanup()
    else:
        test = {k: float(v) for k, v in model.evaluate(test_ds, verbose=0, return_dict=True).items()}
    try:
        with atomic_path(run_dir / MODEL_FILE) as tmp:
            model.save(tmp)
        result.metrics = write_metrics("completed", test)
    except OSError as exc:
        raise RunFailedError(f"cannot write {run_dir / MODEL_FILE} or {METRICS_FILE}: {exc.strerror or exc}; nothing half-written was left.") from None
    from trainer.inference.plots import CURVES_FILE, write_curves

    if distribution.is_chief:
        write_curves(rows, run_dir / CURVES_FILE)
    result.status = "completed"
    result.history = rows
    return result


def start_distribution_for(config: Config, setup: Any) -> tuple[Any, Any]:
    """The device and the started ``config.distribute`` (``setup``: already resolved by the CLI) on Keras's backend.

    TensorFlow: devices are configured before the strategy lists them. JAX: the distributed
    runtime starts before JAX's first use, then JAX describes its devices.
    """
    import keras

    from trainer.runtime.devices import configure_device
    from trainer.runtime.distribute import check_backend_installed, resolve_distribute
    from trainer.runtime.strategy import configure_jax_device, start_distribution

    backend = keras.backend.backend()
    if setup is None:
        check_backend_installed(backend)
        setup = resolve_distribute(config.distribute, os.environ, backend)
    if backend == "jax":
        distribution = start_distribution(setup, os.environ)
        device = configure_jax_device(config.device, config.train.mixed_precision)
    else:
        device = configure_device(config.device, config.train.mixed_precision)
        distribution = start_distribution(setup, os.environ)
    distribution.check_batch_size(config.train.batch_size)
    return device, distribution
