"""``trainer eval --mlflow`` / ``trainer.evaluate(mlflow=...)``: which MLflow run an evaluation is logged to, and the logging.

Here, in ``integrations/`` (above ``inference/``), so that evaluation itself never imports a tracker
(docs/architecture.md); ``trainer.api.evaluation`` calls both.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


TRACKING_KEYS = ("tracking", "tracking.mlflow", "tracking.mlflow.uri")


def open_named_tracking(run_dir: Path, flag: str | None, config: Path | None, overrides: list[str], on_notice: Any):
    """The run's MLflow run in the store the user named; None when none is named (or, named by --config only, it cannot be used).

    ``--mlflow URI`` and ``--set tracking.mlflow...`` ask for tracking: any refusal exits 2. A
    ``--config`` whose ``tracking.mlflow`` names a store is the tracking of the user's own config:
    a refusal is one notice, and eval goes on (the tracker is optional). The run directory's own
    config.yaml and tracking.json never choose where eval connects.
    """
    from trainer.integrations.mlflow import open_tracked_run

    if flag is not None:
        return open_tracked_run(run_dir, flag, "--mlflow")
    named = [o for o in overrides if o.split("=", 1)[0].strip() in TRACKING_KEYS]
    if config is None and not named:
        return None
    from trainer.config import load_config
    from trainer.errors import BadInputError
    from trainer.integrations.mlflow import resolve_uri
    from trainer.readers.tracking_files import TRACKING_FILE

    # the user's own inputs only: their --config (or the defaults) and their tracking/output overrides
    own = load_config(config, named + [o for o in overrides if o.split("=", 1)[0].strip().startswith("output.")])
    if own.tracking.mlflow is None:
        return None
    uri = resolve_uri(own, create=False)
    if named:
        return open_tracked_run(run_dir, uri, "tracking.mlflow.uri")
    if not (run_dir / TRACKING_FILE).exists():
        on_notice(f"not logged to MLflow: {run_dir / TRACKING_FILE} is missing (the run was trained without tracking).")
        return None
    try:
        tracked = open_tracked_run(run_dir, uri, f"tracking.mlflow.uri (of {config})")
    except BadInputError as error:
        on_notice(f"not logged to MLflow: {error.message}")
        return None
    tracked.required = False
    return tracked


def log_report(tracked: Any, files: list[Path], metrics: dict[str, Any], split: str, on_notice: Any) -> str | None:
    """Add the report to the MLflow run; returns its id. A failure raises when tracking was asked for, else it is a notice (None)."""
    from trainer.errors import BadInputError
    from trainer.integrations.mlflow import log_evaluation

    try:
        return log_evaluation(tracked, files, metrics, split)
    except BadInputError as error:
        if tracked.required:
            raise
        on_notice(error.message)
        return None
