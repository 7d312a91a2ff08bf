"""``trainer sweep``: a hyperparameter search on Optuna; each trial is an ordinary run directory."""
from __future__ import annotations

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
STORAGE_ENV = "TRAINER_SWEEP_STORAGE"  # = trainer.sweep.workers.STORAGE_ENV (tests/cli/test_cli_door.py checks): --storage from the environment


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
    from trainer.api import plan_sweep, sweep as search, sweep_command
    from trainer.cli.common import interrupts_as_keyboard_interrupt, quiet_tensorflow
    from trainer.errors import EXIT_INTERRUPTED, RunInterrupted

    plan = plan_sweep(config, overrides=set_ or [], trials=trials, storage=storage, study=study, sweep_dir=sweep_dir, worker=worker)
    _quiet_optuna()
    command = sweep_command(plan, trials=trials, storage=storage, study=study, workers=workers, storage_from_env=_storage_from_env(ctx))
    display = QuietSweep() if worker else SweepDisplay()
    with interrupts_as_keyboard_interrupt():
        try:
            summary = search(plan, workers=workers, events=display, trial_events=[] if worker else [display.trial_events], worker=worker,
                             set_environment=True, before_keras=quiet_tensorflow)
        except (RunInterrupted, KeyboardInterrupt) as error:
            if worker:  # the parent says what happened and how to continue
                raise typer.Exit(EXIT_INTERRUPTED) from None
            interrupted = error if isinstance(error, RunInterrupted) else RunInterrupted(
                "the sweep stopped; trials that were running are recorded as interrupted and their budget will be re-used."
            )
            interrupted.hint = f"continue the search with: {command}"
            raise interrupted from None
    if worker:
        return
    print_summary(plan, summary)


def _quiet_optuna() -> None:
    """Optuna logs every trial at INFO on stderr; the sweep's own display says it better."""
    try:
        import optuna
    except ImportError:
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)


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

    def on_sweep_end(self) -> None:
        self.close()

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


def _storage_from_env(context: typer.Context) -> bool:
    """Whether --storage came from STORAGE_ENV rather than the command line (typer's Context: click is not a dependency of typer)."""
    source = context.get_parameter_source("storage")
    return source is not None and source.name == "ENVIRONMENT"
