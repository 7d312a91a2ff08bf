"""The Python API: what ``trainer``'s commands do, as functions (``from trainer import train``).

- ``load_config(path, overrides=())`` -> the validated ``Config``.
- ``train(config, *, overrides=(), run_dir=None, resume=False, events=(), callbacks=())`` -> ``RunResult``.
- ``evaluate(run_dir, split="test")`` -> the ``eval-<split>.json`` report as a dict.
- ``predict(run_dir, inputs, top_k=3)`` -> the records ``trainer predict --output x.json`` writes.
- ``load_run(run_dir, code_dirs=())`` -> ``LoadedRun`` (``model``, ``config``, ``manifest``, class names).
- ``export(run_dir, format, output=None)`` -> the ``export-<format>.json`` report as a dict (SavedModel, ONNX, LiteRT).
- ``lr_find(config, start=1e-7, end=10.0, steps=100, output=None)`` -> ``LrFindResult`` (the learning-rate range test).

Errors are ``trainer.errors.TrainerError`` subclasses, each with its ``exit_code``. Nothing here
prints (run events are the way to watch a run), calls ``sys.exit``, installs signal handlers or
changes ``os.environ``; the CLI does those. TensorFlow is imported only when a function needs it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from trainer.config import Config
from trainer.config import load_config as _load_config
from trainer.errors import BadInputError
from trainer.run.events import EventBus, RunEvents, RunResult

__all__ = ["load_config", "train", "evaluate", "predict", "export", "load_run", "lr_find", "RunEvents", "RunResult"]


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read and validate a YAML config; ``overrides`` are ``KEY=VALUE`` strings, as ``--set`` takes them."""
    return _load_config(path, list(overrides))


def _as_config(config: str | Path | Config, overrides: Sequence[str]) -> Config:
    if isinstance(config, Config):
        if not overrides:
            return config
        resolved = _load_config(None, list(overrides), base=config.to_dict())
        resolved._config_dir = config.config_dir
        return resolved
    if isinstance(config, (str, Path)):
        return _load_config(config, list(overrides))
    raise BadInputError(f"config: expected a path to a YAML file or a Config from trainer.load_config; got {type(config).__name__}.")


def train(
    config: str | Path | Config, *, overrides: Sequence[str] = (), run_dir: str | Path | None = None, resume: bool = False,
    events: Iterable[Any] = (), callbacks: Iterable[Any] = (), dry_run: bool = False, feature_cache: str | Path | None = None,
) -> RunResult:
    """Train the model ``config`` describes and write its run directory; returns how the run ended.

    ``run_dir`` None: a new ``<output.dir>/<name>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3`` when taken).
    ``resume``: continue ``run_dir`` from its last checkpoint. ``events``: run-event handlers
    (``trainer.RunEvents`` subclasses). ``callbacks``: extra Keras callbacks for ``fit``.
    ``feature_cache``: a folder that keeps a frozen backbone's features for later runs (keyed by
    the backbone's architecture and weights and the input pixels); a sweep's trials share one.
    A completed run returns status ``completed``; one stopped by a handler's ``StopRun`` returns
    its status (``pruned``, ...). NaN loss, out of memory and write errors raise
    ``RunFailedError``; Ctrl-C raises ``RunInterrupted``; bad input raises a ``BadInputError``.
    """
    return prepare_training(
        config, overrides=overrides, run_dir=run_dir, resume=resume, events=events, callbacks=callbacks, dry_run=dry_run,
        feature_cache=feature_cache,
    ).run()


