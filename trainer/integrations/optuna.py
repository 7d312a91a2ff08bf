"""Optuna behind ``trainer sweep``: the study and its storage, samplers, pruners, and the pruning run-event handler.

Optuna is imported on first use (``pip install 'trainer[sweep]'``). Each trial carries user
attributes the sweep relies on: ``status`` (completed, pruned, failed, interrupted, lost,
surplus), ``reason``, ``host``, ``pid``, ``run_dir``, ``overrides``, ``wall_seconds``, ``epochs``.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

from trainer.config.sweep import SweepConfig, decode_choice, encode_choices
from trainer.errors import BadInputError
from trainer.extras import require_modules
from trainer.run.events import RunEvents, StopRun
from trainer.secrets import mask_url, scrub

JOURNAL_FILE = "optuna-journal.log"
HEARTBEAT_SECONDS = 10  # RDB storages: a RUNNING trial whose process stopped beating this long ...
GRACE_SECONDS = 40  # ... plus this grace is failed ("lost") by the next process that asks for a trial

# Which ended trials use up the budget (``sweep.trials``): completed, pruned, and failed by the
# trial itself (NaN loss, out of memory, a refused combination). Trials stopped from outside
# (Ctrl-C, a killed or lost process) give their budget back. Running trials hold theirs.
COUNTED_STATUSES = ("completed", "pruned", "failed", "running")


def import_optuna():
    """Optuna, or exit 2 with the command that installs the [sweep] extra."""
    require_modules(("optuna",), "sweep", "trainer sweep")
    import optuna

    return optuna


# --------------------------------------------------------------------------- storage and study


def is_url(storage: str) -> bool:
    return "://" in storage


def storage_label(storage: str) -> str:
    """A storage URL or journal path as it may be shown, logged or stored: every credential masked (``trainer.secrets``)."""
    return mask_url(storage)


# What Optuna raises while replaying a journal whose lines are JSON but not operations it knows
JOURNAL_REPLAY_ERRORS = (ValueError, KeyError, TypeError, IndexError, AttributeError, AssertionError, OverflowError, RecursionError)


def open_storage(storage: str | None, sweep_dir: Path):
    """A journal file (default: ``SWEEP_DIR/optuna-journal.log``; a path shared on one machine) or an RDB URL.

    A journal is untrusted (``trainer.readers.sweep_files.check_journal`` before Optuna replays it);
    the URL's credentials never appear in a message (``trainer.secrets``).
    """
    optuna = import_optuna()
    if storage is not None and not storage.strip():
        raise BadInputError("--storage is empty; give a journal file path or a database URL (or leave it out: SWEEP_DIR/optuna-journal.log).")
    if storage is None or not is_url(storage):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        from trainer.readers.sweep_files import JOURNAL_WHAT, check_journal

        path = Path(storage) if storage is not None else Path(sweep_dir) / JOURNAL_FILE
        check_journal(path, folder=None if storage is not None else sweep_dir)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with quiet_optuna():
                return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
        except OSError as exc:
            raise BadInputError(f"cannot open the sweep journal {path}: {exc.strerror or exc}") from None
        except JOURNAL_REPLAY_ERRORS as exc:
            raise BadInputError(
                f"{path}: Optuna cannot replay it ({type(exc).__name__}: {str(exc)[:120]}); expected {JOURNAL_WHAT}. "
                "Name another --storage, or another --sweep-dir."
            ) from None
    shown = storage_label(storage)
    from trainer.integrations.store_probe import probe_database

    given, storage = storage, _with_installed_driver(storage)
    probe_database(storage, "--storage", shown=given)  # seconds, not the driver's TCP timeout: a store that does not answer is one line
    last: Exception | None = None
    for attempt in range(4):  # processes starting together on a new database race to create its tables
        try:
            with quiet_optuna():  # heartbeat_interval is experimental
                return optuna.storages.RDBStorage(
                    storage, engine_kwargs={"pool_pre_ping": True},
                    heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
                )
        except ImportError as exc:
            raise BadInputError(f"--storage {shown}: a driver is missing ({scrub(exc, [storage])}); pip install 'trainer[sweep]'.") from None
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy's errors have no common base worth importing here
            last = exc
            time.sleep(0.5 + attempt)
    reason = scrub(str(last).splitlines()[0] if last and str(last) else type(last).__name__, [storage])
    raise BadInputError(f"cannot open the study storage {shown}: {reason}")


# Optuna warnings that say nothing a user can act on, printed once per trial otherwise: the
# heartbeat API is "experimental" and "supposed to be used with Study.optimize" (the sweep drives
# ask/tell itself, and beats for each trial).
QUIET_WARNINGS = (
    r"Heartbeat of storage is supposed to be used with Study\.optimize",
    r".* is experimental \(supported from",
)


@contextlib.contextmanager
def quiet_optuna():
    """A block in which Optuna's non-actionable warnings are silenced and any other Optuna warning shows once."""
    optuna = import_optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        warnings.filterwarnings("once", module=r"optuna(\.|$)", append=True)  # after the ignores above, which take precedence
        yield


