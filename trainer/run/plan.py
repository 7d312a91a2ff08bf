"""The plan of a run: everything decided before TensorFlow starts, computed once and handed down.

``trainer.api.plan_training`` loads the config once, resolves the labels and loss
(``plan_run``), the runtime set-up (backend, distribution), the run directory and, for
``--resume``, the checkpoint to continue; ``Training`` and every step after it read this plan
instead of computing any of it again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.config import Config


@dataclass(frozen=True)
class TrainingPlan:
    """One run, decided: what trains, how its labels and loss resolve, where it runs and where it writes."""

    config: Config
    labels: Any  # trainer.config.checks.Plan: label encoding, loss and its parameters, the pre-flight notices
    setup: Any  # trainer.runtime.distribute.DistributeSetup: backend, devices, this process's place
    run_dir: Path | None  # with unique_name, the name a free folder is reserved near when the run starts
    unique_name: bool = False
    resume: Any = None  # trainer.run.checkpoint.ResumeState: the checkpoint --resume continues (checked)
    dry_run: bool = False
    feature_cache: Path | None = None  # a folder shared with other runs (a sweep's trials), else None
