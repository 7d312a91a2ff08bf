"""``tracking.json``: which MLflow run a run directory was logged to (stdlib and pydantic only).

A run directory is untrusted, so is its ``tracking.json``: reading it never contacts a host or
opens a database. It only says where the run was logged (the URI with its credentials masked)
and under which run id; trainer connects only to a store the *user* names (``trainer eval RUN
--mlflow URI``, or ``tracking.mlflow`` in the config they pass), and only when that store is the
one recorded here. Limits: a regular file inside the run directory, at most 64 KiB, strict
UTF-8 JSON, the fields below.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trainer.readers import KiB, read_record

TRACKING_FILE = "tracking.json"
TRACKING_LIMIT = 64 * KiB
URI_LIMIT = 2048

# Printable text only: the URI and ids are shown in notices (no terminal escapes, no line breaks,
# no invisible or right-to-left marks that would make the suggested command read differently).
_PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]*$"


class MlflowEntry(BaseModel):
    """``tracking.json``'s ``mlflow`` object."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    run_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]  # MLflow's run ids: uuid4().hex
    experiment_id: Annotated[str, Field(pattern=r"^[0-9A-Za-z_.-]{1,64}$")]
    tracking_uri: Annotated[str, Field(min_length=1, max_length=URI_LIMIT, pattern=_PRINTABLE)]
    parent_run_id: Annotated[str, Field(min_length=1, max_length=256, pattern=_PRINTABLE)] | None = None

    @field_validator("tracking_uri")
    @classmethod
    def _masked(cls, value: str) -> str:
        """Always masked (a file written by an older trainer may hold the credentials themselves)."""
        from trainer.secrets import mask_url

        return mask_url(value)


class TrackingRecord(BaseModel):
    """The whole ``tracking.json``: ``{"mlflow": {...}}``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    mlflow: MlflowEntry


def read_tracking(run_dir: Path | str) -> MlflowEntry | None:
    """The MLflow run ``run_dir`` was logged to; None when it has no ``tracking.json`` (an untracked run).

    Anything else that is not a ``tracking.json`` as trainer writes it is a ``RunDirError`` naming
    the file and the field. Nothing is contacted.
    """
    path = Path(run_dir).absolute() / TRACKING_FILE
    if not os.path.lexists(path):
        return None
    return read_record(TrackingRecord, path, limit=TRACKING_LIMIT, folder=run_dir).mlflow


def tracking_record(run_id: str, experiment_id: str, uri: str, parent_run_id: str | None) -> dict:
    """The content of ``tracking.json`` (the URI masked), checked against the same record its reader uses."""
    entry = MlflowEntry(run_id=run_id, experiment_id=str(experiment_id), tracking_uri=uri, parent_run_id=parent_run_id)
    return TrackingRecord(mlflow=entry).model_dump(mode="json")