def _with_installed_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed: SQLAlchemy 2.0 means psycopg2 by it, 2.1 psycopg (3)."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


SIGNATURE_ATTR = "trainer"  # the study's user attribute: what the search is (metric, direction, space, base config)


def open_study(sweep: SweepConfig, *, storage: Any, study_name: str, metric: str, direction: str, base: dict[str, str] | None = None,
               label: str = "its storage"):
    """Create the study, or load it when it exists; a study made with another metric, direction, space or base config is refused.

    ``base``: the digest of each key of the config the trials start from (``trainer.sweep.driver.base_digests``),
    recorded when the study is created; a study made before trainer recorded it gets it now. ``label``:
    the storage as messages name it (masked). A store Optuna cannot replay is exit 2 naming it.
    """
    try:
        return _open_study(sweep, storage=storage, study_name=study_name, metric=metric, direction=direction, base=base)
    except JOURNAL_REPLAY_ERRORS as exc:
        raise BadInputError(
            f"study {study_name!r} in {label} cannot be read ({type(exc).__name__}: {scrub(exc)[:160]}); the store is damaged "
            "or was not written by trainer sweep. Name another --storage, or another --sweep-dir."
        ) from None


def _open_study(sweep: SweepConfig, *, storage: Any, study_name: str, metric: str, direction: str, base: dict[str, str] | None):
    optuna = import_optuna()
    signature = {"metric": metric, "direction": direction, "space": {k: v.model_dump() for k, v in sweep.space.items()}}
    signature = json.loads(json.dumps(signature))
    with quiet_optuna():
        study = optuna.create_study(
            storage=storage, study_name=study_name, direction=direction, load_if_exists=True,
            sampler=make_sampler(sweep, sweep.seed), pruner=make_pruner(sweep),
        )
    saved = study.user_attrs.get(SIGNATURE_ATTR)
    if saved is None:
        study.set_user_attr(SIGNATURE_ATTR, {**signature, **({"base": base} if base is not None else {})})
        return study
    if not isinstance(saved, dict):
        raise BadInputError(f"study {study_name!r}: its {SIGNATURE_ATTR!r} attribute is not what trainer sweep records; start a new search with --study NAME.")
    changed = [key for key in signature if signature[key] != saved.get(key)]
    if changed:
        raise BadInputError(
            f"study {study_name!r} was started with another {' and '.join(changed)} "
            f"({', '.join(f'{k}: {saved.get(k)!r:.200}' for k in changed)}); continuing it would mix two searches. "
            "Keep the sweep section as it was, or start a new search with --study NAME (or another --sweep-dir)."
        )
    if base is not None:
        recorded = saved.get("base")
        if recorded is None:  # started before trainer recorded its base config
            study.set_user_attr(SIGNATURE_ATTR, {**saved, "base": base})
        elif recorded != base:
            keys = recorded if isinstance(recorded, dict) else {}
            differ = sorted(k for k in set(keys) | set(base) if keys.get(k) != base.get(k))
            shown = ", ".join(differ[:12]) + (f" and {len(differ) - 12} more" if len(differ) > 12 else "")
            raise BadInputError(
                f"study {study_name!r} was started from another base config: {shown or 'its record'} differ"
                f"{'s' if len(differ) == 1 else ''} (keys the space searches, name and output aside); continuing it would "
                "compare trials trained on different settings. Use the config (and --set values) it started with, "
                "or start a new search with --study NAME (or another --sweep-dir)."
            )
    return study


