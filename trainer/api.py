"""The Python API: what ``trainer``'s commands do, as functions (``from trainer import train``).

- ``load_config(path, overrides=())`` -> the validated ``Config``.
- ``train(config, *, overrides=(), run_dir=None, resume=False, events=(), callbacks=())`` -> ``RunResult``.
- ``evaluate(run_dir, split="test")`` -> the ``eval-<split>.json`` report as a dict.
- ``predict(run_dir, inputs, top_k=3)`` -> the records ``trainer predict --output x.json`` writes.
- ``load_run(run_dir, code_dirs=())`` -> ``LoadedRun`` (``model``, ``config``, ``manifest``, class names).
- ``export(run_dir, format, output=None)`` -> the ``export-<format>.json`` report as a dict (SavedModel, ONNX, LiteRT).
- ``lr_find(config, start=1e-7, end=10.0, steps=100, output=None)`` -> ``LrFindResult`` (the learning-rate range test).
- ``report(run_dir, output=None)`` -> ``Report`` (``report.html``: one run on one self-contained page).
- ``compare(run_dirs, output=None)`` -> ``Report`` (runs side by side; the page only with ``output``).
- ``validate(config)``, ``sweep(config, workers=N)``, ``list_runs(folder)``, ``catalogue(name)``: the other commands.

This is the one door: every ``trainer`` command parses its arguments, calls one function here and
renders what it returns (``evaluation``, ``prediction``, ``exporting`` return what the command
shows: the result and the files written). Each workflow loads its config once and plans once
(``plan_training``: a frozen ``TrainingPlan`` every later step receives).

Errors are ``trainer.errors.TrainerError`` subclasses, each with its ``exit_code``; an argument of
the wrong type (``train(42)``, ``overrides="a=b"``, ``events=[object()]``) is a ``BadInputError``
naming the argument, what was received and what is allowed, never a ``TypeError``. Nothing here
prints (run events are the way to watch a run), calls ``sys.exit``, installs signal handlers or
changes ``os.environ`` unless asked (``set_environment=True``: the variables Keras reads at import,
as the CLI asks); the CLI does the rest. TensorFlow is imported only when a function needs it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from trainer.config import Config
from trainer.config import load_config as _load_config
from trainer.errors import BadInputError
from trainer.run.events import EventBus, RunEvents, RunResult
from trainer.run.lr_find import DEFAULT_END, DEFAULT_START, DEFAULT_STEPS, MAX_RAMP_STEPS  # noqa: F401 - MAX_RAMP_STEPS for trainer lr-find --help

__all__ = [
    "load_config", "train", "evaluate", "predict", "export", "load_run", "lr_find", "validate", "sweep", "plan_sweep", "list_runs", "catalogue",
    "list_run_dirs", "evaluation", "prediction", "exporting", "plan_training", "prepare_training", "prepare_lr_find", "report", "compare", "comparison", "check_serve", "build_server", "serve",
    "RunEvents", "RunResult",
]


# --------------------------------------------------------------------------- argument checks
# Python callers are users too: a wrong type is a BadInputError naming the argument, never a TypeError.


def _received(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _refuse(name: str, allowed: str, value: Any) -> BadInputError:
    return BadInputError(f"{name}: expected {allowed}; got {_received(value)}.")


def _is_path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike)) and not isinstance(os.fspath(value), bytes)


def _path(value: Any, name: str, what: str = "a path (str or pathlib.Path)") -> Path:
    """A path argument (``str`` or ``pathlib.Path``), NUL bytes refused."""
    from trainer.paths import user_path

    if not _is_path(value):
        raise _refuse(name, what, value)
    return user_path(value, name)


def _optional_path(value: Any, name: str) -> Path | None:
    return None if value is None else _path(value, name, "a path (str or pathlib.Path) or None")


def _paths(values: Any, name: str) -> list[Path]:
    """A list of paths; a single str is refused (it would be taken letter by letter)."""
    if _is_path(values) or isinstance(values, (bytes, dict)) or not isinstance(values, Iterable):
        raise _refuse(name, "a list of paths (str or pathlib.Path)", values)
    return [_path(value, f"{name}[{index}]") for index, value in enumerate(list(values))]


def _strings(values: Any, name: str, what: str = "'KEY=VALUE' strings, as --set takes them") -> list[str]:
    """A list of strings; a single str is refused (it would be taken letter by letter)."""
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        hint = " (wrap a single one in a list)" if isinstance(values, str) else ""
        raise _refuse(name, f"a list of {what}{hint}", values)
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise _refuse(f"{name}[{index}]", "a str", value)
    return list(values)


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise _refuse(name, "True or False", value)
    return value


def _handlers(values: Any, name: str = "events") -> list[Any]:
    """Run-event handlers: ``trainer.RunEvents`` subclasses (or objects with at least one of its ``on_*`` methods)."""
    from trainer.run.events import HOOKS

    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise _refuse(name, "a list of run-event handlers (trainer.RunEvents subclasses)", values)
    handlers = list(values)
    for index, handler in enumerate(handlers):
        if handler is None or isinstance(handler, RunEvents):
            continue
        if isinstance(handler, type) or not any(callable(getattr(handler, hook, None)) for hook in HOOKS):
            what = "a trainer.RunEvents instance (an instance, not the class)" if isinstance(handler, type) else "a trainer.RunEvents instance (or an object with on_run_start, on_epoch_end, ... methods)"
            raise _refuse(f"{name}[{index}]", what, handler)
    return handlers


def _keras_callbacks(values: Any) -> list[Any]:
    """Keras callbacks (``keras.callbacks.Callback`` instances): objects with ``set_model`` and ``set_params``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise _refuse("callbacks", "a list of keras.callbacks.Callback instances", values)
    callbacks = list(values)
    for index, callback in enumerate(callbacks):
        if isinstance(callback, type) or not all(callable(getattr(callback, m, None)) for m in ("set_model", "set_params", "on_epoch_end")):
            raise _refuse(f"callbacks[{index}]", "a keras.callbacks.Callback instance", callback)
    return callbacks


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read and validate a YAML config; ``overrides`` are ``KEY=VALUE`` strings, as ``--set`` takes them."""
    return _load_config(_path(path, "path"), _strings(overrides, "overrides"))


def _as_config(config: str | Path | Config, overrides: Sequence[str]) -> Config:
    overrides = _strings(overrides, "overrides")
    if isinstance(config, Config):
        if not overrides:
            return config
        resolved = _load_config(None, overrides, base=config.to_dict())
        resolved._config_dir = config.config_dir
        return resolved
    if _is_path(config):
        return _load_config(_path(config, "config"), overrides)
    raise _refuse("config", "a path to a YAML file or a Config from trainer.load_config", config)


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


def plan_training(
    config: str | Path | Config, *, overrides: Sequence[str] = (), run_dir: str | Path | None = None, resume: bool = False,
    dry_run: bool = False, runtime: Any = None, feature_cache: str | Path | None = None, set_environment: bool = False,
    on_notice: Any = None,
):
    """Everything a run decides before TensorFlow starts, once: a frozen ``trainer.run.plan.TrainingPlan``.

    The config is loaded and its labels and loss resolved (``plan_run``: a loss/label/model
    mismatch is refused here), the runtime set up (backend, distribution; ``runtime``: a setup
    made already), the run directory checked (new, or for ``resume`` its checkpoint).
    ``set_environment``: set the variables Keras reads at import (KERAS_BACKEND); the CLI does.
    """
    from trainer.config.checks import plan_run
    from trainer.paths import user_path
    from trainer.run.checkpoint import check_resume
    from trainer.run.plan import TrainingPlan
    from trainer.run.rundir import check_new_run_dir, default_run_dir
    from trainer.runtime import prepare_runtime

    resume, dry_run, set_environment = _flag(resume, "resume"), _flag(dry_run, "dry_run"), _flag(set_environment, "set_environment")
    feature_cache = _optional_path(feature_cache, "feature_cache")
    run_dir = _optional_path(run_dir, "run_dir")
    loaded = _as_config(config, overrides)
    labels = plan_run(loaded)  # a loss/label/model mismatch is refused before TensorFlow is imported
    setup = runtime if runtime is not None else prepare_runtime(loaded, resume=resume, set_environment=set_environment, on_notice=on_notice)
    target = user_path(run_dir, "--run-dir") if run_dir is not None else None  # checked above: a path
    resume_state = None
    if resume:
        if target is None:
            raise BadInputError("--resume needs --run-dir DIR: the run directory to continue.")
        if dry_run:
            raise BadInputError("--resume and --dry-run cannot be combined.")
        resume_state = check_resume(target, loaded)
    elif target is not None and not dry_run and setup.is_chief:
        check_new_run_dir(target)  # created only once data and model are ready
    return TrainingPlan(
        loaded, labels, setup, target or default_run_dir(loaded.output.dir, loaded.name), unique_name=target is None,
        resume=resume_state, dry_run=dry_run, feature_cache=Path(feature_cache) if feature_cache is not None else None,
    )


def prepare_training(
    config: str | Path | Config, *, overrides: Sequence[str] = (), run_dir: str | Path | None = None, resume: bool = False,
    events: Iterable[Any] = (), callbacks: Iterable[Any] = (), dry_run: bool = False, runtime: Any = None,
    feature_cache: str | Path | None = None, set_environment: bool = False,
):
    """Everything ``train`` checks before TensorFlow starts; returns the ``Training`` whose ``run()`` trains.

    The plan (``plan_training``) is made once here and handed to the ``Training``. ``runtime``: a
    setup from ``trainer.runtime.prepare_runtime``; None resolves it here. ``set_environment``:
    set KERAS_BACKEND and the variables Keras reads at import (the CLI passes True; Python callers
    set them themselves or get a message saying which).
    """
    from trainer.run.training import Training

    bus = EventBus(_handlers(events))
    callbacks = _keras_callbacks(callbacks)
    plan = plan_training(
        config, overrides=overrides, run_dir=run_dir, resume=resume, dry_run=dry_run, runtime=runtime, feature_cache=feature_cache,
        set_environment=set_environment, on_notice=bus.on_notice,
    )
    loaded = plan.config
    if loaded.tracking.mlflow is not None and not plan.dry_run and plan.setup.is_chief and not _has_mlflow_logger(bus.handlers):
        from trainer.integrations.mlflow import connect

        logger = connect(loaded)  # the URI is checked here, before any data is read
        bus.handlers.append(logger)
        bus.on_notice(f"tracking to MLflow: {logger.uri}, experiment {loaded.tracking.mlflow.experiment or loaded.name!r}")
    from trainer.report.build import report_at_end  # report.html at every ending of a run

    return Training(plan, events=bus, callbacks=tuple(callbacks), at_end=report_at_end)


def resume_hint(config: str | Path, run_dir: str | Path, overrides: Sequence[str] = ()) -> str:
    """What to do after an interrupted run: the ``trainer run ... --resume`` command, or why there is nothing to resume."""
    from trainer.run.checkpoint import read_checkpoint_quiet, resume_command

    if read_checkpoint_quiet(Path(run_dir)) is None:
        return "no epoch was completed, so there is nothing to resume; start again with a new --run-dir."
    return f"resume with: {resume_command(config, run_dir, list(overrides))}"


def _has_mlflow_logger(handlers: list[Any]) -> bool:
    """A caller (a sweep) may pass its own ``MlflowLogger``; then none is added."""
    return any(type(handler).__name__ == "MlflowLogger" for handler in handlers)


def _start_keras(set_environment: bool, before_keras: Any, *, strategy: str = "none", backend: str = "auto") -> None:
    """Choose Keras's backend (``set_environment``: set the variables it reads at import), then ``before_keras()`` (the CLI starts TensorFlow quietly there)."""
    from trainer.runtime import choose_keras_backend

    choose_keras_backend(strategy, configured=backend, set_environment=_flag(set_environment, "set_environment"))
    if before_keras is not None:
        before_keras()


