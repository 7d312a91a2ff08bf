"""``trainer sweep``: a hyperparameter search on Optuna; each trial is an ordinary run directory."""
from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

import typer

from trainer.cli.common import SET_HELP, handles_errors
from trainer.run.events import RunEvents
from trainer.sweep.events import SweepEvents, SweepStartInfo, TrialRecord

SWEEP_EPILOG = (
    "Exit codes: 0 a best trial was found, 1 no trial completed, 2 bad input, 130 interrupted (run the same command "
    "again to continue). Several machines: the same command with the same --storage postgresql://... and --study "
    "on each (docs/sweep.md)."
)
POLL_SECONDS = 1.0
STORAGE_ENV = "TRAINER_SWEEP_STORAGE"  # --storage from the environment: how workers get it, and how a password stays off argv
WORKER_SET_ENV = "TRAINER_SWEEP_WORKER_SET"  # a worker's --set values (JSON list) when one holds a credential


@handles_errors
def sweep(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="The YAML config file, with a sweep: section.", show_default=False),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP, show_default=False),
    trials: Optional[int] = typer.Option(None, "--trials", min=1, help="Trials to reach in the study (default: sweep.trials).", show_default=False),
    workers: int = typer.Option(1, "--workers", min=1, help="Trial processes on this machine sharing the study."),
    storage: Optional[str] = typer.Option(
        None, "--storage", envvar=STORAGE_ENV,
        help="Where the study lives: an RDB URL (postgresql://user@host/db) or a journal file (default: SWEEP_DIR/optuna-journal.log). "
        f"A URL with a password is best given in {STORAGE_ENV}: a command line is visible to every user of the machine.",
        show_default=False,
    ),
    study: Optional[str] = typer.Option(None, "--study", help="The study's name (default: sweep.study, else the config's name).", show_default=False),
    sweep_dir: Optional[Path] = typer.Option(
        None, "--sweep-dir", help="Where trials and results go (default: <output.dir>/<study>-sweep). The same folder again continues the search.",
        show_default=False,
    ),
    worker: bool = typer.Option(False, "--worker", hidden=True, help="Run trials quietly for a parent trainer sweep --workers N."),
) -> None:
    """Search hyperparameters with Optuna: trials are runs in SWEEP_DIR/trial-NNNN; trials.csv, sweep.json, best.yaml and plots."""
    from trainer.cli.common import interrupts_as_keyboard_interrupt, prepare_keras
    from trainer.config import load_config
    from trainer.errors import EXIT_INTERRUPTED, RunInterrupted
    from trainer.sweep import plan_sweep

    overrides = [*_worker_overrides(), *(set_ or [])] if worker else (set_ or [])
    loaded = load_config(config, overrides)
    plan = plan_sweep(loaded, trials=trials, storage=storage, study=study, sweep_dir=sweep_dir, config_file=config)
    _quiet_optuna()
    command = continue_command(config, overrides, plan, trials, storage, study, workers, storage_from_env=_storage_from_env(ctx))
    with interrupts_as_keyboard_interrupt():
        try:
            if workers > 1 and not worker:
                summary = run_with_workers(plan, workers, config, overrides, trials, storage, study)
            else:
                prepare_keras(backend=loaded.backend)
                summary = run_here(plan, quiet=worker)
        except (RunInterrupted, KeyboardInterrupt) as error:
            if worker:  # the parent says what happened and how to continue
                raise typer.Exit(EXIT_INTERRUPTED) from None
            _final_outputs_quietly(plan)
            interrupted = error if isinstance(error, RunInterrupted) else RunInterrupted(
                "the sweep stopped; trials that were running are recorded as interrupted and their budget will be re-used."
            )
            interrupted.hint = f"continue the search with: {command}"
            raise interrupted from None
    if worker:
        return
    print_summary(plan, summary)


# --------------------------------------------------------------------------- one process


