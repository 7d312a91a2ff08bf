"""The trial loop: ask Optuna for values, train them as an ordinary run, tell Optuna how it went.

Each trial is ``trainer.api.train(config, overrides=[KEY=VALUE, ...], run_dir=SWEEP_DIR/trial-NNNN)`` (the API
passes its ``train`` down)
with a pruning handler among its run events. Several processes (``--workers``, other machines)
run this same loop against one study; the storage hands out trial numbers, so none is run twice.
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from trainer.config import Config
from trainer.config.checks import check_sweep
from trainer.config.sweep import SweepConfig, override_text
from trainer.errors import BadInputError, ConfigError, RunFailedError, RunInterrupted, follows_interrupt
from trainer.integrations import optuna as bridge
from trainer.sweep.events import SweepEvents, SweepStartInfo, TrialRecord

TRIAL_DIR = "trial-{number:04d}"
PARENT_RUN_ATTR = "mlflow_parent_run_id"  # the study's user attribute: one parent MLflow run for every process and machine
FEATURES_DIR = "features"  # a frozen backbone's features, shared by every trial with the same backbone and data


@dataclass
class SweepPlan:
    """A resolved sweep: the config its trials start from, where the study lives, what it optimises."""

    config: Config  # with the sweep section
    trial_config: Config  # the same without it: what each trial trains (and best.yaml holds)
    sweep: SweepConfig
    sweep_dir: Path
    storage: str | None  # None: the journal file in sweep_dir
    study_name: str
    metric: str
    direction: str
    budget: int
    config_file: Path | None = None  # the YAML the config came from: worker processes read it again
    overrides: tuple[str, ...] = ()  # the --set values applied to it, in order

    @property
    def storage_label(self) -> str:
        return bridge.storage_label(self.storage) if self.storage else str(self.sweep_dir / bridge.JOURNAL_FILE)

    def trial_dir(self, number: int) -> Path:
        return self.sweep_dir / TRIAL_DIR.format(number=number)

    def start_info(self, used: int, workers: int = 1) -> SweepStartInfo:
        return SweepStartInfo(
            self.study_name, self.storage_label, self.sweep_dir, self.metric, self.direction, self.budget, used,
            list(self.sweep.space), workers,
        )


def plan_sweep(
    config: Config, *, trials: int | None = None, storage: str | None = None, study: str | None = None,
    sweep_dir: str | Path | None = None, config_file: str | Path | None = None, overrides: Iterable[str] = (),
) -> SweepPlan:
    """Resolve a config's sweep section and the command line's choices; refuses a missing or invalid section."""
    if config.sweep is None:
        raise ConfigError(
            f"{config_file or 'config'} has no sweep: section; add one with a space to search, e.g.\n"
            "sweep:\n  trials: 20\n  space:\n    optimizer.learning_rate: {float: [1.0e-4, 1.0e-2], log: true}\n(see docs/sweep.md)"
        )
    check_sweep(config, config_file)
    if study is not None:  # model_copy below does not validate: the command line's name meets the config's rule here
        from trainer.config.sweep import check_study_name

        check_study_name(study)
    sweep = config.sweep.model_copy(update={
        key: value for key, value in (("trials", trials), ("storage", storage), ("study", study)) if value is not None
    })
    study_name = sweep.study or config.name
    metric = sweep.metric_for(config)
    budget = min(sweep.trials, sweep.grid_size() or sweep.trials)
    folder = Path(sweep_dir) if sweep_dir is not None else Path(config.output.dir) / f"{study_name}-sweep"
    trial_config = config.model_copy(update={"sweep": None})
    return SweepPlan(
        config, trial_config, sweep, folder.resolve(), sweep.storage, study_name, metric, sweep.direction_for(metric), budget,
        Path(config_file) if config_file is not None else None, tuple(overrides),
    )


def open_plan_study(plan: SweepPlan):
    """The plan's Optuna study (created on first use; refused when it was started from another base config)."""
    storage = bridge.open_storage(plan.storage, plan.sweep_dir)
    return bridge.open_study(plan.sweep, storage=storage, study_name=plan.study_name, metric=plan.metric, direction=plan.direction,
                             base=base_digests(plan), label=plan.storage_label)


# Keys of the config that are not what a trial trains: its name, where outputs go, where it is reported.
NOT_BASE = ("sweep", "name", "output", "tracking")