def load_run(
    run_dir: str | Path, *, config: str | Path | None = None, overrides: Sequence[str] = (), code_dirs: Sequence[str | Path] = (),
    set_environment: bool = False, before_keras: Any = None,
):
    """Open a finished run: ``.model`` (with its custom objects), ``.config``, ``.manifest``, ``.class_names``.

    ``run_dir`` may also be a model file, with ``config`` the YAML it was trained with. Custom code
    (``module:attr`` losses, metrics) is imported only from ``code_dirs`` and, when ``config`` is
    given, from its folder and the working directory: opening a run directory never runs code it names.
    ``set_environment``, ``before_keras``: the CLI's Keras start-up (``_start_keras``).
    """
    from trainer.inference.load import load_run as _load_run

    run_path, config_path = _path(run_dir, "run_dir"), _optional_path(config, "config")
    overrides, folders = _strings(overrides, "overrides"), _paths(code_dirs, "code_dirs")
    _start_keras(set_environment, before_keras)
    return _load_run(run_path, config_path=config_path, overrides=overrides, code_dirs=folders)


@dataclass(frozen=True)
class Evaluation:
    """What ``evaluation`` did: the measured ``result`` (an ``EvalResult``), and with ``write`` the files and the MLflow run."""

    result: Any  # trainer.inference.evaluate.EvalResult
    report: Path | None = None  # eval-<split>.json (None: nothing written)
    picture: Path | None = None  # confusion_matrix-<split>.png beside it
    mlflow_run_id: str | None = None  # the MLflow run the report was added to
    mlflow_uri: str | None = None  # its store, credentials masked
    hint: str | None = None  # how to add the report to MLflow, when the run was tracked and no store was named


