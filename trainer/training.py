"""Orchestrates one training run: checks -> device -> data -> model -> fit -> run directory.

Returns a ``RunResult``; all display goes through the ``reporter`` the caller passes in.
"""
from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checks import Plan, plan_run
from .config import Config
from .errors import RunFailedError, RunInterrupted
from .rundir import (
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

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__}


def summarize(model) -> str:
    """``mlp: 55,050 parameters (55,050 trainable)``."""
    total = model.count_params()
    trainable = sum(int(math.prod(w.shape)) for w in model.trainable_weights)
    return f"{model.name}: {total:,} parameters ({trainable:,} trainable)"


def model_summary_text(model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line), line_length=100)
    return "\n".join(lines)


def compile_model(model, config: Config, plan: Plan) -> None:
    """Compile with the configured loss, optimizer and metrics (accuracy always included)."""
    from .losses import build_loss
    from .metrics import build_metrics
    from .optimizers import build_optimizer

    specs = list(config.metrics)
    if not any(s.name in ("accuracy", "acc") for s in specs):
        from .config import NamedSpec

        specs.append(NamedSpec(name="accuracy"))
    model.compile(
        optimizer=build_optimizer(config.optimizer.name, config.optimizer.params),
        loss=build_loss(plan.loss_name, plan.loss_params),
        metrics=build_metrics(specs, plan.encoding),
    )


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


def run_training(config: Config, run_dir: Path | None, *, reporter: Any = None, dry_run: bool = False) -> RunResult:
    """Train the model ``config`` describes and write the run directory (nothing is written for a dry run)."""
    reporter = reporter or NullReporter()
    started = time.perf_counter()
    plan = plan_run(config)
    for text in plan.notices:
        reporter.notice(text)

    import keras

    from .data.loaders import load_data
    from .data.pipeline import make_dataset
    from .device import configure_device
    from .models import build_model

    device = configure_device(config.device, config.train.mixed_precision)
    keras.utils.set_random_seed(config.seed)
    data = load_data(config.data, seed=config.seed)
    model = build_model(config.model, data.input_shape, data.num_classes)
    compile_model(model, config, plan)
    summary = summarize(model)
    sizes = data.sizes()
    reporter.header(
        [
            ("dataset", f"{data.dataset} from {data.source}"),
            ("examples", f"train {sizes['train']:,}  validation {sizes['validation']:,}  test {sizes['test']:,}"),
            ("model", summary),
            ("labels", f"{plan.encoding}, {data.num_classes} classes"),
            ("device", device.description),
            ("run directory", str(run_dir) if run_dir and not dry_run else "(dry run: nothing written)"),
        ]
    )
    result = RunResult("dry-run", None if dry_run else run_dir, plan, model_summary_text(model))
    if dry_run:
        return result
    assert run_dir is not None

    def dataset(x, y, shuffle=False):
        return make_dataset(
            x, y, batch_size=config.train.batch_size, encoding=plan.encoding, num_classes=data.num_classes,
            shuffle=shuffle, seed=config.seed,
        )

    train_ds = dataset(data.x_train, data.y_train, shuffle=config.train.shuffle)
    val_ds = dataset(data.x_val, data.y_val) if data.x_val is not None else None
    test_ds = dataset(data.x_test, data.y_test)

    create_run_dir(run_dir)
    atomic_write_text(run_dir / CONFIG_FILE, config.to_yaml())
    manifest = {
        "dataset": data.dataset,
        "num_classes": data.num_classes,
        "class_names": data.class_names,
        "input_shape": list(data.input_shape),
        "label_encoding": plan.encoding,
        "loss": {"name": plan.loss_name, **plan.loss_params},
        "model_output": config.model.output,
    }
    atomic_write_json(run_dir / MANIFEST_FILE, manifest)

    from .callbacks import build_callbacks

    rows: list[dict[str, Any]] = []
    recorder = _epoch_recorder(HistoryWriter(run_dir / HISTORY_FILE), reporter, rows, sizes["train"])
    callbacks = [recorder, *build_callbacks(config.callbacks, run_dir)]

    base = {"seed": config.seed, "device": device.to_dict(), "versions": versions(), "run_dir": str(run_dir)}

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

    from .features import CachedFeatureTraining, uses_cached_features

    cached = CachedFeatureTraining(model, data, run_dir, reporter, dataset) if uses_cached_features(config) else None
    try:
        if cached is not None:
            reporter.notice("the backbone is frozen: its features are computed once per split and only the head trains (train.cache_features).")
            cached.fit(lambda head: compile_model(head, config, plan), epochs=config.train.epochs, callbacks=callbacks, shuffle=config.train.shuffle)
        else:
            model.fit(train_ds, validation_data=val_ds, epochs=config.train.epochs, callbacks=callbacks, verbose=0, shuffle=False)
    except KeyboardInterrupt:
        reporter.close()
        write_metrics("interrupted", None)
        raise RunInterrupted(f"interrupted after {len(rows)} completed epoch(s); the run directory is {run_dir}") from None
    finally:
        reporter.close()

    final_loss = rows[-1].get("loss") if rows else None
    if final_loss is not None and not math.isfinite(final_loss):
        write_metrics("failed", None, f"the training loss became {final_loss}")
        raise RunFailedError(f"the training loss became {final_loss}; see {run_dir / METRICS_FILE}")

    if cached is not None:
        test = cached.evaluate_test()
        cached.cleanup()
    else:
        test = {k: float(v) for k, v in model.evaluate(test_ds, verbose=0, return_dict=True).items()}
    with atomic_path(run_dir / MODEL_FILE) as tmp:
        model.save(tmp)
    result.metrics = write_metrics("completed", test)
    result.status = "completed"
    result.history = rows
    return result
