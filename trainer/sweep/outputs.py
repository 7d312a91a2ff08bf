"""What a sweep leaves in its directory: ``trials.csv``, ``sweep.json``, ``best.yaml`` and two plots.

Every file is rewritten whole (atomically) from the study, so any process sharing the study
may write them, and a continued search lists the trials of every run of the command.
"""
from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainer.integrations import optuna as bridge
from trainer.run.rundir import atomic_write_json, atomic_write_text
from trainer.sweep.events import TrialRecord

TRIALS_FILE = "trials.csv"
SWEEP_FILE = "sweep.json"
BEST_FILE = "best.yaml"
HISTORY_PLOT = "optimization_history.png"
IMPORTANCE_PLOT = "param_importances.png"
FEW_TRIALS = 10  # importances drawn from fewer finished trials carry a caveat in their title


@dataclass
class SweepSummary:
    """How the search stands: every trial, counts by status, the best trial and the files written."""

    records: list[TrialRecord]
    counts: dict[str, int]
    best: TrialRecord | None
    used: int
    budget: int
    files: list[Path] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


def trial_record(trial: Any) -> TrialRecord:
    """One trial of the study as trainer lists it, every attribute of the wrong type dropped.

    A study is a store anyone with access may have written (a journal file, a shared database):
    its user attributes are typed here, and a value Optuna cannot give (a multi-objective trial)
    is none.
    """
    attrs = trial.user_attrs if isinstance(trial.user_attrs, dict) else {}
    status = bridge.trial_status(trial)
    values = trial.values if status in ("completed", "pruned") else None
    value = values[0] if isinstance(values, list) and len(values) == 1 and _is_number(values[0]) else None
    overrides = attrs.get("overrides")
    return TrialRecord(
        trial.number, status, value, dict(trial.params), _typed(attrs, "wall_seconds", float), _typed(attrs, "epochs", int),
        _typed(attrs, "run_dir", str), _typed(attrs, "host", str), _typed(attrs, "reason", str),
        [o for o in overrides if isinstance(o, str)] if isinstance(overrides, list) else [],
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _typed(attrs: dict[str, Any], key: str, kind: type) -> Any:
    value = attrs.get(key)
    if kind is float:
        return float(value) if _is_number(value) else None
    if kind is int:
        return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63 else None
    return value[:4096] if isinstance(value, str) else None


def summarize(plan: Any, study: Any) -> SweepSummary:
    records = [trial_record(t) for t in study.get_trials(deepcopy=False)]
    records = [r for r in records if r.status != "surplus"]
    for record in records:  # the values as the space gives them, not as a (shared, untrusted) store recorded them
        record.overrides = bridge.space_overrides(plan.sweep, record.params) or []
    counts: dict[str, int] = {}
    for record in records:
        counts[record.status] = counts.get(record.status, 0) + 1
    completed = [r for r in records if r.status == "completed" and r.value is not None]
    pick = max if plan.direction == "maximize" else min
    best = pick(completed, key=lambda r: (r.value, -r.number)) if completed else None  # ties: the earliest trial
    return SweepSummary(records, counts, best, bridge.budget_used(study), plan.budget)


def write_outputs(plan: Any, study: Any = None, *, final: bool = True) -> SweepSummary:
    """Write trials.csv and sweep.json; with ``final``, best.yaml and the plots too. Returns the summary."""
    from trainer.sweep.driver import open_plan_study

    study = study if study is not None else open_plan_study(plan)
    summary = summarize(plan, study)
    folder = plan.sweep_dir
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(plan.sweep.space)
    atomic_write_text(folder / TRIALS_FILE, trials_csv(summary.records, keys))
    atomic_write_json(folder / SWEEP_FILE, sweep_json(plan, summary))
    summary.files += [folder / TRIALS_FILE, folder / SWEEP_FILE]
    if not final:
        return summary
    text = best_yaml(plan, summary.best) if summary.best is not None else None
    if text is not None:
        atomic_write_text(folder / BEST_FILE, text)
        summary.files.append(folder / BEST_FILE)
    elif summary.best is not None:
        summary.notices.append(f"best.yaml not written: trial {summary.best.number}'s recorded parameters are not values of sweep.space.")
    if any(r.value is not None for r in summary.records):
        summary.files.append(plot_history(summary.records, plan, folder / HISTORY_PLOT))
    importance = plot_importances(study, folder / IMPORTANCE_PLOT)
    if isinstance(importance, Path):
        summary.files.append(importance)
    elif importance:
        summary.notices.append(importance)
    return summary


def trials_csv(records: list[TrialRecord], keys: list[str]) -> str:
    from trainer.outputs import spreadsheet_safe

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["number", "state", "value", *keys, "wall_seconds", "epochs", "run_dir", "host", "reason"])
    for r in sorted(records, key=lambda r: r.number):
        writer.writerow([spreadsheet_safe(cell) for cell in (
            r.number, r.status, "" if r.value is None else r.value, *(r.params.get(k, "") for k in keys),
            "" if r.wall_seconds is None else r.wall_seconds, "" if r.epochs is None else r.epochs,
            r.run_dir or "", r.host or "", r.reason or "",
        )])
    return out.getvalue()