def evaluation(
    run_dir: str | Path, split: str = "test", *, config: str | Path | None = None, overrides: Sequence[str] = (), code_dirs: Sequence[str | Path] = (),
    tta: str | None = None, write: bool = False, output: str | Path | None = None, overwrite: bool = False, mlflow: str | None = None,
    events: Iterable[Any] = (), set_environment: bool = False, before_keras: Any = None, cli_names: bool = False,
) -> Evaluation:
    """``trainer eval``'s workflow: measure a finished run on ``split`` and, with ``write`` (or ``output``), write and log the report.

    ``output``: the JSON report's path (default ``<run dir>/eval-<split>.json``); the confusion
    matrix PNG goes beside it. ``overwrite``: replace a file there trainer did not write. ``mlflow``:
    a tracking store URI to add the report to (the one the run was logged to); ``--set
    tracking.mlflow.uri=...`` or a ``config`` with ``tracking.mlflow`` does the same. Every output and
    the store are checked before TensorFlow starts. Notices go to ``events`` (run-event handlers' ``on_notice``).
    ``cli_names``: messages name the command line's flags (``--split``, ``--tta``) rather than the arguments.
    """
    from trainer.errors import ConfigError
    from trainer.inference.evaluate import SPLITS

    if not isinstance(split, str) or split not in SPLITS:
        shown = repr(split) if cli_names else _received(split)
        raise ConfigError(f"{'--split' if cli_names else 'split'}: unknown split {shown}; valid: {', '.join(SPLITS)}")
    if tta is not None:
        from trainer.config.evaluate import check_tta_mode

        check_tta_mode(tta, "--tta" if cli_names else "tta")
    bus = EventBus(_handlers(events))
    run_path, config_path = _path(run_dir, "run_dir"), _optional_path(config, "config")
    overrides, folders = _strings(overrides, "overrides"), _paths(code_dirs, "code_dirs")
    output_path, overwrite = _optional_path(output, "output"), _flag(overwrite, "overwrite")
    write = _flag(write, "write") or output_path is not None or mlflow is not None
    if mlflow is not None and not isinstance(mlflow, str):
        raise _refuse("mlflow", "a tracking store URI (str) or None", mlflow)
    tracked = opened = None
    if write:
        from trainer.inference.evaluate import check_eval_outputs
        from trainer.integrations.eval_tracking import open_named_tracking
        from trainer.inference.load import open_run
        from trainer.outputs import check_writable_dir

        if output_path is not None:
            check_eval_outputs(output_path, split, overwrite, output_path)
        opened = open_run(run_path, config_path)  # paths, manifest: refused before TensorFlow starts
        target_dir = opened[2]
        if output_path is None:
            check_writable_dir(target_dir, f"eval writes eval-{split}.json into {target_dir}; pass --output FILE elsewhere, because it")
            check_eval_outputs(target_dir / f"eval-{split}.json", split, overwrite, None)
        tracked = open_named_tracking(target_dir, mlflow, config_path, overrides, bus.on_notice)  # a store the user named, checked before evaluating
    _start_keras(set_environment, before_keras)
    from trainer.inference.evaluate import evaluate_run
    from trainer.inference.load import load_run as _load_run

    loaded = _load_run(run_path, config_path=config_path, overrides=overrides, code_dirs=folders, opened=opened)
    result = evaluate_run(loaded, split, tta)
    if not write:
        return Evaluation(result)
    from trainer.inference.evaluate import write_eval_files
    from trainer.integrations.eval_tracking import log_report

    report = output_path or loaded.run_dir / f"eval-{split}.json"
    picture = write_eval_files(result, report, overwrite=overwrite, output=output_path)
    if tracked is None:
        from trainer.integrations.mlflow import evaluation_hint

        return Evaluation(result, report, picture, hint=evaluation_hint(loaded.run_dir) or None)  # reads tracking.json, contacts nothing
    run_id = log_report(tracked, [report, picture], {"loss": result.loss, "accuracy": result.accuracy, **result.summary}, split, bus.on_notice)
    return Evaluation(result, report, picture, mlflow_run_id=run_id, mlflow_uri=tracked.uri if run_id is not None else None)