def prepare_training(
    config: str | Path | Config, *, overrides: Sequence[str] = (), run_dir: str | Path | None = None, resume: bool = False,
    events: Iterable[Any] = (), callbacks: Iterable[Any] = (), dry_run: bool = False, runtime: Any = None,
    feature_cache: str | Path | None = None,
):
    """Everything ``train`` checks before TensorFlow starts; returns the ``Training`` whose ``run()`` trains.

    ``runtime``: a setup from ``trainer.runtime.prepare_runtime`` (the CLI makes it itself, so that
    it may set ``KERAS_BACKEND``); None resolves it here.
    """
    from trainer.config.checks import plan_run
    from trainer.paths import user_path
    from trainer.run.checkpoint import check_resume
    from trainer.run.rundir import check_new_run_dir, default_run_dir
    from trainer.run.training import Training
    from trainer.runtime import prepare_runtime

    bus = EventBus(events)
    loaded = _as_config(config, overrides)
    plan_run(loaded)  # a loss/label/model mismatch is refused before TensorFlow is imported
    setup = runtime if runtime is not None else prepare_runtime(loaded, resume=resume, on_notice=bus.on_notice)
    target = user_path(run_dir, "--run-dir") if run_dir is not None else None
    resume_state = None
    if resume:
        if target is None:
            raise BadInputError("--resume needs --run-dir DIR: the run directory to continue.")
        if dry_run:
            raise BadInputError("--resume and --dry-run cannot be combined.")
        resume_state = check_resume(target, loaded)
    elif target is not None and not dry_run and setup.is_chief:
        check_new_run_dir(target)  # created only once data and model are ready
    if loaded.tracking.mlflow is not None and not dry_run and setup.is_chief and not _has_mlflow_logger(bus.handlers):
        from trainer.integrations.mlflow import connect

        logger = connect(loaded)  # the URI is checked here, before any data is read
        bus.handlers.append(logger)
        bus.on_notice(f"tracking to MLflow: {logger.uri}, experiment {loaded.tracking.mlflow.experiment or loaded.name!r}")
    return Training(
        loaded, target or default_run_dir(loaded.output.dir, loaded.name), events=bus, setup=setup, resume=resume_state,
        callbacks=tuple(callbacks), dry_run=dry_run, unique_name=target is None,
        feature_cache=Path(feature_cache) if feature_cache is not None else None,
    )


def _has_mlflow_logger(handlers: list[Any]) -> bool:
    """A caller (a sweep) may pass its own ``MlflowLogger``; then none is added."""
    return any(type(handler).__name__ == "MlflowLogger" for handler in handlers)


def load_run(run_dir: str | Path, *, config: str | Path | None = None, overrides: Sequence[str] = (), code_dirs: Sequence[str | Path] = ()):
    """Open a finished run: ``.model`` (with its custom objects), ``.config``, ``.manifest``, ``.class_names``.

    ``run_dir`` may also be a model file, with ``config`` the YAML it was trained with. Custom code
    (``module:attr`` losses, metrics) is imported only from ``code_dirs`` and, when ``config`` is
    given, from its folder and the working directory: opening a run directory never runs code it names.
    """
    from trainer.inference.load import load_run as _load_run
    from trainer.runtime import choose_keras_backend

    choose_keras_backend()
    return _load_run(
        Path(run_dir), config_path=Path(config) if config is not None else None, overrides=list(overrides), code_dirs=[Path(d) for d in code_dirs]
    )