def run_here(plan, *, quiet: bool = False):
    """Trials in this process, shown live; returns the summary (outputs written unless ``quiet``: a worker's parent writes them)."""
    from trainer.api import train
    from trainer.sweep import run_trials, write_outputs
    from trainer.sweep.driver import open_plan_study
    from trainer.integrations.optuna import budget_used

    study = open_plan_study(plan)
    if quiet:
        run_trials(plan, QuietSweep(), train=train, study=study)
        return None
    display = SweepDisplay()
    display.on_sweep_start(plan.start_info(budget_used(study)))
    with tracked_sweep(plan, study):
        try:
            run_trials(plan, display, train=train, trial_events=[display.trial_events], study=study,
                       after_trial=lambda s: write_outputs(plan, s, final=False))
        finally:
            display.close()
    return write_outputs(plan, study)


def tracked_sweep(plan, study):
    """With tracking.mlflow: the sweep's parent MLflow run is open while trials run; FINISHED, or KILLED on Ctrl-C."""
    from trainer.sweep.driver import tracking_parent

    run_id = tracking_parent(plan, study)
    if run_id is None:
        return contextlib.nullcontext()
    from trainer.integrations.mlflow import ends_run

    return ends_run(plan.trial_config, run_id)


def _final_outputs_quietly(plan) -> None:
    """After Ctrl-C: what finished is still written (a second Ctrl-C here skips it)."""
    from trainer.sweep import write_outputs

    try:
        write_outputs(plan, final=False)
    except Exception:  # noqa: BLE001 - the interrupt is what the user must see
        pass


def _quiet_optuna() -> None:
    """Optuna logs every trial at INFO on stderr; the sweep's own display says it better."""
    try:
        import optuna
    except ImportError:
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)


# --------------------------------------------------------------------------- several processes


def run_with_workers(plan, workers: int, config: Path, overrides: list[str], trials, storage, study):
    """``workers`` child processes run trials against the study; this one shows them finish and writes the outputs."""
    from trainer.integrations.optuna import budget_used, fail_lost_trials
    from trainer.sweep.driver import open_plan_study

    live = open_plan_study(plan)  # created here once, before the workers race to create it
    display = SweepDisplay()
    for number in fail_lost_trials(live):
        display.on_notice(f"trial {number} was left running by a process that stopped; it is marked lost and its budget re-used.")
    display.on_sweep_start(plan.start_info(budget_used(live), workers))
    seen = {t.number: t.state.name for t in live.get_trials(deepcopy=False)}
    command, env = worker_command(plan, config, overrides)
    # Own sessions: a Ctrl-C in the terminal reaches this process only, which then stops each worker once (SIGTERM)
    with tracked_sweep(plan, live):  # the parent MLflow run exists before the workers look for it in the study
        return _watch_workers(plan, live, display, seen, command, env, workers)


def worker_command(plan, config: Path, overrides: list[str], base_env=None) -> tuple[list[str], dict[str, str]]:
    """A worker process's command line and environment: the storage travels in STORAGE_ENV, never on the command line (``ps``)."""
    import os

    from trainer.secrets import secret_env

    from trainer.secrets import has_secret

    hidden = any(has_secret(o) for o in overrides)  # all of them, in order: later --set values win
    command = [sys.executable, "-m", "trainer", "sweep", str(config), *(a for o in ([] if hidden else overrides) for a in ("--set", o)),
               "--sweep-dir", str(plan.sweep_dir), "--study", plan.study_name, "--trials", str(plan.budget), "--worker"]
    env = {k: v for k, v in (os.environ if base_env is None else base_env).items() if k not in (STORAGE_ENV, WORKER_SET_ENV)}
    if hidden:
        env = secret_env(WORKER_SET_ENV, json.dumps(overrides), env)
    return command, secret_env(STORAGE_ENV, plan.storage, env) if plan.storage else env


def _worker_overrides() -> list[str]:
    """A worker's --set values that its parent passed in WORKER_SET_ENV (one of them held a credential)."""
    import os

    from trainer.errors import BadInputError

    text = os.environ.get(WORKER_SET_ENV)
    if not text:
        return []
    try:
        values = json.loads(text)
    except ValueError:
        values = None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise BadInputError(f"{WORKER_SET_ENV} is not a JSON list of --set values (a trainer sweep --workers parent sets it).")
    return values


