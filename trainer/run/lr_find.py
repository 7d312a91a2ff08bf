"""The learning-rate range test (``trainer lr-find``): train briefly while the rate rises, watch the loss.

The model the config describes is built and compiled exactly as ``trainer run`` does it (the
``Training`` steps: runtime, data, model), then trained one batch per step while the learning rate
rises exponentially from ``start`` to ``end`` over ``steps`` steps. The loss of each batch is
smoothed (a bias-corrected exponential average); the ramp stops early once that running average
passes ``DIVERGE_FACTOR`` times its best or a loss is NaN or infinite. A running average lags the
rising rate, so the curve recorded and read afterwards is averaged forwards and then backwards (no
lag) over the steps before the one that stopped the ramp (that step keeps its running average).
The suggestion is the rate where that curve falls fastest (steepest descent against log
rate), at or before its lowest point.

Results go into a folder of their own (``lr_find.json``, ``lr_find.png``), claimed under the output
rule (``trainer.outputs.claim_dir``) and removed again if the test fails or is interrupted. No run
directory is created, nothing is checkpointed and no weights file is written or changed: the
model trained here is thrown away. Nothing here prints; progress goes through run events.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from trainer.config import Config
from trainer.errors import BadInputError
from trainer.readers.lr_find_files import LR_FIND_FILE, LR_FIND_PLOT, MAX_RAMP_STEPS, MAX_RATE, MIN_RATE, LrFindRecord, finite_or_none

DEFAULT_START = 1e-7
DEFAULT_END = 10.0
DEFAULT_STEPS = 100
DIVERGE_FACTOR = 4.0  # stop once the smoothed loss is this many times its best


def check_ramp(start: float, end: float, steps: int) -> None:
    """Refuse a ramp that cannot be run (exit 2), before anything is loaded."""
    for name, value in (("--start", start), ("--end", end)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not MIN_RATE <= value <= MAX_RATE:
            raise BadInputError(f"{name}: {value!r} is not a learning rate; expected a number from {MIN_RATE:g} to {MAX_RATE:g}.")
    if not start < end:
        raise BadInputError(f"--start ({start:g}) must be below --end ({end:g}): the rate rises from --start to --end.")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_RAMP_STEPS:
        raise BadInputError(f"--steps: {steps!r}; expected a whole number of steps from 1 to {MAX_RAMP_STEPS}.")


def ramp(start: float, end: float, steps: int) -> np.ndarray:
    """``steps`` rates rising exponentially from ``start`` to ``end`` (both included)."""
    import numpy as np  # here: trainer.api imports this module's defaults, and `import trainer` stays free of NumPy

    if steps == 1:
        return np.array([float(start)])
    return float(start) * (float(end) / float(start)) ** (np.arange(steps) / (steps - 1))


def smoothing_for(steps: int) -> float:
    """The averaging factor beta: 0.98 (fastai's) for long ramps, shorter memory for short ones (1 - 5/steps, at least 0.5)."""
    return float(min(0.98, max(0.5, 1.0 - 5.0 / steps)))


def ramp_overrides(start: float) -> list[str]:
    """What the ramp changes in the config: a plain starting rate (set per step), one step per call, one device."""
    return [f"optimizer.learning_rate={float(start)!r}", "compile.steps_per_execution=1", "distribute.strategy=none"]


def smooth(losses: list[float], beta: float) -> list[float]:
    """Bias-corrected exponential average of ``losses`` (NaN once a loss is not finite)."""
    average, out = 0.0, []
    for count, loss in enumerate(losses, start=1):
        if not math.isfinite(loss) or not math.isfinite(average):
            average = math.nan
        else:
            average = beta * average + (1.0 - beta) * loss
        out.append(average / (1.0 - beta**count))
    return out


def smooth_both_ways(losses: list[float], beta: float) -> list[float]:
    """``smooth`` forwards, then backwards over that: a curve that does not lag the rate (NaN from the first non-finite loss on)."""
    finite = next((i for i, v in enumerate(losses) if not math.isfinite(v)), len(losses))
    backwards = smooth(smooth(list(losses[:finite]), beta)[::-1], beta)[::-1]
    return backwards + [math.nan] * (len(losses) - finite)


def suggest(rates: list[float], smoothed: list[float]) -> int | None:
    """The index of steepest descent of ``smoothed`` against log(rate), at or before its lowest point; None if it never falls."""
    import numpy as np

    finite = 0
    while finite < len(smoothed) and math.isfinite(smoothed[finite]):
        finite += 1
    if finite < 2:
        return None
    values = np.asarray(smoothed[:finite], dtype=np.float64)
    slopes = np.gradient(values, np.log(np.asarray(rates[:finite], dtype=np.float64)))
    lowest = int(np.argmin(values))
    index = int(np.argmin(slopes[: lowest + 1]))
    return index if slopes[index] < 0 else None


def set_text(config: Config, rate: float) -> str:
    """The ``--set`` that applies ``rate``: the peak of a schedule given as a mapping with ``peak``, else the rate itself."""
    current = config.optimizer.params.get("learning_rate")
    key = "optimizer.learning_rate.peak" if isinstance(current, dict) and "peak" in current else "optimizer.learning_rate"
    mantissa, _, exponent = f"{rate:.3g}".partition("e")
    mantissa += "" if "." in mantissa else ".0"  # YAML reads 3 and 3e+02 as whole numbers; 3.0 and 3.0e+02 are rates
    return f"{key}={mantissa}{'e' + exponent if exponent else ''}"


@dataclass
class LrFindResult:
    """What the range test found; ``record`` is ``lr_find.json``."""

    output_dir: Path
    record: LrFindRecord

    @property
    def suggested(self) -> float | None:
        return self.record.suggested_learning_rate

    @property
    def set(self) -> str | None:
        """``optimizer.learning_rate=...``: give it as ``--set`` to ``trainer run``."""
        return self.record.set

    def to_dict(self) -> dict[str, Any]:
        return self.record.model_dump(mode="json")


def claim_output(output: Path | None, config: Config, made: Any) -> Path:
    """The results folder: ``output`` (new or empty), else a fresh ``<output.dir>/<name>-lr-find-<stamp>[-N]``.

    The folder, and any folder above it created on the way, are tracked in ``made``: removed again if the test fails.
    """
    from trainer.outputs import claim_dir
    from trainer.paths import user_path
    from trainer.run.rundir import default_run_dir

    if output is not None:
        target, what = user_path(output, "--output"), "--output"
    else:
        base = default_run_dir(config.output.dir, f"{config.name}-lr-find")
        candidates = (base if n == 1 else base.with_name(f"{base.name}-{n}") for n in range(1, 1000))
        target = next((c for c in candidates if not c.exists() and not c.is_symlink()), None)
        if target is None:
            raise BadInputError(f"no free folder name beside {base}; choose --output DIR.")
        what = "lr-find output folder"
    missing = [p for p in (target, *target.parents) if not p.exists() and not p.is_symlink()][::-1]  # outermost first
    folder, created = claim_dir(target, what)
    for path in missing if created else ():
        made.track_dir(path)
    return folder


def numpy_batches(dataset: Any):
    """Endless NumPy batches of an endless dataset: a ``tf.data`` one (TensorFlow) or a ``keras.utils.PyDataset``."""
    import itertools

    if hasattr(dataset, "as_numpy_iterator"):
        return dataset.as_numpy_iterator()
    return (dataset[index] for index in itertools.count())


def run_ramp(training: Any, rates: np.ndarray, beta: float, events: Any) -> tuple[list[float], list[float], str]:
    """Train one batch per rate; (losses, smoothed losses, why it stopped)."""
    model = training.model
    class_weight = training.fit_settings.get("class_weight")
    batches = numpy_batches(training.train_dataset(repeat=True))  # numpy: the same loop on every Keras backend
    losses: list[float] = []
    smoothed: list[float] = []
    best = math.inf
    stopped = "completed"
    events.on_phase_start(f"lr-find {rates[0]:.2g} -> {rates[-1]:.2g}", len(rates))
    try:
        for step, rate in enumerate(rates, start=1):
            batch = next(batches)
            x, y = batch[0], batch[1]
            weights = batch[2] if len(batch) > 2 else None
            model.optimizer.learning_rate = float(rate)
            logs = model.train_on_batch(x, y, sample_weight=weights, class_weight=None if weights is not None else class_weight, return_dict=True)
            loss = float(logs["loss"])
            losses.append(loss)
            smoothed = smooth(losses, beta)
            events.on_progress(step, {"learning_rate": float(rate), "loss": loss})
            if not math.isfinite(loss):
                stopped = "not_finite"
                break
            best = min(best, smoothed[-1])
            if best > 0 and smoothed[-1] > DIVERGE_FACTOR * best:
                stopped = "diverged"
                break
    finally:
        events.on_phase_end()
    return losses, smoothed, stopped


def find_learning_rate(
    config: Config, plan: Any, *, start: float, end: float, steps: int, output: Path | None, events: Any, config_file: str | None = None,
) -> LrFindResult:
    """Run the range test as ``plan`` (a ``TrainingPlan`` of ``config`` with ``ramp_overrides``) says; write and return its results.

    ``config`` is the user's, unchanged: the suggested ``--set`` is phrased for it.
    """
    from trainer.inference.plots import write_lr_find_plot
    from trainer.outputs import Made
    from trainer.run.rundir import atomic_write_json
    from trainer.run.training import Training

    check_ramp(start, end, steps)
    rates = ramp(start, end, steps)
    beta = smoothing_for(steps)
    made = Made()
    with made.undone_on_error():
        folder = claim_output(output, config, made)
        training = Training(plan, events=events)
        training.start_devices()
        training.load_data()
        training.build_and_compile()
        losses, smoothed, stopped = run_ramp(training, rates, beta, events)
        tried = [float(r) for r in rates[: len(losses)]]
        # The running average lags the rising rate; the curve recorded is averaged both ways instead, over the steps
        # before the one that stopped the ramp (a diverged loss would pull the whole backward average up).
        kept = len(losses) if stopped == "completed" else len(losses) - 1
        smoothed = smooth_both_ways(losses[:kept], beta) + smoothed[kept:]
        index = suggest(tried[:kept], smoothed[:kept])
        suggested = tried[index] if index is not None else None
        record = LrFindRecord(
            config=config_file, start=float(start), end=float(end), steps=steps, steps_run=len(losses),
            batch_size=config.train.batch_size, smoothing=beta, stopped=stopped, rates=tried,
            losses=[finite_or_none(v) for v in losses], smoothed_losses=[finite_or_none(v) for v in smoothed],
            suggested_learning_rate=suggested, set=set_text(config, suggested) if suggested is not None else None,
        )
        atomic_write_json(made.track_file(folder / LR_FIND_FILE), record.model_dump(mode="json"))
        write_lr_find_plot(tried, losses, smoothed, suggested, made.track_file(folder / LR_FIND_PLOT))
    return LrFindResult(folder, record)