def make_sampler(sweep: SweepConfig, seed: int):
    optuna = import_optuna()
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if sweep.sampler == "grid":
        grid = {key: encode_choices(space.grid_values()) for key, space in sweep.space.items()}

        class BudgetedGridSampler(optuna.samplers.GridSampler):
            """Optuna's grid, without its ``study.stop()`` at the last point (valid only inside ``optimize``; the budget ends the sweep)."""

            def after_trial(self, study, trial, state, values) -> None:
                pass

        return BudgetedGridSampler(grid, seed=seed)
    # constant_liar: trials still running count as bad guesses, so parallel workers spread out
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(sweep: SweepConfig):
    optuna = import_optuna()
    if sweep.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=sweep.startup_trials, n_warmup_steps=0)
    if sweep.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def reseed_sampler(study: Any, sweep: SweepConfig, trial_number: int) -> None:
    """A sampler seeded by ``seed`` and the trial's number: reproducible, and no two processes draw alike.

    The two numbers are mixed by NumPy's SeedSequence: Mersenne Twister seeded with 0, 1, 2, ...
    directly draws first values that lie close together.
    """
    import numpy as np

    if sweep.sampler != "grid":  # the grid's choice of point is made in ask(); its seed stays the study's
        mixed = int(np.random.SeedSequence([sweep.seed, trial_number]).generate_state(1)[0])
        study.sampler = make_sampler(sweep, mixed)


def suggest(trial: Any, sweep: SweepConfig) -> dict[str, Any]:
    """Sample every key of ``sweep.space`` for ``trial``; returns key -> config value (choices decoded)."""
    values: dict[str, Any] = {}
    for key, space in sweep.space.items():
        if sweep.sampler == "grid":
            grid = space.grid_values()
            values[key] = decode_choice(grid, trial.suggest_categorical(key, encode_choices(grid)))
        elif space.kind == "float":
            low, high = space.float_range
            values[key] = trial.suggest_float(key, low, high, log=space.log, step=space.step)
        elif space.kind == "int":
            low, high = space.int_range
            values[key] = trial.suggest_int(key, low, high, step=int(space.step or 1), log=space.log)
        else:
            values[key] = decode_choice(space.choice, trial.suggest_categorical(key, encode_choices(space.choice)))
    return values


def space_overrides(sweep: SweepConfig, params: dict[str, Any]) -> list[str] | None:
    """A trial's ``--set`` values rebuilt from its parameters, or None when one is not a value the space can give.

    A study is a store anyone may have written: what best.yaml holds comes from the space, never
    from a trial's recorded text.
    """
    from trainer.config.sweep import override_text

    overrides = []
    for key, space in sweep.space.items():
        if key not in params:
            return None
        value = params[key]
        if space.kind == "choice" or sweep.sampler == "grid":
            values = space.grid_values() if sweep.sampler == "grid" else space.choice
            if not any(type(stored) is type(value) and stored == value for stored in encode_choices(values)):
                return None
            value = decode_choice(values, value)
        else:
            low, high = space.float_range or space.int_range
            kind = float if space.kind == "float" else int
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
                return None
            if not (low <= value <= high) or (kind is float and not math.isfinite(value)):
                return None
        overrides.append(override_text(key, value))
    return overrides


# --------------------------------------------------------------------------- pruning


class PruningEvents(RunEvents):
    """Reports each epoch's metric to the Optuna trial and ends the run (``StopRun``, status pruned) when it says so.

    A ``test_*`` metric exists only at the end, so epochs report its validation counterpart
    (``val_*``, else the training value). A metric missing from ``history.csv`` ends the run as
    failed: the sweep then stops with a message naming the columns there are.
    """

    def __init__(self, trial: Any, metric: str, pruner: str):
        self.trial, self.metric, self.pruner = trial, metric, pruner
        self.pruned_at: int | None = None

    def column(self, logs: dict[str, Any]) -> str | None:
        if not self.metric.startswith("test_"):
            return self.metric if self.metric in logs else None
        name = self.metric[len("test_"):]
        return next((c for c in (f"val_{name}", name) if c in logs), None)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        column = self.column(logs)
        if column is None:
            raise StopRun(missing_metric_message(self.metric, logs), status="failed")
        value = logs[column]
        if value is None or not math.isfinite(value):
            return  # the loss guard ends a NaN run; nothing to compare
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            raise StopRun(f"pruned by the {self.pruner} pruner after epoch {epoch} ({column} {value:.4g})", status="pruned")