def _watch_workers(plan, live, display, seen, command, env, workers: int):
    """Start the workers, show their trials as they change state, stop them on Ctrl-C; returns the summary."""
    from trainer.errors import BadInputError
    from trainer.sweep import write_outputs
    from trainer.sweep.outputs import trial_record

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
            (display.on_trial_start if state == "RUNNING" else display.on_trial_end)(record)
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
        display.close()
    codes = [child.returncode for child in children]
    if any(code in (130, -2, -15) for code in codes):
        raise KeyboardInterrupt
    if any(code not in (0, None) for code in codes):
        raise BadInputError(f"a worker stopped with exit code {max(codes, key=abs)} (its message is above); the other trials are kept.")
    return write_outputs(plan, live)


# --------------------------------------------------------------------------- display


class QuietSweep(SweepEvents):
    """A worker's events: notices only (on stderr); the parent shows the trials."""

    def on_notice(self, text: str) -> None:
        from trainer.console import notice

        notice(text)


class SweepDisplay(SweepEvents):
    """A progress bar over trials and a table that grows as trials finish (on a terminal, live; elsewhere printed once)."""

    def __init__(self, out: Any = None):
        from trainer.console import console

        self.console = out or console
        self.records: dict[int, TrialRecord] = {}
        self.info: SweepStartInfo | None = None
        self.live = None
        self.progress = None
        self.task = None
        self.trial_events = _TrialEpochs(self)

    def on_sweep_start(self, info: SweepStartInfo) -> None:
        from rich.live import Live
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from trainer.console import key_value_table

        self.info = info
        self.console.print(key_value_table("trainer sweep", [
            ("study", f"{info.study} in {info.storage}"),
            ("sweep directory", str(info.sweep_dir)),
            ("objective", f"{info.direction} {info.metric}"),
            ("space", ", ".join(info.space)),
            ("trials", f"{info.budget}" + (f" ({info.used} already counted: continuing)" if info.used else "")
             + (f", {info.workers} worker processes" if info.workers > 1 else "")),
        ]))
        self.progress = Progress(
            TextColumn("[key]trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[now]}"),
            console=self.console,
        )
        self.task = self.progress.add_task("trials", total=info.budget, completed=min(info.used, info.budget), now="")
        if self.console.is_terminal:
            self.live = Live(self._render(), console=self.console, refresh_per_second=4)
            self.live.start()

    def on_notice(self, text: str) -> None:
        from trainer.console import _escape

        self.console.print(f"[notice]notice:[/notice] {_escape(text)}")

    def on_trial_start(self, record: TrialRecord) -> None:
        self.records[record.number] = record
        self._now(f"trial {record.number} running")

    def on_trial_end(self, record: TrialRecord) -> None:
        self.records[record.number] = record
        if self.progress is not None and record.status in ("completed", "pruned", "failed"):
            self.progress.advance(self.task)
        self._now("")
        if self.live is None:  # not a terminal: one line per trial, so logs show progress
            self.console.print(_trial_line(record, self.info), soft_wrap=True)

    def _now(self, text: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, now=text)
        if self.live is not None:
            self.live.update(self._render())

    def _render(self):
        from rich.console import Group

        return Group(trials_table(list(self.records.values()), self.info, limit=15), self.progress)

    def close(self) -> None:
        if self.live is not None:
            self.live.update(self._render())
            self.live.stop()
            self.live = None


class _TrialEpochs(RunEvents):
    """The running trial's epoch, shown beside the trials bar."""

    def __init__(self, display: SweepDisplay):
        self.display = display

    def on_epoch_start(self, epoch: int, epochs: int, steps: int | None) -> None:
        running = [n for n, r in self.display.records.items() if r.status == "running"]
        self.display._now(f"trial {running[-1] if running else '?'}: epoch {epoch}/{epochs}")


