"""Where a sweep's trials run: in this process, or in ``workers`` child processes that share the study.

``run_sweep(plan, events, workers=N)`` is what ``trainer.api.sweep`` and ``trainer sweep
--workers N`` call. Children are ``python -m trainer sweep CONFIG --worker`` processes; this
process watches the study, tells ``events`` as trials start and end, and writes the outputs.
The storage URL (which may hold a password) travels to them in ``STORAGE_ENV``, never on a
command line. Nothing here prints.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from trainer.errors import RunInterrupted
from trainer.sweep.events import SweepEvents

POLL_SECONDS = 1.0
STORAGE_ENV = "TRAINER_SWEEP_STORAGE"  # --storage from the environment: how workers get it, and how a password stays off argv
WORKER_SET_ENV = "TRAINER_SWEEP_WORKER_SET"  # a worker's --set values (JSON list) when one holds a credential
INTERRUPTED_CODES = (130, -2, -15)  # a worker stopped by Ctrl-C or SIGTERM


def run_sweep(plan: Any, events: SweepEvents, *, train: Any, workers: int = 1, trial_events: Iterable[Any] = (), worker: bool = False,
              before_trials: Any = None) -> Any:
    """Run the plan's trials here (``workers`` 1) or in ``workers`` child processes; returns the ``SweepSummary``.

    ``worker``: this process is one of a parent's workers: trials only, no outputs (the parent
    writes them); returns None. ``before_trials()``: called before this process trains (Keras's
    start-up). ``train``: ``trainer.api.train``, what each trial calls. Ctrl-C (``KeyboardInterrupt``,
    ``RunInterrupted``) writes what finished, then propagates.
    """
    try:
        if workers > 1 and not worker:
            return run_with_workers(plan, workers, events)
        if before_trials is not None:
            before_trials()
        return run_here(plan, events, train=train, trial_events=trial_events, quiet=worker)
    except (KeyboardInterrupt, RunInterrupted):
        if not worker:
            final_outputs_quietly(plan)
        raise


def run_here(plan: Any, events: SweepEvents, *, train: Any, trial_events: Iterable[Any] = (), quiet: bool = False) -> Any:
    """Trials in this process; returns the summary (outputs written unless ``quiet``: a worker's parent writes them)."""
    from trainer.integrations.optuna import budget_used
    from trainer.sweep.driver import open_plan_study, run_trials
    from trainer.sweep.outputs import write_outputs

    study = open_plan_study(plan)
    if quiet:
        run_trials(plan, events, train=train, study=study)
        return None
    events.on_sweep_start(plan.start_info(budget_used(study)))
    with tracked_sweep(plan, study):
        try:
            run_trials(plan, events, train=train, trial_events=list(trial_events), study=study, after_trial=lambda s: write_outputs(plan, s, final=False))
        finally:
            events.on_sweep_end()
    return write_outputs(plan, study)


def tracked_sweep(plan: Any, study: Any):
    """With tracking.mlflow: the sweep's parent MLflow run is open while trials run; FINISHED, or KILLED on Ctrl-C."""
    from trainer.sweep.driver import tracking_parent

    run_id = tracking_parent(plan, study)
    if run_id is None:
        return contextlib.nullcontext()
    from trainer.integrations.mlflow import ends_run

    return ends_run(plan.trial_config, run_id)


def final_outputs_quietly(plan: Any) -> None:
    """After Ctrl-C: what finished is still written (a second Ctrl-C here skips it)."""
    from trainer.sweep.outputs import write_outputs

    try:
        write_outputs(plan, final=False)
    except Exception:  # noqa: BLE001 - the interrupt is what the user must see
        pass


# --------------------------------------------------------------------------- several processes


def run_with_workers(plan: Any, workers: int, events: SweepEvents) -> Any:
    """``workers`` child processes run trials against the study; this one tells ``events`` as they finish and writes the outputs."""
    from trainer.errors import BadInputError
    from trainer.integrations.optuna import budget_used, fail_lost_trials
    from trainer.sweep.driver import open_plan_study

    if plan.config_file is None:
        raise BadInputError("workers: worker processes read the config from its YAML file; pass the config as a path (or workers=1).")
    live = open_plan_study(plan)  # created here once, before the workers race to create it
    for number in fail_lost_trials(live):
        events.on_notice(f"trial {number} was left running by a process that stopped; it is marked lost and its budget re-used.")
    events.on_sweep_start(plan.start_info(budget_used(live), workers))
    seen = {t.number: t.state.name for t in live.get_trials(deepcopy=False)}
    command, env = worker_command(plan, plan.config_file, list(plan.overrides))
    # Own sessions: a Ctrl-C in the terminal reaches this process only, which then stops each worker once (SIGTERM)
    with tracked_sweep(plan, live):  # the parent MLflow run exists before the workers look for it in the study
        return _watch_workers(plan, live, events, seen, command, env, workers)


def worker_command(plan: Any, config: Path, overrides: list[str], base_env: Mapping[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """A worker process's command line and environment: the storage travels in STORAGE_ENV, never on the command line (``ps``)."""
    from trainer.secrets import has_secret, secret_env

    hidden = any(has_secret(o) for o in overrides)  # all of them, in order: later --set values win
    command = [sys.executable, "-m", "trainer", "sweep", str(config), *(a for o in ([] if hidden else overrides) for a in ("--set", o)),
               "--sweep-dir", str(plan.sweep_dir), "--study", plan.study_name, "--trials", str(plan.budget), "--worker"]
    env = {k: v for k, v in (os.environ if base_env is None else base_env).items() if k not in (STORAGE_ENV, WORKER_SET_ENV)}
    if hidden:
        env = secret_env(WORKER_SET_ENV, json.dumps(overrides), env)
    return command, secret_env(STORAGE_ENV, plan.storage, env) if plan.storage else env


def worker_overrides(environ: Mapping[str, str] | None = None) -> list[str]:
    """A worker's --set values that its parent passed in WORKER_SET_ENV (one of them held a credential)."""
    from trainer.errors import BadInputError

    text = (os.environ if environ is None else environ).get(WORKER_SET_ENV)
    if not text:
        return []
    try:
        values = json.loads(text)
    except ValueError:
        values = None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise BadInputError(f"{WORKER_SET_ENV} is not a JSON list of --set values (a trainer sweep --workers parent sets it).")
    return values


def _watch_workers(plan: Any, live: Any, events: SweepEvents, seen: dict[int, str], command: list[str], env: dict[str, str], workers: int) -> Any:
    """Start the workers, tell ``events`` of their trials as they change state, stop them on Ctrl-C; returns the summary."""
    from trainer.errors import BadInputError
    from trainer.sweep.outputs import trial_record, write_outputs

    children = [subprocess.Popen(command, env=env, start_new_session=True) for _ in range(workers)]

    def watch() -> None:
        changed = False
        for trial in live.get_trials(deepcopy=False):
            state = trial.state.name
            if seen.get(trial.number) == state:
                continue
            seen[trial.number] = state
            record = trial_record(trial)
            if record.status == "surplus":
                continue
            changed = True
            (events.on_trial_start if state == "RUNNING" else events.on_trial_end)(record)
        if changed:
            write_outputs(plan, live, final=False)

    try:
        while any(child.poll() is None for child in children):
            time.sleep(POLL_SECONDS)
            watch()
        watch()
    except KeyboardInterrupt:
        for child in children:
            if child.poll() is None:
                child.terminate()  # SIGTERM: the worker records its trial as interrupted
        for child in children:
            child.wait()
        watch()
        raise
    finally:
        events.on_sweep_end()
    codes = [child.returncode for child in children]
    if any(code in INTERRUPTED_CODES for code in codes):
        raise KeyboardInterrupt
    if any(code not in (0, None) for code in codes):
        raise BadInputError(f"a worker stopped with exit code {max(codes, key=abs)} (its message is above); the other trials are kept.")
    return write_outputs(plan, live)


def continue_command(config: Path, overrides: list[str], plan: Any, trials: int | None, storage: str | None, study: str | None, workers: int,
                     *, storage_from_env: bool = False) -> str:
    """The command that continues this search (a storage password shown as ``***``, with a word on what to put there)."""
    from trainer.secrets import has_secret, mask_url

    parts = ["trainer", "sweep", str(config), *(a for o in overrides for a in ("--set", mask_url(o))), "--sweep-dir", str(plan.sweep_dir)]
    if trials is not None:
        parts += ["--trials", str(trials)]
    if storage is not None and not storage_from_env:  # from STORAGE_ENV: still there for the next command
        parts += ["--storage", mask_url(storage)]
    if study is not None:
        parts += ["--study", study]
    if workers > 1:
        parts += ["--workers", str(workers)]
    text = shlex.join(parts)
    if (storage is not None and not storage_from_env and has_secret(storage)) or any(has_secret(o) for o in overrides):
        text += f" (with your passwords in place of ***; a --storage URL may instead be given in {STORAGE_ENV})"
    return text
