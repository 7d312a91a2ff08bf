"""Open a finished run: its config, manifest and model (with its custom objects), ready to evaluate or predict.

``load_run`` reads a run directory (config.yaml, manifest.json, model.h5) or a model file plus
its config. Nothing here prints.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.config import Config, load_config
from trainer.errors import ConfigError, RunDirError
from trainer.paths import inside, user_path
from trainer.readers.records import Manifest
from trainer.readers.run_files import CONFIG_FILE, LAST_FILE, MODEL_FILE


@dataclass
class LoadedRun:
    """A trained model with everything needed to feed it and name its classes."""

    config: Config
    model: Any  # keras.Model
    model_path: Path
    run_dir: Path  # where outputs go: the run directory, or the model file's folder
    num_classes: int
    class_names: list[str]
    label_encoding: str
    model_output: str  # "softmax" or "logits"
    manifest: Manifest | None = None  # None for a model file loaded with --config

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(height, width, channels) the model takes."""
        return tuple(int(d) for d in self.model.input_shape[1:])

    def class_name(self, index: int) -> str:
        return self.class_names[index] if 0 <= index < len(self.class_names) else str(index)


def _resolve_target(target: Path, config_path: Path | None) -> tuple[Path, Path, Path]:
    """(config file, model file, run directory) for a run directory or a model file + --config."""
    target = user_path(target, "run directory")
    config_path = user_path(config_path, "--config") if config_path is not None else None
    if not target.exists() and target.name == LAST_FILE and (target.parent / CONFIG_FILE).is_file():
        raise RunDirError(_no_last_file(target))
    if not target.exists():
        raise RunDirError(
            f"{target} does not exist; expected a run directory (with {CONFIG_FILE} and {MODEL_FILE}, "
            "as trainer run writes it) or a model file together with --config CONFIG."
        )
    if target.is_dir():
        config_file = Path(config_path) if config_path else inside(target, CONFIG_FILE, f"{target}/{CONFIG_FILE}")
        model_file = inside(target, MODEL_FILE, f"{target}/{MODEL_FILE}")  # a link out of the run directory is refused
        if not config_file.is_file():
            raise RunDirError(
                f"{config_file} is missing; {target} is not a complete run directory "
                f"(expected {CONFIG_FILE} and {MODEL_FILE}, as trainer run writes them)."
            )
        if not model_file.is_file():
            raise RunDirError(
                f"{model_file} is missing; the run in {target} has no saved model "
                "(did it finish? see its metrics.json)."
            )
        return config_file, model_file, target
    if config_path is None and is_run_weights(target):  # RUN/last.h5: the run's last epoch, with the run's config and manifest
        return inside(target.parent, CONFIG_FILE, f"{target.parent}/{CONFIG_FILE}"), inside(target.parent, target.name, str(target)), target.parent
    if config_path is None:
        raise RunDirError(
            f"{target} is a file; a model file needs --config CONFIG (the YAML it was trained with), "
            "or pass the run directory instead."
        )
    return Path(config_path), target, target.parent


def is_run_weights(path: Path) -> bool:
    """``RUN/model.h5`` (the best epoch) or ``RUN/last.h5`` (the last) of a run directory: the run's own config applies."""
    return path.name in (MODEL_FILE, LAST_FILE) and path.is_file() and (path.parent / CONFIG_FILE).is_file()


def _no_last_file(target: Path) -> str:
    """Why a run has no ``last.h5``: its last epoch was the best (``model.h5``), or it did not complete."""
    from trainer.readers.run_files import read_metrics_record

    metrics = read_metrics_record(target.parent)
    best = metrics.best if metrics is not None else None
    if best is not None and best.last_weights == MODEL_FILE:
        return f"{target} does not exist: the last epoch ({best.last_epoch}) was the best by {best.monitor}, so {target.parent / MODEL_FILE} holds it."
    return f"{target} does not exist; a completed run writes it when its last epoch is not the best (see {target.parent / 'metrics.json'})."


def load_model_file(path: Path, objects: dict[str, Any] | None = None):
    """``trainer.models.load_model(path)`` (compiled); an unreadable file is a RunDirError naming it."""
    from trainer.models import load_model

    try:
        return load_model(path, objects, compile=True)
    except Exception as exc:  # noqa: BLE001 - h5py/Keras raise many types for a damaged file
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise RunDirError(
            f"cannot load the model {path}: {reason}. Expected a Keras .h5 model as trainer run saves it "
            "(is the file truncated or still being written?)."
        ) from None


