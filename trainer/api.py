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

Errors are ``trainer.errors.TrainerError`` subclasses, each with its ``exit_code``; an argument of
the wrong type (``train(42)``, ``overrides="a=b"``, ``events=[object()]``) is a ``BadInputError``
naming the argument, what was received and what is allowed, never a ``TypeError``. Nothing here
prints (run events are the way to watch a run), calls ``sys.exit``, installs signal handlers or
changes ``os.environ``; the CLI does those. TensorFlow is imported only when a function needs it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from trainer.config import Config
from trainer.config import load_config as _load_config
from trainer.errors import BadInputError
from trainer.run.events import EventBus, RunEvents, RunResult

__all__ = ["load_config", "train", "evaluate", "predict", "export", "load_run", "lr_find", "report", "compare", "RunEvents", "RunResult"]


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


def _handlers(values: Any) -> list[Any]:
    """Run-event handlers: ``trainer.RunEvents`` subclasses (or objects with at least one of its ``on_*`` methods)."""
    from trainer.run.events import HOOKS

    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise _refuse("events", "a list of run-event handlers (trainer.RunEvents subclasses)", values)
    handlers = list(values)
    for index, handler in enumerate(handlers):
        if handler is None or isinstance(handler, RunEvents):
            continue
        if isinstance(handler, type) or not any(callable(getattr(handler, hook, None)) for hook in HOOKS):
            what = "a trainer.RunEvents instance (an instance, not the class)" if isinstance(handler, type) else "a trainer.RunEvents instance (or an object with on_run_start, on_epoch_end, ... methods)"
            raise _refuse(f"events[{index}]", what, handler)
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
    from trainer.report.build import report_at_end  # report.html at every ending of a run
    from trainer.runtime import prepare_runtime

    bus = EventBus(_handlers(events))
    callbacks = _keras_callbacks(callbacks)
    resume, dry_run = _flag(resume, "resume"), _flag(dry_run, "dry_run")
    feature_cache = _optional_path(feature_cache, "feature_cache")
    run_dir = _optional_path(run_dir, "run_dir")
    loaded = _as_config(config, overrides)
    plan_run(loaded)  # a loss/label/model mismatch is refused before TensorFlow is imported
    setup = runtime if runtime is not None else prepare_runtime(loaded, resume=resume, on_notice=bus.on_notice)
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
    if loaded.tracking.mlflow is not None and not dry_run and setup.is_chief and not _has_mlflow_logger(bus.handlers):
        from trainer.integrations.mlflow import connect

        logger = connect(loaded)  # the URI is checked here, before any data is read
        bus.handlers.append(logger)
        bus.on_notice(f"tracking to MLflow: {logger.uri}, experiment {loaded.tracking.mlflow.experiment or loaded.name!r}")
    return Training(
        loaded, target or default_run_dir(loaded.output.dir, loaded.name), events=bus, setup=setup, resume=resume_state,
        callbacks=tuple(callbacks), dry_run=dry_run, unique_name=target is None,
        feature_cache=Path(feature_cache) if feature_cache is not None else None, at_end=report_at_end,
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

    run_path, config_path = _path(run_dir, "run_dir"), _optional_path(config, "config")
    overrides, folders = _strings(overrides, "overrides"), _paths(code_dirs, "code_dirs")
    choose_keras_backend()
    return _load_run(run_path, config_path=config_path, overrides=overrides, code_dirs=folders)


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

    if not isinstance(split, str) or split not in SPLITS:
        raise ConfigError(f"split: unknown split {_received(split)}; valid: {', '.join(SPLITS)}")
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

    run_path, config_path, folders = _path(run_dir, "run_dir"), _optional_path(config, "config"), _paths(code_dirs, "code_dirs")
    if not isinstance(top_k, int) or isinstance(top_k, bool):
        raise _refuse("top_k", "a whole number of at least 1", top_k)
    is_array = hasattr(inputs, "shape") and hasattr(inputs, "dtype")
    paths = None if is_array else [_path(inputs, "inputs")] if _is_path(inputs) else _paths(inputs, "inputs") if isinstance(inputs, Iterable) and not isinstance(inputs, (bytes, dict)) else None
    if not is_array and paths is None:
        raise _refuse("inputs", "a path, a list of paths or a NumPy array of images", inputs)
    check_tta_mode(tta, "tta")
    choose_keras_backend()
    if not isinstance(trust_export, bool):
        raise _refuse("trust_export", "True or False", trust_export)
    run = load_predictor(run_path, config_path=config_path, code_dirs=folders, trust_export=trust_export)
    images = inputs_from_array(inputs, run.input_shape) if is_array else load_inputs(paths, run.input_shape)
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

    if not isinstance(format, str):
        raise _refuse("format", "one of savedmodel, onnx, litert", format)
    output_path = _optional_path(output, "output")
    _path(run_dir, "run_dir")
    check_can_export(format)
    run = load_run(run_dir, config=config, overrides=overrides, code_dirs=code_dirs)
    return export_run(run, format, output_path).to_dict()


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


# --------------------------------------------------------------------------- serve (trainer.serve; the [serve] extra)


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
    before_load: Any = None, on_ready: Any = None, on_notice: Any = None, on_error: Any = None,
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
        if before_load is not None:
            before_load()
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


def report(run_dir: str | Path, output: str | Path | None = None, *, overwrite: bool = False, predict: bool = True):
    """Write ``report.html`` of a run directory (into it, or to ``output``) and return the ``trainer.report.build.Report``.

    The page shows the run's name, status, setting, config, metrics, curves and, when the run
    completed and its data can be loaded (``predict``), the test split's confusion matrix,
    per-class scores and worst-misclassified images, computed from ``model.h5``; otherwise it says
    why they are absent. ``output`` follows eval's ``--output`` rule (``overwrite`` for a file
    trainer did not write). The run directory is read through trainer's readers only.
    """
    from trainer.report.build import report as _report

    return _report(_path(run_dir, "run_dir"), _optional_path(output, "output"), overwrite=_flag(overwrite, "overwrite"), predict=_flag(predict, "predict"))


def compare(run_dirs: Sequence[str | Path], output: str | Path | None = None, *, overwrite: bool = False):
    """Compare run directories: metrics (the best per column), config differences, curves; the page written to ``output`` when given.

    Returns a ``trainer.report.build.Report`` whose ``views`` are the runs read;
    ``trainer.report.compare.comparison(report.views)`` is the table ``trainer runs --compare`` prints.
    """
    from trainer.report.build import compare as _compare

    return _compare(_paths(run_dirs, "run_dirs"), _optional_path(output, "output"), overwrite=_flag(overwrite, "overwrite"))