def base_digests(plan: SweepPlan) -> dict[str, str]:
    """A short digest of every leaf key of the config the trials start from, except NOT_BASE and the keys the space searches.

    Recorded in the study when it is created: continuing it from a config that differs (another
    data.path, seed, epoch count) is refused by name. Digests, not values: a study in a shared
    database then holds no path or setting of anyone's config.
    """
    import hashlib

    searched = [tuple(key.split(".")) for key in plan.sweep.space]
    digests: dict[str, str] = {}

    def visit(value: Any, path: tuple[str, ...]) -> None:
        if any(path[: len(key)] == key for key in searched):
            return
        if isinstance(value, dict) and value:
            for name, item in value.items():
                visit(item, (*path, str(name)))
            return
        text = json.dumps(value, sort_keys=True, allow_nan=True, default=str)
        digests[".".join(path)] = hashlib.sha256(text.encode()).hexdigest()[:16]

    for name, value in plan.trial_config.to_dict().items():
        if name not in NOT_BASE:
            visit(value, (name,))
    return digests


def preflight(plan: SweepPlan) -> None:
    """Build the loss, metrics and optimizer of every bound and choice once (Keras): a bad parameter is refused before trial 1.

    ``trainer validate`` checks the schema without TensorFlow; names and parameters of catalogue
    entries (``optimizer.beta_1``, ...) need Keras, so they are checked here.
    """
    from trainer.config.overview import check_catalogue
    from trainer.config.checks import plan_run
    from trainer.config.loading import load_config

    base = plan.trial_config.to_dict()
    problems = []
    for key, space in plan.sweep.space.items():
        for value in space.candidate_values():
            try:
                candidate = load_config(None, [override_text(key, value)], base=base)
                candidate._config_dir = plan.trial_config.config_dir
                check_catalogue(candidate, plan_run(candidate))
            except ConfigError as exc:
                problems.append(f"sweep.space.{key}: the value {value!r} is refused: {'; '.join(exc.problems) or exc.message}")
    if problems:
        raise ConfigError(f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in sweep.space:", problems=problems)


def run_trials(plan: SweepPlan, events: SweepEvents | None = None, *, train: Any, trial_events: Iterable[Any] = (), study: Any = None,
               after_trial: Any = None) -> Any:
    """Run trials in this process until the study has ``plan.budget`` counted trials; returns the study.

    ``train``: ``trainer.api.train`` (passed down by ``trainer.api.sweep``: the sweep package never
    imports the API above it), called as ``train(config, overrides=..., run_dir=..., events=..., feature_cache=...)``.

    ``trial_events``: run-event handlers added to every trial (a display). ``after_trial(study)``:
    called after each trial (the CLI rewrites trials.csv there). Ctrl-C records the running trial
    as interrupted and raises ``RunInterrupted``; a config or data problem that fails the first
    trials raises its ``BadInputError``.
    """
    events = events or SweepEvents()
    optuna = bridge.import_optuna()
    study = study if study is not None else open_plan_study(plan)
    preflight(plan)
    if PARENT_RUN_ATTR not in study.user_attrs:
        tracking_parent(plan, study)
    if bridge.budget_used(study) >= plan.budget:
        events.on_notice(f"study {plan.study_name} already has its {plan.budget} trials; the outputs are rewritten. Raise --trials to search further.")
    with bridge.quiet_optuna():  # Optuna's heartbeat warnings would repeat on every trial of a database study
        while True:
            for number in bridge.fail_lost_trials(study):
                events.on_notice(f"trial {number} was left running by a process that stopped; it is marked lost and its budget re-used.")
            if bridge.budget_used(study) >= plan.budget:
                break
            trial = study.ask()
            if bridge.budget_used(study, before=trial.number) >= plan.budget:  # another process took the last trial meanwhile
                bridge.mark(trial, status="surplus", reason="the budget was used up by other processes meanwhile", **bridge.this_process())
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                break
            run_one_trial(plan, study, trial, events, trial_events, train)
            if after_trial is not None:
                after_trial(study)
    return study


def parent_run_id(study: Any) -> str | None:
    """The parent MLflow run id the study records, when it looks like one (the study is a store anyone may have written)."""
    value = study.user_attrs.get(PARENT_RUN_ATTR)
    return value if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value) else None


def tracking_parent(plan: SweepPlan, study: Any) -> str | None:
    """With ``tracking.mlflow``, the sweep is one parent MLflow run and each trial its child; returns the parent's id.

    The id lives in the study, so every worker, every machine and a continued sweep log under
    the same parent (a continued sweep reopens it as RUNNING). None without tracking.
    """
    if getattr(plan.trial_config.tracking, "mlflow", None) is None:
        return None
    from trainer.integrations.mlflow import open_parent_run

    existing = parent_run_id(study)
    run_id = open_parent_run(plan.trial_config, f"sweep {plan.study_name}", existing,
                             tags={"study": plan.study_name, "storage": plan.storage_label})
    if existing is None:
        study.set_user_attr(PARENT_RUN_ATTR, run_id)
    return run_id


