"""MLflow tracking through run events: each run an MLflow run; the run directory stays the source of truth.

``connect(config)`` checks ``tracking.mlflow`` before any data is read (an unreachable server or
a bad URI is a ``ConfigError`` naming ``tracking.mlflow.uri``, exit 2) and returns an
``MlflowLogger``, the run-event handler that logs:

- parameters: the resolved config flattened to dotted keys (``train.batch_size``);
- one value per epoch of every ``history.csv`` column, with ``step=epoch``;
- the test metrics as ``test_<name>``; the artifacts ``model.h5``, ``config.yaml``, ``manifest.json``,
  ``metrics.json``, ``history.csv``, ``curves.png``;
- tags ``status``, ``reason``, ``run_dir``, ``trainer_version``; the MLflow status FINISHED,
  FAILED (failed) or KILLED (interrupted).

The MLflow run id is kept in ``<run dir>/tracking.json``: a resumed run continues its MLflow run,
and ``trainer eval`` adds its report and confusion matrix to it (``log_evaluation``). If the
tracker fails mid-run, the logger raises once (the run's event bus turns that into one warning)
and stays quiet for the rest of the run; training goes on.

Sweeps: ``parent_run(config, name)`` opens a parent MLflow run; trials trained with
``tracking.mlflow.parent_run_id=<its id>`` become its children. ``mlflow`` is imported lazily.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from trainer.errors import ConfigError
from trainer.extras import require_modules
from trainer.run.events import RunEvents, RunResult, RunStartInfo

TRACKING_FILE = "tracking.json"
ARTIFACTS = ("model.h5", "config.yaml", "manifest.json", "metrics.json", "history.csv", "curves.png")
MLFLOW_STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "pruned": "FINISHED", "stopped": "FINISHED"}
KEY = "tracking.mlflow.uri"
PROBE_SECONDS = 5.0


def default_uri(output_dir: str | Path) -> str:
    """``sqlite:///<output.dir>/mlflow.db`` with an absolute path (the folder is created)."""
    folder = Path(output_dir).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def resolve_uri(config: Any) -> str:
    return config.tracking.mlflow.uri or default_uri(config.output.dir)


def artifact_root(uri: str) -> str | None:
    """For a SQLite store, artifacts go to ``mlartifacts/`` beside the database (MLflow's default is ./mlruns in the working directory)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return None


def probe_server(uri: str) -> None:
    """An HTTP tracking server must answer within seconds (MLflow's own client retries for minutes)."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_SECONDS):
            return
    except urllib.error.HTTPError:
        return  # it answered (authentication or a proxy in front): reachable
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ConfigError(
            f"{KEY}: cannot reach the MLflow server {uri} ({reason}); start it (mlflow server --host 127.0.0.1 --port 5000), "
            "fix the URI, or set tracking.mlflow.uri: null for a local SQLite store in output.dir."
        ) from None


def _client(uri: str):
    require_modules(("mlflow",), "mlflow", "tracking.mlflow")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def open_experiment(client: Any, uri: str, name: str) -> str:
    """The experiment's id, created when new; any failure of the store is a ConfigError naming the URI."""
    try:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            return client.create_experiment(name, artifact_location=artifact_root(uri))
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types for a bad or unreachable store
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise ConfigError(f"{KEY}: {uri!r} cannot be used as an MLflow tracking store: {reason}") from None
    if experiment.lifecycle_stage == "deleted":
        raise ConfigError(
            f"tracking.mlflow.experiment: the experiment {name!r} is deleted in {uri}; restore it "
            f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) or choose another name."
        )
    return experiment.experiment_id


def connect(config: Any) -> "MlflowLogger":
    """Check ``config.tracking.mlflow`` (mlflow installed, URI reachable, experiment usable) and return the logger."""
    tracking = config.tracking.mlflow
    uri = resolve_uri(config)
    require_modules(("mlflow",), "mlflow", "tracking.mlflow")
    if uri.startswith(("http://", "https://")):
        probe_server(uri)
    try:
        client = _client(uri)
    except Exception as exc:  # noqa: BLE001 - an unknown URI scheme and the like
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise ConfigError(f"{KEY}: {uri!r} cannot be used as an MLflow tracking store: {reason}") from None
    experiment_id = open_experiment(client, uri, tracking.experiment or config.name)
    return MlflowLogger(client, uri, experiment_id, run_name=tracking.run_name, parent_run_id=tracking.parent_run_id)


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """A nested config as ``{"train.batch_size": "32", "model.hidden_units": "[16]"}`` (lists of sections get indices)."""
    if isinstance(value, dict):
        items: dict[str, str] = {}
        for key, inner in value.items():
            items.update(flatten(inner, f"{prefix}{key}."))
        return items
    if isinstance(value, list) and any(isinstance(item, dict) for item in value):
        items = {}
        for index, inner in enumerate(value):
            items.update(flatten(inner, f"{prefix}{index}."))
        return items
    text = value if isinstance(value, str) else json.dumps(value)
    return {prefix.rstrip("."): text}


def read_tracking_file(run_dir: Path) -> dict[str, Any] | None:
    """The MLflow run a run directory was logged to, or None (missing, unreadable or not a regular small file)."""
    from trainer.run.rundir import read_json

    try:
        data = read_json(Path(run_dir) / TRACKING_FILE)
    except (OSError, ValueError, RecursionError):
        return None
    entry = data.get("mlflow") if isinstance(data, dict) else None
    return entry if isinstance(entry, dict) and isinstance(entry.get("run_id"), str) else None