def evaluate(
    run_dir: str | Path, split: str = "test", *, config: str | Path | None = None, overrides: Sequence[str] = (), code_dirs: Sequence[str | Path] = (),
    tta: str | None = None, write: bool = False, output: str | Path | None = None, overwrite: bool = False, mlflow: str | None = None,
    events: Iterable[Any] = (),
) -> dict[str, Any]:
    """Measure a finished run on ``split``; the dict ``trainer eval`` writes to ``eval-<split>.json``.

    ``tta``: ``none``, ``flip`` or ``flip_translate`` adds a ``tta`` entry (probabilities averaged
    over the views); None takes the run's ``evaluate.tta``. Nothing is written unless ``write``
    (or ``output``, or ``mlflow``): then the report and its confusion matrix are written and
    logged exactly as ``trainer eval`` does (``evaluation`` says where).
    """
    return evaluation(
        run_dir, split, config=config, overrides=overrides, code_dirs=code_dirs, tta=tta, write=write, output=output, overwrite=overwrite,
        mlflow=mlflow, events=events,
    ).result.to_dict()


@dataclass(frozen=True)
class Prediction:
    """What ``prediction`` did: the ``records``, the notices about converted inputs, and the file written (or None)."""

    records: list[dict[str, Any]]
    notices: list[str]
    output: Path | None = None