def run_one_trial(plan: SweepPlan, study: Any, trial: Any, events: SweepEvents, trial_events: Iterable[Any], train: Any) -> TrialRecord:
    """Sample, train (``train``: ``trainer.api.train``) and record one trial."""
    optuna = bridge.import_optuna()
    bridge.reseed_sampler(study, plan.sweep, trial.number)
    values = bridge.suggest(trial, plan.sweep)
    overrides = [override_text(key, value) for key, value in values.items()]
    run_dir = plan.trial_dir(trial.number)
    process = bridge.this_process()
    bridge.mark(trial, status="running", run_dir=str(run_dir), overrides=overrides, **process)
    record = TrialRecord(trial.number, "running", None, dict(trial.params), run_dir=str(run_dir), host=process["host"], overrides=overrides)
    events.on_trial_start(record)
    pruning = bridge.PruningEvents(trial, plan.metric, plan.sweep.pruner)
    started = time.perf_counter()

    def finish(status: str, value: float | None = None, reason: str | None = None, epochs: int | None = None) -> TrialRecord:
        record.status, record.value, record.reason, record.epochs = status, value, reason, epochs
        record.wall_seconds = round(time.perf_counter() - started, 3)
        bridge.mark(trial, status=status, wall_seconds=record.wall_seconds, **({"reason": reason} if reason else {}),
                    **({"epochs": epochs} if epochs is not None else {}))
        if status == "completed":
            study.tell(trial, value)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED if status == "pruned" else optuna.trial.TrialState.FAIL)
            if status == "pruned":
                record.value = bridge.last_reported_value(study, trial)
        events.on_trial_end(record)
        return record

    def interrupted() -> RunInterrupted:
        finish("interrupted", reason="stopped by Ctrl-C or SIGTERM")
        return RunInterrupted(f"interrupted during trial {trial.number}; it is recorded as interrupted and its budget will be re-used.")

    try:
        with bridge.heartbeat(study, trial):
            parent = parent_run_id(study) if getattr(plan.trial_config.tracking, "mlflow", None) else None
            child = [f"tracking.mlflow.parent_run_id='{parent}'"] if parent else []  # quoted: an id may look like a number
            result = train(plan.trial_config, overrides=[*overrides, *child], run_dir=run_dir, events=[pruning, *trial_events],
                           feature_cache=plan.sweep_dir / FEATURES_DIR)
    except RunFailedError as exc:
        return finish("failed", reason=exc.message)
    except (RunInterrupted, KeyboardInterrupt):
        raise interrupted() from None
    except BadInputError as exc:
        finish("failed", reason=exc.message)
        if not any(t.state.name in ("COMPLETE", "PRUNED") for t in study.get_trials(deepcopy=False)):
            raise  # before any trial worked this is the config or the data, not a region of the search space
        return record
    except BaseException as exc:  # a bug: record it, then let its traceback show
        if follows_interrupt(exc):  # the interrupt, turned into another error inside TensorFlow
            raise interrupted() from None
        finish("failed", reason=f"{type(exc).__name__}: {exc}")
        raise
    epochs = len(result.history)
    if result.status == "pruned":
        return finish("pruned", reason=result.reason, epochs=epochs)
    if result.status != "completed":  # a handler ended the run: the metric is not in history.csv
        finish("failed", reason=result.reason, epochs=epochs)
        raise BadInputError(result.reason or f"trial {trial.number} ended as {result.status}")
    value = objective_value(result, plan.metric)
    if value is None:
        finish("failed", reason="the metric is missing", epochs=epochs)
        raise BadInputError(bridge.missing_metric_message(plan.metric, result.history[-1] if result.history else {}))
    if not math.isfinite(value):
        return finish("failed", reason=f"{plan.metric} is {value}", epochs=epochs)
    return finish("completed", value=value, epochs=epochs)


def objective_value(result: Any, metric: str) -> float | None:
    """The trial's value: ``metric`` at the last epoch of history.csv, or ``test_<m>`` from metrics.json."""
    if metric.startswith("test_"):
        value = (result.metrics.get("test") or {}).get(metric[len("test_"):])
    else:
        value = (result.history[-1] if result.history else {}).get(metric)
    return float(value) if isinstance(value, (int, float)) else None