def sweep_json(plan: Any, summary: SweepSummary) -> dict[str, Any]:
    best = summary.best
    return {
        "study": plan.study_name,
        "storage": plan.storage_label,
        "metric": plan.metric,
        "direction": plan.direction,
        "budget": summary.budget,
        "counted": summary.used,
        "counts": summary.counts,
        "best": None if best is None else {
            "number": best.number, "value": best.value, "params": best.params, "run_dir": best.run_dir,
            "overrides": best.overrides,
        },
        "sweep_dir": str(plan.sweep_dir),
    }


def best_yaml(plan: Any, best: TrialRecord) -> str | None:
    """The best trial's full config without the sweep section: the sweep's config with the trial's values; None if they are not the space's.

    Rebuilt from the plan (whose base config the study checked) and the trial's parameters,
    never read back from the trial's run directory or its recorded overrides: the study and the
    sweep folder are stores anyone may have written. The parent MLflow run is left out
    (``trainer run best.yaml`` is a run of its own).
    """
    from trainer.config.loading import load_config

    overrides = bridge.space_overrides(plan.sweep, best.params)
    if overrides is None:
        return None
    data = load_config(None, overrides, base=plan.trial_config.to_dict()).to_dict(masked=True)  # a password never reaches a file
    mlflow = (data.get("tracking") or {}).get("mlflow")
    if isinstance(mlflow, dict):
        mlflow.pop("parent_run_id", None)
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    header = (
        f"# best trial {best.number} of study {plan.study_name}: {plan.metric} = {best.value}\n"
        f"# values: {', '.join(overrides)}\n"
        f"# rerun with: trainer run {plan.sweep_dir / BEST_FILE}\n"
    )
    return header + text


def plot_history(records: list[TrialRecord], plan: Any, path: Path) -> Path:
    """The value of every trial by number (pruned ones grey) and the best so far."""
    from trainer.inference.plots import _figure, _save

    figure = _figure(7, 4)
    axes = figure.add_subplot()
    done = sorted((r for r in records if r.value is not None), key=lambda r: r.number)
    for status, colour in (("completed", "tab:blue"), ("pruned", "tab:gray")):
        points = [r for r in done if r.status == status]
        if points:
            axes.scatter([r.number for r in points], [r.value for r in points], c=colour, label=status, s=24, zorder=3)
    best_so_far, best, xs = [], None, []
    pick = max if plan.direction == "maximize" else min
    for r in done:
        if r.status == "completed":
            best = r.value if best is None else pick(best, r.value)
        if best is not None:
            xs.append(r.number)
            best_so_far.append(best)
    if xs:
        axes.step(xs, best_so_far, where="post", color="tab:red", label="best so far")
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are whole numbers
    axes.set_xlabel("trial")
    axes.set_ylabel(plan.metric)
    axes.set_title(f"optimization history ({plan.direction} {plan.metric})")
    axes.legend(loc="best")
    axes.grid(alpha=0.3)
    return _save(figure, path)


def plot_importances(study: Any, path: Path) -> Path | str | None:
    """Optuna's parameter importances as bars; a notice when there are too few finished trials to tell."""
    optuna = bridge.import_optuna()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "importances will be equal" with few trials: the bars say so
            importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as exc:
        return f"no parameter importance plot: {exc}"
    if not importances:
        return None
    from trainer.inference.plots import _figure, _save

    names = list(importances)[::-1]
    figure = _figure(7, 1.6 + 0.4 * len(names))
    axes = figure.add_subplot()
    axes.barh(names, [importances[n] for n in names], color="tab:blue")
    axes.set_xlabel("importance (share of the objective's variation)")
    finished = sum(1 for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE)
    caveat = f"\nfrom only {finished} finished trial{'s' if finished != 1 else ''}: a rough guide (~{FEW_TRIALS}+ make it telling)" if finished < FEW_TRIALS else ""
    axes.set_title(f"parameter importances{caveat}", color="tab:red" if caveat else None)
    return _save(figure, path)
