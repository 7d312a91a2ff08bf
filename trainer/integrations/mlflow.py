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

The MLflow run id is kept in ``<run dir>/tracking.json`` with the URI masked: a resumed run
continues its MLflow run, and ``trainer eval RUN --mlflow URI`` adds its report and confusion
matrix to it (``open_tracked_run`` + ``log_evaluation``). A run directory is untrusted: its
``tracking.json`` never chooses where trainer connects; only a URI the user names does, and only
when it is the store ``tracking.json`` names. If the tracker fails mid-run, the logger raises once
(the run's event bus turns that into one warning) and stays quiet for the rest of the run;
training goes on.

Credentials: every URI shown, stored, or sent to MLflow as a parameter goes through
``trainer.secrets.mask_url``; the URI itself (or MLflow's ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD`` / ``MLFLOW_TRACKING_TOKEN``, which trainer never sets) reaches only
MLflow's client. A URI holding a masked credential (``***``, as copied from a stored file) is refused.

Sweeps: ``parent_run(config, name)`` opens a parent MLflow run; trials trained with
``tracking.mlflow.parent_run_id=<its id>`` become its children. ``mlflow`` is imported lazily.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shlex
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from trainer.errors import BadInputError, ConfigError, RunDirError
from trainer.extras import require_modules
from trainer.readers.tracking_files import TRACKING_FILE, read_tracking, tracking_record
from trainer.run.events import RunEvents, RunResult, RunStartInfo
from trainer.integrations.store_probe import PROBE_SECONDS, probe_database
from trainer.threads import within
from trainer.secrets import MASK, mask_url, scrub, secret_parts, without_credentials

ARTIFACTS = ("model.h5", "config.yaml", "manifest.json", "metrics.json", "history.csv", "curves.png")
MLFLOW_STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "pruned": "FINISHED", "stopped": "FINISHED"}
KEY = "tracking.mlflow.uri"
OPEN_SECONDS = 60.0  # the most opening a store that passed its probe may take (a new SQLite store's migrations take seconds)
CALL_SECONDS = 30.0  # the most trainer eval waits for one MLflow call (MLflow's HTTP client retries for minutes)
CREDENTIALS_HINT = "or leave them out of the URI and set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"


def default_uri(output_dir: str | Path, *, create: bool = True) -> str:
    """``sqlite:///<output.dir>/mlflow.db`` with an absolute path (the folder is created unless ``create`` is false)."""
    folder = Path(output_dir).expanduser().resolve()
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def resolve_uri(config: Any, *, create: bool = True) -> str:
    return config.tracking.mlflow.uri or default_uri(config.output.dir, create=create)


def refuse_masked(uri: str, key: str = KEY) -> None:
    """A URI whose credential is ``***`` was copied from something trainer showed or stored: sending ``***`` is never meant."""
    if MASK in secret_parts(uri):
        raise ConfigError(
            f"{key}: {uri} holds a masked credential ({MASK}), as trainer shows and stores URIs; put the real one in its place, "
            f"{CREDENTIALS_HINT} in the environment."
        )


def store_identity(uri: str) -> str:
    """Which tracking store ``uri`` names, credentials and query aside (SQLite and file paths absolute): how two URIs are compared."""
    masked = mask_url(uri).strip()
    if masked.startswith("sqlite:///"):
        return "sqlite:///" + _absolute(masked[len("sqlite:///"):].split("?", 1)[0])
    try:
        parts = urlsplit(masked)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port that is not a number, brackets that do not close
        return masked.rstrip("/")
    if not parts.scheme or len(parts.scheme) == 1:  # a plain path (a Windows drive letter too): MLflow's file store
        return "file://" + _absolute(masked)
    if parts.scheme.lower() == "file":
        return "file://" + _absolute(parts.path)
    return f"{parts.scheme.lower()}://{host.lower()}{port}{parts.path.rstrip('/')}"


def _absolute(path: str) -> str:
    """An absolute, normalised path without touching the disk (no link is followed: the path may come from an untrusted file)."""
    return os.path.normpath(os.path.abspath(os.path.expanduser(path))) if path else path


def stored_uri(uri: str) -> str:
    """The URI as ``tracking.json`` keeps it: masked, and a relative SQLite path made absolute (a later command may run elsewhere)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path, _, query = uri[len("sqlite:///"):].partition("?")
        uri = "sqlite:///" + str(Path(path).expanduser().resolve()) + (f"?{query}" if query else "")
    return mask_url(uri)


def _reason(exc: BaseException, uri: str) -> str:
    """The first line of an exception's message, credentials of ``uri`` removed wherever they appear."""
    text = str(exc).splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return scrub(text, [uri])


def artifact_root(uri: str) -> str | None:
    """For a SQLite store, artifacts go to ``mlartifacts/`` beside the database (MLflow's default is ./mlruns in the working directory)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return None


def probe_store(uri: str, key: str = KEY, error: type[BadInputError] = ConfigError) -> None:
    """Any tracking store must answer within seconds before MLflow gets it (MLflow retries for minutes).

    A server: its health endpoint (``probe_server``); a database: a TCP connection to its host and
    port; SQLite: a usable file or folder (``trainer.integrations.store_probe``). Other schemes are
    bounded by ``OPEN_SECONDS`` around their first call.
    """
    if uri.lower().startswith(("http://", "https://")):
        probe_server(uri, key, error)
    else:
        probe_database(uri, key, error)


def probe_server(uri: str, key: str = KEY, error: type[BadInputError] = ConfigError) -> None:
    """An HTTP tracking server must answer within seconds (MLflow's own client retries for minutes)."""
    try:  # the probe needs no credentials (a 401 means reachable): user info, query and fragment are left out
        parts = urlsplit(without_credentials(uri))
        host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname or ""
        target = parts._replace(netloc=host + (f":{parts.port}" if parts.port else ""), query="", fragment="").geturl()
        with urllib.request.urlopen(target.rstrip("/") + "/health", timeout=PROBE_SECONDS):
            return
    except urllib.error.HTTPError:
        return  # it answered (authentication or a proxy in front): reachable
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = scrub(getattr(exc, "reason", None) or exc, [uri])
        raise error(
            f"{key}: cannot reach the MLflow server {mask_url(uri)} ({reason}); start it (mlflow server --host 127.0.0.1 --port 5000), "
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
        raise ConfigError(f"{KEY}: {mask_url(uri)!r} cannot be used as an MLflow tracking store: {_reason(exc, uri)}") from None
    if experiment.lifecycle_stage == "deleted":
        raise ConfigError(
            f"tracking.mlflow.experiment: the experiment {name!r} is deleted in {mask_url(uri)}; restore it "
            f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) or choose another name."
        )
    return experiment.experiment_id


def connect(config: Any) -> "MlflowLogger":
    """Check ``config.tracking.mlflow`` (mlflow installed, URI reachable, experiment usable) and return the logger."""
    tracking = config.tracking.mlflow
    uri = resolve_uri(config)
    refuse_masked(uri)
    require_modules(("mlflow",), "mlflow", "tracking.mlflow")
    probe_store(uri)

    def open_store() -> tuple[Any, str]:
        try:
            client = _client(uri)
        except Exception as exc:  # noqa: BLE001 - an unknown URI scheme and the like
            raise ConfigError(f"{KEY}: {mask_url(uri)!r} cannot be used as an MLflow tracking store: {_reason(exc, uri)}") from None
        return client, open_experiment(client, uri, tracking.experiment or config.name)

    client, experiment_id = within(
        OPEN_SECONDS, open_store, f"{KEY}: the MLflow tracking store {mask_url(uri)} did not answer within {OPEN_SECONDS:g} s; "
        "check it, or set tracking.mlflow.uri: null for a local SQLite store in output.dir.", ConfigError,
    )
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


class MlflowLogger(RunEvents):
    """Logs one trainer run to one MLflow run through the tracking client (no global MLflow state)."""

    def __init__(self, client: Any, uri: str, experiment_id: str, *, run_name: str | None = None, parent_run_id: str | None = None):
        self.client, self.experiment_id = client, experiment_id
        self.uri = mask_url(uri)  # what is shown and stored; the client alone holds the URI with its credentials
        self._store = store_identity(uri)
        self._secrets = (uri,)
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
            reason = _reason(exc, self._secrets[0])
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
            stored = self._stored_run() if info.resumed else None
            known: dict[str, str] = {}
            if stored is not None and store_identity(stored.tracking_uri) == self._store:
                self.run_id = stored.run_id
                self.client.update_run(self.run_id, status="RUNNING")
                known = dict(self.client.get_run(self.run_id).data.params)
            else:
                tags = {"run_dir": str(self.run_dir.resolve()), "trainer_version": __version__, "status": "running"}
                if self.parent_run_id:
                    tags["mlflow.parentRunId"] = self.parent_run_id
                run = self.client.create_run(self.experiment_id, run_name=self.run_name or self.run_dir.name, tags=tags)
                self.run_id = run.info.run_id
                atomic_write_json(self.run_dir / TRACKING_FILE, tracking_record(
                    self.run_id, self.experiment_id, stored_uri(self._secrets[0]), self.parent_run_id))
            self.client.set_tag(self.run_id, "status", "running")
            # a resumed run keeps its first values (MLflow refuses to change a parameter; train.epochs may have grown);
            # every value masked: the config may hold URLs with credentials (this URI, a sweep's storage)
            params = [Param(k, v[:6000]) for k, v in flatten(info.config.to_dict(masked=True)).items() if k not in known]
            for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per call
                self.client.log_batch(self.run_id, params=params[start:start + 100])

    def _stored_run(self):
        """The resumed run's tracking.json (untrusted: only its run id is used, and only in the store the config names)."""
        try:
            return read_tracking(self.run_dir)
        except RunDirError as error:
            raise RunDirError(f"{error.message} Remove it to log the resumed run as a new MLflow run.") from None

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
        """Log the end (test metrics, artifacts, tags) and always end the MLflow run in a final state.

        Whatever failed before or here (an artifact upload, the store mid-run), the run is still
        ended: FINISHED, FAILED or KILLED as the trainer run ended, FAILED with a ``tracking_error``
        tag when MLflow's record of it is incomplete. Only a store that does not answer at all leaves
        it RUNNING (each of these calls is given ``CALL_SECONDS``).
        """
        if self.run_id is None:
            return
        status = MLFLOW_STATUS.get(result.status, "FINISHED")
        failure: BaseException | None = None
        incomplete = self.disabled  # a failure mid-run was reported then; the record misses what came after
        if not self.disabled:
            try:
                with self._guarded():
                    self._log_numbers(result.metrics.get("test") or {}, step=int(result.metrics.get("epochs_completed") or len(result.history)), prefix="test_")
                    for name in ARTIFACTS:
                        path = self.run_dir / name
                        if path.is_file():
                            self.client.log_artifact(self.run_id, str(path))
                    self.client.set_tag(self.run_id, "status", result.status)
                    if result.reason:
                        self.client.set_tag(self.run_id, "reason", scrub(result.reason, self._secrets)[:5000])
            except RuntimeError as exc:  # the first failure, raised once below for the event bus to report
                failure, incomplete = exc, True
        if incomplete:
            status = "FAILED" if status == "FINISHED" else status
        self._end(status, failure, result.status)
        if failure is not None:
            raise failure

    def _end(self, status: str, failure: BaseException | None, trainer_status: str) -> None:
        """End the MLflow run (``status``), each call bounded; a store that fails here cannot change the outcome."""
        uri, run_id = self._secrets[0], self.run_id

        def end() -> None:
            if failure is not None:
                with contextlib.suppress(Exception):  # the record is incomplete: say why, where the store still answers
                    self.client.set_tag(run_id, "tracking_error", scrub(failure.__cause__ or failure, self._secrets)[:5000])
                    self.client.set_tag(run_id, "status", trainer_status)
            terminate(self.client, uri, run_id, status)

        try:
            within(CALL_SECONDS, end, f"MLflow at {self.uri} did not answer within {CALL_SECONDS:g} s while ending run {run_id}")
        except Exception:  # noqa: BLE001 - reported by the failure raised after this, or by the one raised mid-run
            if failure is None and not self.disabled:
                raise


@dataclass
class TrackedRun:
    """The MLflow run a run directory was logged to, opened in a store the user named."""

    client: Any
    run_id: str
    uri: str  # masked
    key: str  # the option that named the store: --mlflow, tracking.mlflow.uri
    secrets: tuple[str, ...]
    required: bool = True  # asked for (--mlflow, --set): a failure exits 2; else one notice


def evaluation_hint(run_dir: Path) -> str | None:
    """What ``trainer eval`` says about a tracked run it was not asked to log to; None for an untracked run.

    Reads ``tracking.json`` and nothing else: no host is contacted, no database opened. Never raises.
    """
    try:
        stored = read_tracking(run_dir)
    except RunDirError as error:
        return f"not logged to MLflow: {error.message}"
    if stored is None:
        return None
    hint = f"trainer eval {shlex.quote(str(run_dir))} --mlflow {shlex.quote(stored.tracking_uri)}"
    credentials = f" (with the credentials in place of {MASK}, {CREDENTIALS_HINT})" if MASK in secret_parts(stored.tracking_uri) else ""
    return (
        f"not logged to MLflow: the run was logged to MLflow run {stored.run_id} at {stored.tracking_uri} ({TRACKING_FILE}); "
        f"trainer connects only to a tracking store you name. To add this report to it: {hint}{credentials}"
    )


def open_tracked_run(run_dir: Path, uri: str, key: str) -> TrackedRun:
    """The run's MLflow run in the store at ``uri`` (named by the user through ``key``), checked before anything is evaluated.

    ``uri`` must name the store ``tracking.json`` names (credentials aside), a SQLite or file store
    must exist (opening a missing one would create it), a server must answer its health check
    and a database a TCP connection within 5 s (``probe_store``), and the store must hold the run; otherwise a ``BadInputError`` naming ``key``.
    Every MLflow call is bounded by ``CALL_SECONDS``.
    """
    refuse_masked(uri, key)
    stored = read_tracking(run_dir)
    if stored is None:
        raise BadInputError(
            f"{key}: {Path(run_dir) / TRACKING_FILE} is missing: the run was trained without tracking.mlflow, "
            "so it has no MLflow run to add the report to."
        )
    shown = mask_url(uri)
    if store_identity(uri) != store_identity(stored.tracking_uri):
        raise BadInputError(
            f"{key}: {shown} is not the tracking store this run was logged to ({stored.tracking_uri}, in "
            f"{Path(run_dir) / TRACKING_FILE}); name that one."
        )
    _check_store_exists(uri, key)
    require_modules(("mlflow",), "mlflow", key)
    probe_store(uri, key, BadInputError)
    tracked = TrackedRun(None, stored.run_id, shown, key, (uri,))
    try:
        tracked.client = _client(uri)
    except Exception as exc:  # noqa: BLE001 - an unknown URI scheme and the like
        raise BadInputError(f"{key}: {shown!r} cannot be used as an MLflow tracking store: {_reason(exc, uri)}") from None
    run = _bounded(tracked, "looking the run up", lambda: tracked.client.get_run(stored.run_id))
    if run.info.lifecycle_stage == "deleted":
        raise BadInputError(f"{key}: MLflow run {stored.run_id} is deleted in {shown}; restore it (mlflow runs restore --run-id {stored.run_id}).")
    return tracked


def _check_store_exists(uri: str, key: str) -> None:
    """A SQLite database or file store that is not there would be created by MLflow: refused instead."""
    identity = store_identity(uri)
    if identity.startswith("sqlite:///"):
        path, kind = Path(identity[len("sqlite:///"):]), "file"
    elif identity.startswith("file://"):
        path, kind = Path(identity[len("file://"):]), "folder"
    else:
        return
    if not (path.is_file() if kind == "file" else path.is_dir()):
        raise BadInputError(f"{key}: no MLflow store at {mask_url(uri)}: {path} is not a {kind}, and opening it would create an empty one.")


class _NoAnswer(BadInputError):
    """``_bounded``'s own timeout, told apart from an error the call itself raised."""


def _bounded(tracked: TrackedRun, what: str, call: Callable[[], Any]) -> Any:
    """``call()`` given at most ``CALL_SECONDS`` (``within``); a failure or a wait past it is a ``BadInputError`` naming the store.

    MLflow's HTTP client retries a failing request for minutes and is configured only through
    environment variables, which library code leaves to its caller.
    """
    try:
        return within(
            CALL_SECONDS, call,
            f"{tracked.key}: the MLflow tracking store at {tracked.uri} did not answer within {CALL_SECONDS:g} s ({what}); "
            "check the server, or try again.",
            _NoAnswer,
        )
    except (_NoAnswer, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # noqa: BLE001 - whatever MLflow raised, named as the store's failure
        if getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            raise BadInputError(f"{tracked.key}: the MLflow store at {tracked.uri} has no run {tracked.run_id} (named by {TRACKING_FILE}).") from None
        raise BadInputError(f"{tracked.key}: MLflow at {tracked.uri} failed while {what}: {_reason(error, tracked.secrets[0])}") from None


def log_evaluation(tracked: TrackedRun, files: list[Path], metrics: dict[str, Any], split: str) -> str:
    """Add ``trainer eval``'s report, confusion matrix and ``eval_<split>_*`` numbers to the tracked run; returns its id.

    A failure (or no answer within ``CALL_SECONDS`` per call) is a ``BadInputError`` that says the files are written.
    """
    logger = MlflowLogger(tracked.client, tracked.secrets[0], "")
    logger.run_id = tracked.run_id
    try:
        for path in files:
            _bounded(tracked, f"uploading {path.name}", lambda path=path: tracked.client.log_artifact(tracked.run_id, str(path)))
        _bounded(tracked, "logging the metrics", lambda: logger._log_numbers(metrics, step=0, prefix=f"eval_{split}_"))
    except BadInputError as error:
        raise BadInputError(f"{error.message} Not logged to MLflow; the report files are complete: {', '.join(str(p) for p in files)}.") from None
    return tracked.run_id


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
    """End a sweep's parent run: FINISHED, FAILED or KILLED (given ``CALL_SECONDS``)."""
    uri = resolve_uri(config)
    within(
        CALL_SECONDS, lambda: terminate(_client(uri), uri, run_id, status),
        f"MLflow at {mask_url(uri)} did not answer within {CALL_SECONDS:g} s while ending the sweep's run {run_id}",
    )


def terminate(client: Any, uri: str, run_id: str, status: str) -> None:
    """``client.set_terminated``; MLflow's own "View run at <URI>" line is dropped when the URI holds credentials.

    MLflow writes that link straight to ``sys.stdout`` with the URI as given, password and all.
    """
    if mask_url(uri) == uri:
        client.set_terminated(run_id, status=status)
        return
    with contextlib.redirect_stdout(io.StringIO()):
        client.set_terminated(run_id, status=status)


@contextlib.contextmanager
def ends_run(config: Any, run_id: str) -> Iterator[str]:
    """End the MLflow run ``run_id`` with the block: FINISHED, KILLED on Ctrl-C, FAILED on an error."""
    from trainer.errors import RunInterrupted

    try:
        yield run_id
    except (KeyboardInterrupt, RunInterrupted):
        _end_quietly(config, run_id, "KILLED")
        raise
    except BaseException:
        _end_quietly(config, run_id, "FAILED")
        raise
    end_parent_run(config, run_id, "FINISHED")


def _end_quietly(config: Any, run_id: str, status: str) -> None:
    """End the parent run while another exception propagates: a failing store must not replace that exception."""
    with contextlib.suppress(Exception):
        end_parent_run(config, run_id, status)


def parent_run(config: Any, name: str, tags: dict[str, str] | None = None) -> contextlib.AbstractContextManager[str]:
    """A parent MLflow run for a sweep; yields its id, ends FINISHED (FAILED on an exception, KILLED on Ctrl-C)."""
    return ends_run(config, open_parent_run(config, name, tags=tags))