def evaluate(
    run_dir: str | Path, split: str = "test", *, config: str | Path | None = None, overrides: Sequence[str] = (), code_dirs: Sequence[str | Path] = (),
    tta: str | None = None,
) -> dict[str, Any]:
    """Measure a finished run on ``split``; the dict ``trainer eval`` writes to ``eval-<split>.json`` (nothing is written).

    ``tta``: ``none``, ``flip`` or ``flip_translate`` adds a ``tta`` entry (probabilities averaged
    over the views); None takes the run's ``evaluate.tta``.
    """
    from trainer.inference.evaluate import SPLITS, evaluate_run
    from trainer.errors import ConfigError

    if split not in SPLITS:
        raise ConfigError(f"split: unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if tta is not None:
        from trainer.config.evaluate import check_tta_mode

        check_tta_mode(tta, "tta")
    return evaluate_run(load_run(run_dir, config=config, overrides=overrides, code_dirs=code_dirs), split, tta).to_dict()


def predict(
    run_dir: str | Path, inputs: Any, top_k: int = 3, *, config: str | Path | None = None, code_dirs: Sequence[str | Path] = (),
    trust_export: bool = False, tta: str = "none",
) -> list[dict[str, Any]]:
    """Classify images with a finished run (or an export of it); the records ``trainer predict --output x.json`` writes.

    ``run_dir``: a run directory, a model file with ``config``, or an exported SavedModel folder,
    ``.onnx`` or ``.tflite`` file with the run's ``manifest.json`` beside it.

    ``inputs``: a path or list of paths (image files, folders, ``.npy``), or a NumPy array of raw
    0..255 images (one ``(H, W[, C])`` or a batch ``(N, H, W[, C])``).

    ``tta``: ``flip`` or ``flip_translate`` averages the probabilities over those views of each image.

    ``trust_export``: run an export this user's trainer did not write (no valid signed report
    beside it), or whose graph holds ops beyond pure computation; an export is a program.
    """
    from trainer.inference.exported import load_predictor
    from trainer.inference.predict import inputs_from_array, load_inputs, predict_records
    from trainer.config.evaluate import check_tta_mode
    from trainer.runtime import choose_keras_backend

    check_tta_mode(tta, "tta")
    choose_keras_backend()
    run = load_predictor(
        Path(run_dir), config_path=Path(config) if config is not None else None, code_dirs=[Path(d) for d in code_dirs], trust_export=bool(trust_export),
    )
    if hasattr(inputs, "shape") and hasattr(inputs, "dtype"):
        images = inputs_from_array(inputs, run.input_shape)
    else:
        paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
        images = load_inputs([Path(p) for p in paths], run.input_shape)
    return predict_records(run, images, top_k, tta)


def export(
    run_dir: str | Path, format: str, output: str | Path | None = None, *, config: str | Path | None = None, overrides: Sequence[str] = (),
    code_dirs: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Export a finished run (``savedmodel``, ``onnx`` or ``litert``) and check it against the Keras model.

    Returns the ``export-<format>.json`` report (written beside the export, with the run's
    ``manifest.json``). Raises ``trainer.inference.export.ExportParityError`` (exit code 1, the
    files kept) when top-1 agreement is below 99.9% or a probability differs by more than 1e-4.
    """
    from trainer.inference.export import check_can_export, export_run

    check_can_export(format)
    run = load_run(run_dir, config=config, overrides=overrides, code_dirs=code_dirs)
    return export_run(run, format, Path(output) if output is not None else None).to_dict()


def lr_find(
    config: str | Path | Config, *, overrides: Sequence[str] = (), start: float = 1e-7, end: float = 10.0, steps: int = 100,
    output: str | Path | None = None, events: Iterable[Any] = (), runtime: Any = None,
):
    """The learning-rate range test: train ``steps`` batches while the rate rises from ``start`` to ``end``.

    Writes ``lr_find.json`` and ``lr_find.png`` into ``output`` (a new or empty folder; default a
    fresh ``<output.dir>/<name>-lr-find-<YYYYmmdd-HHMMSS>``) and returns an ``LrFindResult``:
    ``.suggested`` (the rate of steepest descent of the smoothed loss, or None), ``.set`` (the
    ``--set`` that applies it), ``.record`` (the JSON), ``.output_dir``. No run directory is
    created and no weights file is written. ``runtime``: as for ``prepare_training``.
    """
    from trainer.config.checks import plan_run
    from trainer.run.lr_find import check_ramp, find_learning_rate, ramp_overrides
    from trainer.runtime import prepare_runtime

    check_ramp(start, end, steps)
    bus = EventBus(events)
    loaded = _as_config(config, overrides)
    ramp_config = _as_config(loaded, ramp_overrides(start))
    plan_run(ramp_config)  # a loss/label/model mismatch is refused before TensorFlow is imported
    setup = runtime if runtime is not None else prepare_runtime(ramp_config, on_notice=bus.on_notice)
    return find_learning_rate(
        loaded, ramp_config, start=start, end=end, steps=steps, output=Path(output) if output is not None else None, events=bus, setup=setup,
        config_file=str(config) if isinstance(config, (str, Path)) else None,
    )