def prediction(
    run_dir: str | Path, inputs: Any, top_k: int = 3, *, config: str | Path | None = None, code_dirs: Sequence[str | Path] = (),
    trust_export: bool = False, tta: str = "none", output: str | Path | None = None, overwrite: bool = False,
    set_environment: bool = False, before_keras: Any = None, cli_names: bool = False,
) -> Prediction:
    """``trainer predict``'s workflow: ``predict``'s records, with ``output`` (``.json`` or ``.csv``) written under the output rule.

    ``cli_names``: as for ``evaluation``.
    """
    from trainer.config.evaluate import check_tta_mode
    from trainer.inference.exported import check_predictor

    run_path, config_path, folders = _path(run_dir, "run_dir"), _optional_path(config, "config"), _paths(code_dirs, "code_dirs")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise _refuse("top_k", "a whole number of at least 1", top_k)
    is_array = hasattr(inputs, "shape") and hasattr(inputs, "dtype")
    paths = None if is_array else [_path(inputs, "inputs")] if _is_path(inputs) else _paths(inputs, "inputs") if isinstance(inputs, Iterable) and not isinstance(inputs, (bytes, dict)) else None
    if not is_array and paths is None:
        raise _refuse("inputs", "a path, a list of paths or a NumPy array of images", inputs)
    check_tta_mode(tta, "--tta" if cli_names else "tta")
    trust_export, overwrite = _flag(trust_export, "trust_export"), _flag(overwrite, "overwrite")
    output_path = _optional_path(output, "output")
    if output_path is not None:
        from trainer.inference.predict import check_output_path

        check_output_path(output_path, overwrite=overwrite)
    check_predictor(run_path, config_path, trust_export=trust_export)  # paths, manifest, an export's signature: refused before TensorFlow starts
    _start_keras(set_environment, before_keras)
    from trainer.inference.exported import load_predictor
    from trainer.inference.predict import inputs_from_array, load_inputs, predict_records

    run = load_predictor(run_path, config_path=config_path, code_dirs=folders, trust_export=trust_export)
    images = inputs_from_array(inputs, run.input_shape) if is_array else load_inputs(paths, run.input_shape)
    records = predict_records(run, images, top_k, tta)
    if output_path is not None:
        from trainer.inference.predict import write_predictions

        write_predictions(records, output_path, overwrite=overwrite)
    return Prediction(records, list(images.notices), output_path)


def predict(
    run_dir: str | Path, inputs: Any, top_k: int = 3, *, config: str | Path | None = None, code_dirs: Sequence[str | Path] = (),
    trust_export: bool = False, tta: str = "none", output: str | Path | None = None, overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Classify images with a finished run (or an export of it); the records ``trainer predict --output x.json`` writes.

    ``run_dir``: a run directory, a model file with ``config``, or an exported SavedModel folder,
    ``.onnx`` or ``.tflite`` file with the run's ``manifest.json`` beside it.

    ``inputs``: a path or list of paths (image files, folders, ``.npy``), or a NumPy array of raw
    0..255 images (one ``(H, W[, C])`` or a batch ``(N, H, W[, C])``).

    ``tta``: ``flip`` or ``flip_translate`` averages the probabilities over those views of each image.

    ``trust_export``: run an export this user's trainer did not write (no valid signed report
    beside it), or whose graph holds ops beyond pure computation; an export is a program.

    ``output``: also write the records to this ``.json`` or ``.csv`` file, as ``--output`` does.
    """
    return prediction(
        run_dir, inputs, top_k, config=config, code_dirs=code_dirs, trust_export=trust_export, tta=tta, output=output, overwrite=overwrite,
    ).records


def export(
    run_dir: str | Path, format: str, output: str | Path | None = None, *, config: str | Path | None = None, overrides: Sequence[str] = (),
    code_dirs: Sequence[str | Path] = (), set_environment: bool = False, before_keras: Any = None,
) -> dict[str, Any]:
    """Export a finished run (``savedmodel``, ``onnx`` or ``litert``) and check it against the Keras model.

    Returns the ``export-<format>.json`` report (written beside the export, with the run's
    ``manifest.json``). Raises ``trainer.inference.export.ExportParityError`` (exit code 1, the
    files kept) when top-1 agreement is below 99.9% or a probability differs by more than 1e-4.
    """
    return exporting(
        run_dir, format, output, config=config, overrides=overrides, code_dirs=code_dirs, set_environment=set_environment,
        before_keras=before_keras,
    ).to_dict()


def exporting(
    run_dir: str | Path, format: str, output: str | Path | None = None, *, config: str | Path | None = None, overrides: Sequence[str] = (),
    code_dirs: Sequence[str | Path] = (), set_environment: bool = False, before_keras: Any = None,
):
    """``trainer export``'s workflow; returns the ``ExportReport`` (``export`` returns it as a dict). Everything that needs no TensorFlow is checked first."""
    from trainer.inference.export import check_can_export, export_path, export_run, plan_export
    from trainer.inference.load import open_run

    if not isinstance(format, str):
        raise _refuse("format", "one of savedmodel, onnx, litert", format)
    output_path = _optional_path(output, "output")
    run_path, config_path = _path(run_dir, "run_dir"), _optional_path(config, "config")
    overrides, folders = _strings(overrides, "overrides"), _paths(code_dirs, "code_dirs")
    fmt = check_can_export(format)
    export_path(None, fmt, output_path)  # a wrong format, output or missing extra costs no TensorFlow start-up
    opened = open_run(run_path, config_path)  # paths, manifest: refused before TensorFlow starts
    _, _, target_dir, manifest = opened
    plan_export(target_dir if output_path is None else None, fmt, output_path, manifest)  # what is at the output
    _start_keras(set_environment, before_keras)
    from trainer.inference.load import load_run as _load_run

    run = _load_run(run_path, config_path=config_path, overrides=overrides, code_dirs=folders, opened=opened)
    return export_run(run, format, output_path)


