"""The ``tracking`` section: where a run is reported besides its run directory (MLflow). No TensorFlow, no mlflow here."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field

from trainer.config.base import PathText, _Strict


class MlflowTracking(_Strict):
    """``tracking.mlflow``: each run an MLflow run (docs/tracking.md)."""

    uri: PathText | None = None  # null: sqlite:///<output.dir>/mlflow.db; or http://host:5000, or any MLflow tracking URI
    experiment: Annotated[str, Field(min_length=1)] | None = None  # null: the config's name
    run_name: Annotated[str, Field(min_length=1)] | None = None  # null: the run directory's name
    parent_run_id: Annotated[str, Field(min_length=1)] | None = None  # a sweep's run: this run becomes its child


class TrackingConfig(_Strict):
    mlflow: MlflowTracking | None = None
