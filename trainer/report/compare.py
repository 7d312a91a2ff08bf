"""Runs side by side: one metrics table (the best value per column marked), the config keys that differ, curves overlaid.

``comparison(views)`` is what both ``trainer compare`` (a page) and ``trainer runs --compare``
(a terminal table) show. Runs of different datasets or class lists are compared with a note.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from trainer.report.run_view import RunView

SECTIONS = (("validation", "val"), ("test", "test"), ("test_tta", "test tta"))
NOT_SCORES = ("mode", "views", "examples")
MAX_VALUE = 200  # characters of a config value shown


def lower_is_better(name: str) -> bool:
    return any(word in name for word in ("loss", "error", "seconds"))


@dataclass
class Comparison:
    columns: list[str]  # after "run" and "status"
    rows: list[dict[str, Any]]  # {"run", "status", column: value}
    best: dict[str, set[int]]  # column -> the rows holding its best value
    differences: list[tuple[str, list[str]]]  # config key -> each run's value (shown text)
    notes: list[str] = field(default_factory=list)


def comparison(views: list[RunView]) -> Comparison:
    columns: list[str] = ["epochs", "best epoch"]
    for section, label in SECTIONS:
        for view in views:
            for key, value in view.section(section).items():
                name = f"{label} {key}"
                if key not in NOT_SCORES and isinstance(value, (int, float)) and not isinstance(value, bool) and name not in columns:
                    columns.append(name)
    columns.append("wall seconds")
    rows = []
    for view in views:
        row: dict[str, Any] = {"run": view.name, "status": view.status,
                               "epochs": view.metrics.get("epochs_completed", len(view.rows)), "best epoch": view.best_epoch,
                               "wall seconds": view.metrics.get("wall_seconds")}
        for section, label in SECTIONS:
            for key, value in view.section(section).items():
                if f"{label} {key}" in columns:
                    row[f"{label} {key}"] = value
        rows.append(row)
    best: dict[str, set[int]] = {}
    for column in columns:
        if column in ("epochs", "best epoch") or len(views) < 2:
            continue
        values = [(i, r.get(column)) for i, r in enumerate(rows) if isinstance(r.get(column), (int, float)) and r.get(column) == r.get(column)]
        if values:
            target = (min if lower_is_better(column) else max)(v for _, v in values)
            holders = {i for i, v in values if v == target}
            if len(holders) < len(rows):  # every run alike: nothing is best
                best[column] = holders
    return Comparison(columns, rows, best, config_differences(views), notes(views))


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 3] + "..."


def config_differences(views: list[RunView]) -> list[tuple[str, list[str]]]:
    """Config keys whose values differ between the runs (a key one run lacks shows as ``(absent)``), in first-seen order."""
    keys: list[str] = []
    for view in views:
        keys += [k for k in view.config if k not in keys]
    missing = object()
    out = []
    for key in keys:
        values = [view.config.get(key, missing) for view in views]
        if any(v is missing for v in values) or len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1:
            out.append((key, ["(absent)" if v is missing else _shown(v) for v in values]))
    return out


def notes(views: list[RunView]) -> list[str]:
    """What makes the runs' numbers less comparable: other datasets or class lists, runs that did not complete, damaged files."""
    out = []
    datasets = {view.dataset or str(view.config.get("data.dataset")) for view in views}
    paths = {str(view.config.get("data.path")) for view in views}
    if len(datasets) > 1 or len(paths) > 1:
        out.append("the runs trained on different data (data.dataset or data.path differ): their numbers measure different things.")
    lists = {tuple(view.class_names) for view in views if view.class_names}
    if len(lists) > 1:
        out.append("the runs have different class lists (manifest.json): their accuracies are over different classes.")
    unfinished = [view.name for view in views if view.status != "completed"]
    if unfinished:
        out.append(f"not completed: {', '.join(unfinished)} (their numbers are those of their last epoch, without a test split).")
    for view in views:
        out += [f"{view.name}: {problem}" for problem in view.problems]
    return out


def compare_html(views: list[RunView]) -> str:
    from trainer.report.page import curve_charts, number, page, table, text

    found = comparison(views)
    body = [f"<h1>{len(views)} runs compared</h1>"]
    if found.notes:
        body.append('<ul class="problems">' + "".join(f"<li>{text(n)}</li>" for n in found.notes) + "</ul>")
    body.append('<h2>Metrics</h2><p class="note">the best value of each column in bold (lowest for losses and seconds, highest otherwise).</p>')
    rows, marks = [], []
    for index, row in enumerate(found.rows):
        rows.append([text(row["run"]), text(row["status"]), *[number(row.get(c)) for c in found.columns]])
        marks.append(["", "", *["best" if index in found.best.get(c, ()) else "" for c in found.columns]])
    body.append(table(["run", "status", *[text(c) for c in found.columns]], rows, left=2, cells=marks))
    body.append("<h2>Curves</h2>")
    if any(view.rows for view in views):
        body.append('<p class="note">validation solid, training dashed; a colour per run; each run\'s best epoch a dashed line in its colour.</p>')
        body.append('<div class="charts">' + "".join(curve_charts(views, overlay=True)) + "</div>")
    else:
        body.append('<p class="note">no run recorded an epoch.</p>')
    body.append("<h2>Config differences</h2>")
    if found.differences:
        body.append(table(["key", *[text(v.name) for v in views]], [[text(k), *map(text, values)] for k, values in found.differences], left=len(views) + 1))
    else:
        body.append('<p class="note">the configs are the same.</p>')
    return page("compare", f"{len(views)} runs compared", body)