def lr_find(
    config: str | Path | Config, *, overrides: Sequence[str] = (), start: float = DEFAULT_START, end: float = DEFAULT_END, steps: int = DEFAULT_STEPS,
    output: str | Path | None = None, events: Iterable[Any] = (), runtime: Any = None,
):
    """The learning-rate range test: train ``steps`` batches while the rate rises from ``start`` to ``end``.

    Writes ``lr_find.json`` and ``lr_find.png`` into ``output`` (a new or empty folder; default a
    fresh ``<output.dir>/<name>-lr-find-<YYYYmmdd-HHMMSS>``) and returns an ``LrFindResult``:
    ``.suggested`` (the rate of steepest descent of the smoothed loss, or None), ``.set`` (the
    ``--set`` that applies it), ``.record`` (the JSON), ``.output_dir``. No run directory is
    created and no weights file is written. ``runtime``: as for ``prepare_training``.
    """
    return prepare_lr_find(config, overrides=overrides, start=start, end=end, steps=steps, output=output, events=events, runtime=runtime).run()


@dataclass(frozen=True)
class LrFind:
    """A planned range test (``prepare_lr_find``): ``run()`` starts Keras, trains the ramp and writes the results."""

    config: Config  # the user's: the suggested --set is phrased for it
    plan: Any  # trainer.run.plan.TrainingPlan of the config with the ramp's overrides
    start: float
    end: float
    steps: int
    output: Path | None
    events: EventBus
    config_file: str | None

    def run(self):
        from trainer.run.lr_find import find_learning_rate

        return find_learning_rate(
            self.config, self.plan, start=self.start, end=self.end, steps=self.steps, output=self.output, events=self.events,
            config_file=self.config_file,
        )


def prepare_lr_find(
    config: str | Path | Config, *, overrides: Sequence[str] = (), start: float = DEFAULT_START, end: float = DEFAULT_END, steps: int = DEFAULT_STEPS,
    output: str | Path | None = None, events: Iterable[Any] = (), runtime: Any = None, set_environment: bool = False,
) -> LrFind:
    """Everything ``lr_find`` checks before TensorFlow starts (the config loaded once, planned once); ``run()`` does the rest.

    ``set_environment``: as for ``prepare_training``.
    """
    from trainer.run.lr_find import check_ramp, ramp_overrides

    check_ramp(start, end, steps)
    bus = EventBus(_handlers(events))
    output_path = _optional_path(output, "output")
    loaded = _as_config(config, overrides)
    plan = plan_training(_as_config(loaded, ramp_overrides(start)), runtime=runtime, set_environment=set_environment, on_notice=bus.on_notice)
    return LrFind(loaded, plan, start, end, steps, output_path, bus, str(config) if _is_path(config) else None)


# --------------------------------------------------------------------------- the other commands' workflows


@dataclass(frozen=True)
class Validation:
    """``validate``'s answer: the ``config``, its resolved ``labels`` (encoding, loss), the ``backend`` it would run on, the ``notices``."""

    config: Config
    labels: Any  # trainer.config.checks.Plan
    backend: str
    notices: list[str]
    layout: str | None = None  # a folder or CSV dataset: the layout found at data.path ("cannot be read: ..." when it cannot)


def validate(config: str | Path | Config, overrides: Sequence[str] = ()) -> Validation:
    """Check a config without TensorFlow: the schema, the loss / label / model agreement, the sweep section, the backend."""
    from trainer.config.checks import plan_run
    from trainer.config.checks import check_sweep
    from trainer.runtime.distribute import check_backend

    loaded = _as_config(config, overrides)
    labels = plan_run(loaded)
    check_sweep(loaded, config if _is_path(config) else None)
    backend, backend_notice = check_backend(loaded)
    from trainer.data.folder import describe_layout

    return Validation(loaded, labels, backend, ([backend_notice] if backend_notice else []) + list(labels.notices), describe_layout(loaded.data))


def list_runs(folder: str | Path | None = None) -> tuple[Path, list[dict[str, Any]]]:
    """The runs in ``folder`` (default: ``output.dir``'s default), oldest first: ``(folder, rows)``, as ``trainer runs`` lists them."""
    from trainer.config import OutputConfig
    from trainer.run.listing import list_runs as _list_runs

    root = _optional_path(folder, "folder") or Path(OutputConfig().dir)
    return root, _list_runs(root)


def list_run_dirs(folder: str | Path | None = None) -> tuple[Path, list[Path]]:
    """The run directories in ``folder`` (default: ``output.dir``'s default), in ``list_runs``'s order: what ``trainer runs --compare`` compares."""
    from trainer.config import OutputConfig
    from trainer.run.listing import list_run_dirs as _list_run_dirs

    root = _optional_path(folder, "folder") or Path(OutputConfig().dir)
    return root, _list_run_dirs(root)


def catalogue(name: str, *, before_keras: Any = None) -> list[dict[str, Any]]:
    """A catalogue's entries (``losses``, ``metrics``, ``optimizers``, ``callbacks``, ``models``) with their parameters and defaults.

    ``before_keras()`` is called first for the catalogues read from the Keras classes themselves.
    """
    from trainer.config.overview import CATALOGUES, catalogue_rows

    if before_keras is not None and name in CATALOGUES and name not in ("losses", "models"):
        before_keras()
    return catalogue_rows(name)