def _folder_classes(config: Config) -> list[str]:
    """Class names of a folder dataset read from its train folder (a model file evaluated with --config)."""
    from trainer.data.folder import list_classes

    return list_classes(Path(config.data.path) / "train") if config.data.path else []


def open_run(target: Path, config_path: Path | None = None) -> tuple[Path, Path, Path, "Manifest | None"]:
    """(config file, model file, run directory, manifest) after every check that needs no TensorFlow:
    paths inside the run directory, a well-formed manifest. ``eval`` and ``predict`` call it first."""
    config_file, model_file, run_dir = _resolve_target(Path(target), config_path)
    manifest = Manifest.read(run_dir) if Path(target).is_dir() or (config_path is None and is_run_weights(Path(target))) else None
    return config_file, model_file, run_dir, manifest


def check_encoding(config: Config, manifest: Manifest | None, encoding: str, where: str) -> None:
    """An eval/predict config (``--config``, ``--set``) must label examples as the model was trained."""
    if manifest is not None and manifest.label_encoding and encoding != manifest.label_encoding:
        raise ConfigError(
            f"{where}: labels.encoding resolves to {encoding} (loss {config.loss.name}), but the model was trained with "
            f"{manifest.label_encoding} labels (manifest.json); use the config the run was trained with, or set "
            f"labels.encoding: {manifest.label_encoding} and a matching loss."
        )
    if manifest is not None and manifest.model_output and config.model.output != manifest.model_output:
        raise ConfigError(
            f"{where}: model.output is {config.model.output}, but the model was trained with {manifest.model_output} outputs "
            "(manifest.json); use the config the run was trained with."
        )


def load_run(
    target: Path, *, config_path: Path | None = None, overrides: list[str] | tuple[str, ...] = (), code_dirs: list[Path] | tuple[Path, ...] = (),
    opened: tuple[Path, Path, Path, "Manifest | None"] | None = None,
) -> LoadedRun:
    """Load a run directory (or a model file + its config) with the run's classes and encoding.

    Custom code the model needs is imported only from ``code_dirs`` (``--code``) and, when
    ``config_path`` is given, from that config's folder and the working directory. ``opened``:
    what ``open_run(target, config_path)`` returned already (its checks are not made twice).
    """
    from trainer.catalogue.user_code import code_dirs_for
    from trainer.models.keras_objects import load_custom_objects
    from trainer.config.checks import plan_run
    from trainer.catalogue.datasets import DATASETS

    config_file, model_file, run_dir, manifest = opened if opened is not None else open_run(target, config_path)
    config = load_config(config_file, list(overrides))
    plan = plan_run(config, training=False)  # a finished run: what it trained with is history
    if config_path is not None or overrides:
        check_encoding(config, manifest, plan.encoding, str(config_path or "--set"))
    allowed = code_dirs_for(code_dirs, config.config_dir if config_path is not None else None)
    info = DATASETS.get(config.data.dataset)  # None for a folder dataset: its classes are its folders
    encoding = (manifest.label_encoding if manifest else None) or plan.encoding
    class_names = list((manifest.class_names if manifest else None) or (info.class_names if info else _folder_classes(config)))
    model_output = (manifest.model_output if manifest else None) or config.model.output
    custom_objects = manifest.custom_objects if manifest else []
    if manifest is None and config_path is not None:
        from trainer.config.overview import check_catalogue  # a bare model file: import what its config names

        custom_objects = check_catalogue(config)
    model = load_model_file(model_file, load_custom_objects({"custom_objects": custom_objects}, allowed))
    if getattr(model, "loss", None) is None:  # saved without its compile state: compile as training did
        from trainer.models.compile import compile_model

        compile_model(model, config, plan)  # the plan made above: planned once
    num_classes = int(model.output_shape[-1])
    if len(class_names) != num_classes:
        class_names = [str(i) for i in range(num_classes)]
    return LoadedRun(config, model, model_file, run_dir, num_classes, class_names, encoding, model_output, manifest)