def missing_metric_message(metric: str, columns: Any) -> str:
    names = [c for c in columns if c not in ("epoch", "epoch_seconds", "examples_per_second")]
    return f"sweep.metric: {metric!r} is not a column of history.csv; this run has {', '.join(names)} (or test_<metric>)"


# --------------------------------------------------------------------------- bookkeeping


def trial_status(trial: Any) -> str:
    """completed | pruned | failed | interrupted | lost | surplus | running | waiting."""
    state = trial.state.name
    if state == "COMPLETE":
        return "completed"
    if state == "PRUNED":
        return "pruned"
    if state == "FAIL":  # without a final status, Optuna's heartbeat check failed it: its process stopped
        status = trial.user_attrs.get("status")
        return status if status in FAILED_STATUSES else "lost"  # anything else in a (shared, untrusted) store: lost
    return state.lower()


FAILED_STATUSES = ("failed", "interrupted", "lost", "surplus")  # the statuses a FAIL trial may carry


def budget_used(study: Any, before: int | None = None) -> int:
    """Trials that count toward ``sweep.trials`` (COUNTED_STATUSES), optionally only those numbered below ``before``."""
    return sum(
        1 for t in study.get_trials(deepcopy=False)
        if trial_status(t) in COUNTED_STATUSES and (before is None or t.number < before)
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_lost_trials(study: Any) -> list[int]:
    """Mark failed ("lost") the RUNNING trials whose process is gone; returns their numbers.

    Same machine: the recorded process id no longer runs. Other machines (RDB storages): Optuna's
    heartbeat check. A lost trial gives its budget back.
    """
    optuna = import_optuna()
    from optuna.storages import fail_stale_trials
    from optuna.storages._heartbeat import is_heartbeat_enabled

    lost = []
    if is_heartbeat_enabled(study._storage):
        with quiet_optuna():
            fail_stale_trials(study)
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
            if trial.user_attrs.get("status") == "running":  # failed just now by the heartbeat check
                with contextlib.suppress(Exception):
                    study._storage.set_trial_user_attr(trial._trial_id, "status", "lost")
                    study._storage.set_trial_user_attr(
                        trial._trial_id, "reason",
                        f"no heartbeat from {trial.user_attrs.get('host')} (pid {trial.user_attrs.get('pid')}) for {HEARTBEAT_SECONDS + GRACE_SECONDS} s",
                    )
                    lost.append(trial.number)
    here, me = this_process(), os.getpid()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid, host = trial.user_attrs.get("pid"), trial.user_attrs.get("host")
        if trial.user_attrs.get("machine") != here["machine"] or not isinstance(pid, int) or (pid != me and pid_alive(pid)):
            continue
        with contextlib.suppress(Exception):  # another process may have marked it first
            study._storage.set_trial_user_attr(trial._trial_id, "status", "lost")
            study._storage.set_trial_user_attr(trial._trial_id, "reason", f"its process ({host}, pid {pid}) stopped while it ran")
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            lost.append(trial.number)
    return lost


@contextlib.contextmanager
def heartbeat(study: Any, trial: Any):
    """Beat for ``trial`` while it runs (RDB storages), so other machines can tell it is alive."""
    try:
        from optuna.storages._heartbeat import get_heartbeat_thread
    except ImportError:  # pragma: no cover - a future Optuna without it: lost trials are then found by pid only
        yield
        return
    with get_heartbeat_thread(trial._trial_id, study._storage):
        yield


def last_reported_value(study: Any, trial: Any) -> float | None:
    """The last value a pruned trial reported (Optuna keeps it in the storage, behind a private API: used here only)."""
    return study._storage.get_trial(trial._trial_id).value


def mark(trial: Any, **attrs: Any) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def this_process() -> dict[str, Any]:
    """Who runs a trial: the host name, the process id and this boot's id (host names may repeat across containers)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "machine": _machine_id()}


def _machine_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or socket.gethostname()
    except OSError:
        return socket.gethostname()