class MlflowLogger(RunEvents):
    """Logs one trainer run to one MLflow run through the tracking client (no global MLflow state)."""

    def __init__(self, client: Any, uri: str, experiment_id: str, *, run_name: str | None = None, parent_run_id: str | None = None):
        self.client, self.uri, self.experiment_id = client, uri, experiment_id
        self.run_name, self.parent_run_id = run_name, parent_run_id
        self.run_id: str | None = None
        self.run_dir: Path | None = None
        self.disabled = False

    @contextlib.contextmanager
    def _guarded(self) -> Iterator[None]:
        """After the first failure the logger goes quiet; that failure is raised once for the event bus to report."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - the tracker must never stop training
            self.disabled = True
            reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise RuntimeError(
                f"MLflow tracking at {self.uri} failed ({reason}); nothing more is logged to MLflow for this run, "
                "the run directory is complete"
            ) from exc

    def on_run_start(self, info: RunStartInfo) -> None:
        if self.disabled or info.run_dir is None:  # a dry run, or a process other than 0
            return
        with self._guarded():
            from mlflow.entities import Param

            from trainer import __version__
            from trainer.run.rundir import atomic_write_json

            self.run_dir = Path(info.run_dir)
            stored = read_tracking_file(self.run_dir) if info.resumed else None
            known: dict[str, str] = {}
            if stored and stored.get("tracking_uri") == self.uri:
                self.run_id = stored["run_id"]
                self.client.update_run(self.run_id, status="RUNNING")
                known = dict(self.client.get_run(self.run_id).data.params)
            else:
                tags = {"run_dir": str(self.run_dir.resolve()), "trainer_version": __version__, "status": "running"}
                if self.parent_run_id:
                    tags["mlflow.parentRunId"] = self.parent_run_id
                run = self.client.create_run(self.experiment_id, run_name=self.run_name or self.run_dir.name, tags=tags)
                self.run_id = run.info.run_id
                atomic_write_json(self.run_dir / TRACKING_FILE, {"mlflow": {
                    "run_id": self.run_id, "experiment_id": self.experiment_id, "tracking_uri": self.uri,
                    "parent_run_id": self.parent_run_id,
                }})
            self.client.set_tag(self.run_id, "status", "running")
            # a resumed run keeps its first values (MLflow refuses to change a parameter; train.epochs may have grown)
            params = [Param(k, v[:6000]) for k, v in flatten(info.config.to_dict()).items() if k not in known]
            for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per call
                self.client.log_batch(self.run_id, params=params[start:start + 100])

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if self.disabled or self.run_id is None:
            return
        with self._guarded():
            self._log_numbers({k: v for k, v in logs.items() if k != "epoch"}, step=epoch)

    def _log_numbers(self, values: dict[str, Any], step: int, prefix: str = "") -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(f"{prefix}{key}", float(value), now, step)
            for key, value in values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def on_run_end(self, result: RunResult) -> None:
        if self.disabled or self.run_id is None:
            return
        with self._guarded():
            self._log_numbers(result.metrics.get("test") or {}, step=int(result.metrics.get("epochs_completed") or len(result.history)), prefix="test_")
            for name in ARTIFACTS:
                path = self.run_dir / name
                if path.is_file():
                    self.client.log_artifact(self.run_id, str(path))
            self.client.set_tag(self.run_id, "status", result.status)
            if result.reason:
                self.client.set_tag(self.run_id, "reason", result.reason[:5000])
            self.client.set_terminated(self.run_id, status=MLFLOW_STATUS.get(result.status, "FINISHED"))


def log_evaluation(run_dir: Path, files: list[Path], metrics: dict[str, Any], split: str) -> str | None:
    """Add ``trainer eval``'s report, confusion matrix and ``eval_<split>_*`` numbers to the run's MLflow run.

    Returns the MLflow run id, or None when the run has no ``tracking.json``. MLflow errors propagate.
    """
    stored = read_tracking_file(run_dir)
    if stored is None:
        return None
    client = _client(stored["tracking_uri"])
    logger = MlflowLogger(client, stored["tracking_uri"], stored.get("experiment_id", ""))
    logger.run_id = stored["run_id"]
    for path in files:
        client.log_artifact(logger.run_id, str(path))
    logger._log_numbers(metrics, step=0, prefix=f"eval_{split}_")
    return logger.run_id


def open_parent_run(config: Any, name: str, run_id: str | None = None, tags: dict[str, str] | None = None) -> str:
    """A sweep's parent MLflow run: created (or, given ``run_id``, reopened as RUNNING); returns its id.

    Each trial trained with ``tracking.mlflow.parent_run_id=<id>`` is logged as its child run.
    """
    logger = connect(config)
    if run_id is not None:
        logger.client.update_run(run_id, status="RUNNING")
        return run_id
    run = logger.client.create_run(logger.experiment_id, run_name=name, tags={"trainer_kind": "sweep", **(tags or {})})
    return run.info.run_id


def end_parent_run(config: Any, run_id: str, status: str) -> None:
    """End a sweep's parent run: FINISHED, FAILED or KILLED."""
    _client(resolve_uri(config)).set_terminated(run_id, status=status)


@contextlib.contextmanager
def ends_run(config: Any, run_id: str) -> Iterator[str]:
    """End the MLflow run ``run_id`` with the block: FINISHED, KILLED on Ctrl-C, FAILED on an error."""
    from trainer.errors import RunInterrupted

    try:
        yield run_id
    except (KeyboardInterrupt, RunInterrupted):
        end_parent_run(config, run_id, "KILLED")
        raise
    except BaseException:
        end_parent_run(config, run_id, "FAILED")
        raise
    end_parent_run(config, run_id, "FINISHED")


def parent_run(config: Any, name: str, tags: dict[str, str] | None = None) -> contextlib.AbstractContextManager[str]:
    """A parent MLflow run for a sweep; yields its id, ends FINISHED (FAILED on an exception, KILLED on Ctrl-C)."""
    return ends_run(config, open_parent_run(config, name, tags=tags))