def plan_sweep(
    config: str | Path | Config, *, overrides: Sequence[str] = (), trials: int | None = None, storage: str | None = None,
    study: str | None = None, sweep_dir: str | Path | None = None, worker: bool = False,
):
    """The config loaded once and its sweep resolved: a ``trainer.sweep.SweepPlan`` (``sweep`` takes it as its config).

    ``worker``: this process is a worker of ``sweep(..., workers=N)``; its parent's ``--set`` values
    that held a credential come from the environment (``trainer.sweep.workers.WORKER_SET_ENV``).
    """
    from trainer.sweep.driver import plan_sweep as _plan_sweep
    from trainer.sweep.workers import worker_overrides

    overrides = _strings(overrides, "overrides")
    if _flag(worker, "worker"):
        overrides = [*worker_overrides(), *overrides]
    loaded = _as_config(config, overrides)
    return _plan_sweep(loaded, trials=trials, storage=storage, study=study, sweep_dir=_optional_path(sweep_dir, "sweep_dir"),
                       config_file=_path(config, "config") if _is_path(config) else None, overrides=overrides)


def sweep(
    config: Any, *, overrides: Sequence[str] = (), trials: int | None = None, workers: int = 1, storage: str | None = None,
    study: str | None = None, sweep_dir: str | Path | None = None, events: Any = None, trial_events: Iterable[Any] = (),
    worker: bool = False, set_environment: bool = False, before_keras: Any = None,
):
    """Search hyperparameters with Optuna; trials are runs in ``SWEEP_DIR/trial-NNNN``. Returns the ``SweepSummary``.

    ``config``: a path, a ``Config`` with a ``sweep:`` section, or a plan from ``plan_sweep``.
    ``workers``: trial processes on this machine sharing the study (each reads ``config``, which
    must then be a path). ``events``: a ``trainer.sweep.SweepEvents`` (trials starting and
    ending); ``trial_events``: run-event handlers added to every trial run here. Writes
    ``trials.csv``, ``sweep.json``, ``best.yaml`` and the plots. Ctrl-C writes what finished and
    raises ``RunInterrupted`` (its ``run_dir`` the sweep directory: the same call continues).
    ``worker``: run trials for a parent's ``workers`` (no outputs; returns None).
    """
    from trainer.errors import RunInterrupted
    from trainer.sweep.driver import SweepPlan
    from trainer.sweep.events import SweepEvents
    from trainer.sweep.workers import run_sweep

    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise _refuse("workers", "a whole number of at least 1", workers)
    trial_handlers = _handlers(trial_events, "trial_events")
    if events is not None and not isinstance(events, SweepEvents):
        raise _refuse("events", "a trainer.sweep.SweepEvents instance or None", events)
    if isinstance(config, SweepPlan):
        if overrides or trials is not None or storage is not None or study is not None or sweep_dir is not None:
            raise BadInputError("sweep: a plan from plan_sweep holds overrides, trials, storage, study and sweep_dir already; pass them to plan_sweep.")
        plan = config
    else:
        plan = plan_sweep(config, overrides=overrides, trials=trials, storage=storage, study=study, sweep_dir=sweep_dir, worker=worker)
    events = events if events is not None else SweepEvents()

    def start_keras() -> None:
        _start_keras(set_environment, before_keras, backend=plan.config.backend)

    try:
        return run_sweep(plan, events, train=train, workers=workers, trial_events=trial_handlers, worker=_flag(worker, "worker"), before_trials=start_keras)
    except (RunInterrupted, KeyboardInterrupt) as error:
        if worker:
            raise
        interrupted = error if isinstance(error, RunInterrupted) else RunInterrupted(
            "the sweep stopped; trials that were running are recorded as interrupted and their budget will be re-used."
        )
        interrupted.run_dir = plan.sweep_dir
        raise interrupted from None


def sweep_command(
    plan: Any, *, trials: int | None = None, storage: str | None = None, study: str | None = None, workers: int = 1,
    storage_from_env: bool = False, overrides: Sequence[str] | None = None,
) -> str:
    """The ``trainer sweep`` command that continues ``plan``'s search (passwords as ``***``, with a word on where they go)."""
    from trainer.sweep.workers import continue_command

    return continue_command(plan.config_file, list(plan.overrides if overrides is None else overrides), plan, trials, storage, study, workers,
                            storage_from_env=storage_from_env)


# --------------------------------------------------------------------------- serve (trainer.serve; the [serve] extra)


def check_serve(
    run_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, config: str | Path | None = None, trust_export: bool = False,
    max_bytes: int | None = None, max_concurrent: int | None = None, timeout: float | None = None,
):
    """What ``trainer serve`` refuses before TensorFlow starts: the bounds, the ``[serve]`` extra, the run's paths and
    manifest, an export's signature. Returns the ``trainer.serve.settings.ServeSettings``."""
    from trainer.inference.exported import check_predictor
    from trainer.serve import require_serve_extra
    from trainer.serve.settings import settings_from

    settings = settings_from(host, port, max_bytes, max_concurrent, timeout)
    require_serve_extra()
    check_predictor(_path(run_dir, "run_dir"), _optional_path(config, "config"), trust_export=_flag(trust_export, "trust_export"))
    return settings