def _trial_line(record: TrialRecord, info: SweepStartInfo | None) -> str:
    from trainer.console import _escape, format_value

    params = "  ".join(f"{k}={format_value(v)}" for k, v in record.params.items())
    metric = info.metric if info else "value"
    parts = [f"trial {record.number}", record.status, f"{metric} {format_value(record.value)}", params,
             f"{'-' if record.wall_seconds is None else f'{record.wall_seconds:.1f}'} s"]
    if record.reason and record.status != "completed":
        parts.append(record.reason)
    return _escape("  ".join(parts))


def trials_table(records: list[TrialRecord], info: SweepStartInfo | None, *, limit: int | None = None, best: int | None = None):
    """The trials as a Rich table: number, state, value, each parameter, epochs, seconds, why it did not complete."""
    from rich.table import Table

    from trainer.console import format_value, plain

    keys = list(info.space) if info else sorted({k for r in records for k in r.params})
    rows = sorted(records, key=lambda r: r.number)
    hidden = len(rows) - limit if limit is not None and len(rows) > limit else 0
    table = Table(title="trials" + (f" (last {limit} of {len(rows)})" if hidden else ""), title_justify="left")
    table.add_column("trial", justify="right")
    table.add_column("state")
    table.add_column(info.metric if info else "value", justify="right")
    for key in keys:
        table.add_column(short_name(key, keys), justify="right")
    table.add_column("epochs", justify="right")
    table.add_column("seconds", justify="right")
    for r in rows[hidden:]:
        is_best = best is not None and r.number == best
        cells = (f"{r.number}{' best' if is_best else ''}", r.status, format_value(r.value), *(_cell(r.params.get(k)) for k in keys),
                 format_value(r.epochs), "-" if r.wall_seconds is None else f"{r.wall_seconds:.1f}")
        table.add_row(*(plain(cell) for cell in cells), style="ok" if is_best else None)  # a study's records are data: never markup
    return table


def _cell(value: Any) -> str:
    from trainer.console import format_value

    return format_value(value).replace(", ", ",")  # [256,128]: narrow columns


def short_name(key: str, keys: list[str]) -> str:
    """A column title: the key's last part (``learning_rate``) unless another key ends the same."""
    last = key.rsplit(".", 1)[-1]
    return last if sum(k.rsplit(".", 1)[-1] == last for k in keys) == 1 else key


def print_summary(plan, summary) -> None:
    """The whole study's table, the best trial and the files written; exit 1 when no trial completed."""
    from trainer.console import _escape, console, notice, print_table
    from trainer.errors import RunFailedError

    if summary is None:
        return
    info = plan.start_info(summary.used)
    print_table(trials_table(summary.records, info, best=summary.best.number if summary.best else None))
    for record in summary.records:
        if record.status not in ("completed", "pruned", "running") and record.reason:
            console.print(f"trial {record.number} {record.status}: {_escape(record.reason)}", soft_wrap=True)
    for text in summary.notices:
        notice(text)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.counts.items()))
    console.print(f"{summary.used} of {summary.budget} trials counted ({_escape(counts)}).", soft_wrap=True)
    for path in summary.files:
        console.print(f"wrote {_escape(str(path))}", soft_wrap=True)
    if summary.best is None:
        raise RunFailedError(f"no trial completed ({counts}); see {plan.sweep_dir / 'trials.csv'} for the reasons.")
    console.print(
        f"[ok]best:[/ok] trial {summary.best.number}, {plan.metric} {summary.best.value:.6g} "
        f"({', '.join(summary.best.overrides)}); rerun it with: trainer run {plan.sweep_dir / 'best.yaml'}",
        soft_wrap=True, highlight=False, markup=True,
    )


def continue_command(config: Path, overrides: list[str], plan, trials, storage, study, workers: int, *, storage_from_env: bool = False) -> str:
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


def _storage_from_env(context: typer.Context) -> bool:
    """Whether --storage came from STORAGE_ENV rather than the command line (typer's Context: click is not a dependency of typer)."""
    source = context.get_parameter_source("storage")
    return source is not None and source.name == "ENVIRONMENT"
