"""Compiling a model as its config says: loss, optimizer, metrics, the ``compile`` section (Keras lazily).

Used by the run and by ``load_run`` (a model saved without its compile state is compiled as training did).
"""
from __future__ import annotations

import math
import platform
from typing import Any

from trainer.config import Config
from trainer.config.checks import Plan


def versions() -> dict[str, str]:
    """Python's, Keras's and the backend's versions (TensorFlow's only where it is loaded: other backends run without it)."""
    import sys

    import keras

    found = {"python": platform.python_version(), "keras": keras.__version__}
    for name in ("tensorflow", "jax", "torch"):
        module = sys.modules.get(name)
        if module is not None and (name == keras.backend.backend() or name == "tensorflow"):
            found[name] = str(getattr(module, "__version__", "?"))
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

    if steps_per_epoch:  # about to train (a run, a fine-tune phase, lr-find): something must be able to change
        from trainer.config.checks import check_updates

        check_updates(model, config, run_steps(config, steps_per_epoch))
    specs = list(config.metrics)
    if not any(s.name in ("accuracy", "acc") for s in specs):
        from trainer.config.schema import NamedSpec

        specs.append(NamedSpec(name="accuracy"))
    records: list[dict[str, Any]] = []
    model.compile(
        optimizer=build_optimizer(config.optimizer.name, config.optimizer.params, model=model, total_steps=run_steps(config, steps_per_epoch)),
        loss=build_loss(plan.loss_name, plan.loss_params, config.config_dir, records),
        metrics=build_metrics(specs, plan.encoding, config.config_dir, records),
        **compile_kwargs(config, plan, records, steps_per_epoch),
    )
    return records


def run_steps(config: Config, steps_per_epoch: int | None) -> int | None:
    """The optimizer steps of the run (what ``one_cycle``/``warmup_cosine``/``warmup_linear`` span); None when unknown.

    Counted from ``train.initial_epoch``: the optimizer's iteration count starts at 0 there. The
    fine-tune phase gets a fresh optimizer with ``fine_tune.learning_rate``, a number.
    """
    if not steps_per_epoch:
        return None
    return max(1, (config.train.epochs - config.train.initial_epoch) * steps_per_epoch)


# Batch-level progress and the NaN guard see every Nth batch; about this many updates per epoch.
UPDATES_PER_EPOCH = 20
MAX_STEPS_PER_EXECUTION = 200


def resolve_steps_per_execution(config: Config, steps_per_epoch: int | None, backend: str | None = None) -> int:
    """``compile.steps_per_execution: auto``: several training steps per call of the compiled step function.

    On small models most of a step's time is Python and dispatch overhead, paid once per call;
    running ~1/20 of an epoch per call removes it without changing the math. Per-batch
    callbacks of the user's own, eager runs and unknown epoch lengths keep one step per call.
    Never more than ``backend`` (default: Keras's) runs per call: 1 on PyTorch. An explicit value
    above that is refused before a run starts (``trainer.runtime.distribute.check_backend_settings``);
    here it is only met when a run trained on another backend is evaluated, which it does not change.
    """
    from trainer.runtime.distribute import steps_per_execution_limit

    if backend is None:
        import keras

        backend = keras.backend.backend()
    limit = steps_per_execution_limit(backend) or MAX_STEPS_PER_EXECUTION
    setting = config.compile.steps_per_execution
    if setting != "auto":
        return int(setting) if steps_per_execution_limit(backend) is None else min(int(setting), limit)
    custom_callbacks = any(":" in spec.name for spec in config.callbacks)
    if config.compile.run_eagerly or custom_callbacks or not steps_per_epoch:
        return 1
    chosen = max(1, min(limit, steps_per_epoch // UPDATES_PER_EPOCH))
    if config.train.steps_per_epoch:  # an endless stream: Keras reads whole calls, so a divisor keeps each epoch to its own batches
        chosen = max(d for d in range(1, chosen + 1) if steps_per_epoch % d == 0)
    return chosen


def describe_steps_per_execution(config: Config, chosen: int, backend: str) -> str:
    """The header's ``steps per call``: ``7 (auto)``, ``1 (auto: the PyTorch backend runs one step per call)``, ``4``."""
    from trainer.runtime.devices import BACKEND_NAMES
    from trainer.runtime.distribute import steps_per_execution_limit

    if config.compile.steps_per_execution != "auto":
        return str(chosen)
    limit = steps_per_execution_limit(backend)
    if limit is not None:
        return f"{chosen} (auto: the {BACKEND_NAMES[backend]} backend runs at most {limit} per call)"
    return f"{chosen} (auto)"


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