def build_server(
    run_dir: str | Path, *, config: str | Path | None = None, code_dirs: Sequence[str | Path] = (), trust_export: bool = False,
    max_bytes: int | None = None, max_concurrent: int | None = None, timeout: float | None = None, host: str = "127.0.0.1",
    on_notice: Any = None, on_error: Any = None,
):
    """The ASGI app of ``trainer serve`` for a run (or an export ``predict`` reads), its model loaded once and warmed up.

    Serve it with any ASGI server (``uvicorn.run(app)``) or call ``serve`` below. ``host``: where it
    will listen; on loopback the app answers only ``Host: localhost``/``127.0.0.1``/``[::1]``.
    ``on_notice(text)`` gets each distinct conversion notice once; ``on_error(exc)`` each bug.
    """
    from trainer.serve import require_serve_extra
    from trainer.serve.settings import settings_from

    settings = settings_from(host, 0, max_bytes, max_concurrent, timeout)
    require_serve_extra()
    classifier = _serve_classifier(run_dir, config, code_dirs, trust_export)
    from trainer.serve.app import build_app

    return build_app(classifier, settings, on_notice=on_notice, on_error=on_error)


def serve(
    run_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, config: str | Path | None = None, code_dirs: Sequence[str | Path] = (),
    trust_export: bool = False, max_bytes: int | None = None, max_concurrent: int | None = None, timeout: float | None = None,
    before_load: Any = None, on_ready: Any = None, on_notice: Any = None, on_error: Any = None, set_environment: bool = False,
) -> None:
    """Serve a run's model over HTTP until interrupted (``trainer serve``); uvicorn handles SIGINT/SIGTERM while it runs.

    The socket is bound before the model loads (a port in use or a host that does not resolve costs
    nothing); ``before_load()`` is called then (the CLI starts TensorFlow there), and ``on_ready(url,
    loopback, classifier)`` once the model is loaded and the server is about to answer.
    """
    from trainer.serve import require_serve_extra
    from trainer.serve.server import bind, run
    from trainer.serve.settings import settings_from

    settings = settings_from(host, port, max_bytes, max_concurrent, timeout)
    require_serve_extra()
    listening = bind(settings)
    try:
        _start_keras(set_environment, before_load)  # the backend chosen (and, for the CLI, TensorFlow started quietly)
        classifier = _serve_classifier(run_dir, config, code_dirs, trust_export)
        from trainer.serve.app import build_app

        app = build_app(classifier, settings, on_notice=on_notice, on_error=on_error)
    except BaseException:
        listening.sock.close()
        raise
    if on_ready is not None:
        on_ready(listening.url, listening.loopback, classifier)
    run(app, listening, settings)


def _serve_classifier(run_dir: Any, config: Any, code_dirs: Any, trust_export: Any):
    from trainer.runtime import choose_keras_backend
    from trainer.serve.classifier import load_classifier

    run_path, config_path, folders = _path(run_dir, "run_dir"), _optional_path(config, "config"), _paths(code_dirs, "code_dirs")
    if not isinstance(trust_export, bool):
        raise _refuse("trust_export", "True or False", trust_export)
    choose_keras_backend()
    return load_classifier(run_path, config_path=config_path, code_dirs=folders, trust_export=trust_export)


def report(
    run_dir: str | Path, output: str | Path | None = None, *, overwrite: bool = False, predict: bool = True,
    set_environment: bool = False, before_keras: Any = None,
):
    """Write ``report.html`` of a run directory (into it, or to ``output``) and return the ``trainer.report.build.Report``.

    The page shows the run's name, status, setting, config, metrics, curves and, when the run
    completed and its data can be loaded (``predict``), the test split's confusion matrix,
    per-class scores and worst-misclassified images, computed from ``model.h5``; otherwise it says
    why they are absent. ``output`` follows eval's ``--output`` rule (``overwrite`` for a file
    trainer did not write). The run directory is read through trainer's readers only.
    """
    from trainer.report.build import report as _report

    return _report(
        _path(run_dir, "run_dir"), _optional_path(output, "output"), overwrite=_flag(overwrite, "overwrite"), predict=_flag(predict, "predict"),
        before_predict=lambda: _start_keras(set_environment, before_keras),
    )


def comparison(views: Sequence[Any]):
    """The table of ``compare(...).views``: ``columns``, ``rows``, ``best`` (the best row per column), ``notes``, config differences."""
    from trainer.report.compare import comparison as _comparison

    return _comparison(list(views))


def compare(run_dirs: Sequence[str | Path], output: str | Path | None = None, *, overwrite: bool = False):
    """Compare run directories: metrics (the best per column), config differences, curves; the page written to ``output`` when given.

    Returns a ``trainer.report.build.Report`` whose ``views`` are the runs read;
    ``trainer.report.compare.comparison(report.views)`` is the table ``trainer runs --compare`` prints.
    """
    from trainer.report.build import compare as _compare

    return _compare(_paths(run_dirs, "run_dirs"), _optional_path(output, "output"), overwrite=_flag(overwrite, "overwrite"))
