"""``report.html``: one run on one self-contained page (inline CSS and SVG, ``data:`` images, no script, no request).

Every string from the run directory is escaped (``text``); the page's Content-Security-Policy
allows no script and no request but ``data:`` images, so the page stays inert even if a string
slipped through. ``is_report_page`` recognises trainer's own page (the output rule replaces it).
"""
from __future__ import annotations

import html
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from trainer.report import svg
from trainer.report.run_view import RunView

PAGE_HEAD = "<!DOCTYPE html>\n<!-- written by trainer: "
PAGE_TAIL = "</html>\n"
REPORT_FILE = "report.html"
MAX_TABLE_CLASSES = 60  # a confusion matrix wider than this is described, not drawn
MAX_ROWS = 1_000  # per-class rows shown
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;background:#fff;max-width:1400px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd;padding-bottom:3px}
.meta{color:#555;font-size:13px}.badge{display:inline-block;padding:1px 8px;border-radius:9px;font-size:13px;color:#fff;background:#777}
.badge.completed{background:#2a7d2a}.badge.failed{background:#b22}.badge.interrupted,.badge.stopped,.badge.pruned{background:#b67d00}
table{border-collapse:collapse;font-size:13px;margin:4px 0}td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}td.best{font-weight:bold;background:#e3f4e3}
.cm td{min-width:26px;text-align:center}.charts{display:flex;flex-wrap:wrap;gap:12px}
svg.chart{border:1px solid #eee}svg .title{font-size:13px;font-weight:bold}svg .tick,svg .legend,svg .marklabel{font-size:10px}
svg .axis{font-size:11px}svg .empty{font-size:13px;fill:#888}.problems{color:#8a4b00;font-size:13px}
.grid{display:flex;flex-wrap:wrap;gap:10px}.cell{width:120px;font-size:11px;text-align:center}
.cell img{width:112px;height:112px;image-rendering:pixelated;border:1px solid #ccc;background:#fff}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}details{margin:6px 0}.note{color:#555;font-size:13px}
"""


text = svg.escape  # every string from a run directory goes into a page through it


def number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
    return text(value)


def page(kind: str, title: str, body: Iterable[str]) -> str:
    """A whole page: head (CSP, style), ``body``, a footer saying when trainer wrote it."""
    from trainer import __version__

    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "".join([
        f"{PAGE_HEAD}{kind} -->\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{text(title)}</title><style>{STYLE}</style></head><body>\n",
        *body,
        f'\n<p class="meta">written by trainer {text(__version__)} on {written}; a self-contained page: no script, no request.</p>\n',
        "</body>", PAGE_TAIL,
    ])


def is_report_page(path: Path) -> bool:
    """Whether ``path`` holds a page trainer wrote (its first and last bytes): the output rule's recogniser."""
    from trainer.readers import starts_and_ends_with

    return starts_and_ends_with(path, PAGE_HEAD.encode(), PAGE_TAIL.encode())


def table(headers: list[str] | None, rows: list[list[str]], *, left: int = 1, styles: list[list[str]] | None = None, cells: list[list[str]] | None = None) -> str:
    """An HTML table. ``headers`` and cells are HTML already (escaped by the caller); the first ``left`` columns align
    left; ``styles``: a CSS style per cell; ``cells``: a CSS class per cell (``best``)."""
    head = "" if headers is None else "<tr>" + "".join(f'<th class="l">{h}</th>' if i < left else f"<th>{h}</th>" for i, h in enumerate(headers)) + "</tr>"
    body = []
    for r, row in enumerate(rows):
        out = []
        for i, cell in enumerate(row):
            names = " ".join(n for n in ("l" if i < left else "", cells[r][i] if cells else "") if n)
            attributes = (f' class="{names}"' if names else "") + (f' style="{styles[r][i]}"' if styles and styles[r][i] else "")
            out.append(f"<td{attributes}>{cell}</td>")
        body.append("<tr>" + "".join(out) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


# --------------------------------------------------------------------------- curves


def curve_charts(views: list[RunView], *, overlay: bool = False) -> list[str]:
    """One chart per loss/metric (training dashed, validation solid) and one of the learning rate (log scale).

    One run: the best epoch is marked. Several (``overlay``): a colour per run, each run's best epoch marked in its colour.
    """
    from trainer.inference.plots import curve_names

    names: list[str] = []
    for view in views:
        names += [n for n in curve_names(view.rows) if n not in names]
    charts = []
    for name in names[:24]:
        lines, marks = [], []
        for index, view in enumerate(views):
            colour = svg.COLOURS[index % len(svg.COLOURS)]
            epochs = [row.get("epoch") for row in view.rows]
            prefix = f"{view.name}: " if overlay else ""
            train = svg.finite_points(epochs, [row.get(name) for row in view.rows])
            val = svg.finite_points(epochs, [row.get(f"val_{name}") for row in view.rows])
            if train:
                lines.append(svg.Line(f"{prefix}training", train, colour if overlay else svg.COLOURS[0], dashed=overlay))
            if val:
                lines.append(svg.Line(f"{prefix}validation", val, colour if overlay else svg.COLOURS[1]))
            if view.best_epoch is not None:
                marks.append(svg.Mark(view.best_epoch, f"best {view.best_epoch}" if not overlay else f"{view.name[:12]} best", colour if overlay else "#d62728"))
        charts.append(svg.render(svg.Chart(name, lines, y_label=name, marks=marks)))
    rate_lines = []
    for index, view in enumerate(views):
        points = svg.finite_points([row.get("epoch") for row in view.rows], [row.get("learning_rate") for row in view.rows])
        if points:
            rate_lines.append(svg.Line(view.name if overlay else "learning rate", points, svg.COLOURS[index % len(svg.COLOURS)] if overlay else "#555"))
    if rate_lines:
        values = [p[1] for line in rate_lines for p in line.points]
        positive = min(values) > 0 and max(values) > 1.5 * min(values)  # a log scale where the rate changes
        marks = [] if overlay or views[0].best_epoch is None else [svg.Mark(views[0].best_epoch, f"best {views[0].best_epoch}")]
        charts.append(svg.render(svg.Chart("learning rate" + (" (log scale)" if positive else ""), rate_lines, y_label="learning rate", marks=marks, log_y=positive)))
    return charts


# --------------------------------------------------------------------------- the report


def metrics_rows(view: RunView) -> tuple[list[str], list[list[Any]]]:
    """(columns, rows) of the run's recorded numbers: validation, test and test with TTA, one column per metric."""
    sections = [("validation", view.section("validation")), ("test", view.section("test")), ("test, TTA", view.section("test_tta"))]
    columns: list[str] = []
    for _, values in sections:
        columns += [k for k, v in values.items() if k not in columns and k not in ("mode", "views", "examples") and isinstance(v, (int, float))]
    rows = [[label, *[values.get(c) for c in columns]] for label, values in sections if values]
    return columns, rows


def report_html(view: RunView, predictions: Any = None, absent: str | None = None) -> str:
    """The page of one run; ``predictions`` (``TestPredictions``) or ``absent``, the reason there are none."""
    setting = view.setting()
    body = [f"<h1>{text(view.name)}</h1>"]
    body.append(f'<p><span class="badge {text(view.status) if view.status.isalpha() else ""}">{text(view.status)}</span>')
    if view.reason:
        body.append(f" <span class=\"note\">{text(view.reason)}</span>")
    body.append("</p>")
    facts = [
        ("started", view.started or "-"), ("epochs", number(view.metrics.get("epochs_completed", len(view.rows)))),
        ("wall seconds", number(view.metrics.get("wall_seconds"))), ("backend", setting["backend"]), ("device", setting["device"]),
        ("precision", setting["precision"]), ("dataset", view.dataset or view.config.get("data.dataset") or "-"),
        ("best epoch", f"{view.best_epoch} by {view.monitor}" if view.best_epoch is not None else "-"), ("run directory", str(view.path)),
    ]
    body.append(table(None, [[text(k), text(v)] for k, v in facts], left=2))
    if view.problems:
        body.append('<ul class="problems">' + "".join(f"<li>{text(p)}</li>" for p in view.problems) + "</ul>")

    body.append("<h2>Metrics</h2>")
    columns, rows = metrics_rows(view)
    if rows:
        body.append(table(["split", *map(text, columns)], [[text(r[0]), *map(number, r[1:])] for r in rows]))
    else:
        body.append('<p class="note">no validation or test numbers were recorded (see above).</p>')
    if predictions is not None:
        summary = predictions.summary
        body.append(f'<p class="note">from the test split\'s predictions ({predictions.examples:,} examples):</p>')
        figures = ["accuracy", "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_f1"]
        values = {"accuracy": predictions.accuracy, **summary}
        body.append(table([text(f.replace("_", " ")) for f in figures], [[number(values.get(f)) for f in figures]], left=0))

    body.append("<h2>Curves</h2>")
    if view.rows:
        body.append('<div class="charts">' + "".join(curve_charts([view])) + "</div>")
    else:
        body.append('<p class="note">no epoch was recorded, so there are no curves.</p>')

    if predictions is None:
        body.append("<h2>Test split</h2>")
        body.append(f'<p class="note">no confusion matrix, per-class scores or misclassified examples: {text(absent or "no predictions")}</p>')
    else:
        body += test_sections(predictions)

    body.append("<h2>Config</h2>")
    body.append(f"<details><summary>config.yaml ({len(view.config_text.splitlines())} lines)</summary><pre>{text_block(view.config_text)}</pre></details>")
    return page("report", f"{view.name}: {view.status}", body)


def text_block(value: str) -> str:
    """Multi-line text (a config) for a ``<pre>``: newlines kept, every other control visible, HTML-escaped."""
    return "\n".join(text(line) for line in value.splitlines())


def test_sections(predictions: Any) -> list[str]:
    names = predictions.class_names
    matrix = predictions.confusion_matrix
    body = ["<h2>Confusion matrix (test split)</h2>"]
    if len(matrix) > MAX_TABLE_CLASSES:
        body.append(f'<p class="note">{len(matrix):,} classes: too many to draw as a table here; trainer eval writes it as a picture.</p>')
    else:
        for title, normalised in (("counts (rows true class, columns predicted)", False), ("each row divided by its count (recall on the diagonal)", True)):
            body.append(f'<p class="note">{text(title)}</p>')
            body.append(matrix_table(matrix, names, normalised))
    body.append("<h2>Per-class scores (test split)</h2>")
    rows = [[number(r["class"]), text(r["name"]), number(r["precision"]), number(r["recall"]), number(r["f1"]), number(r["support"])] for r in predictions.per_class[:MAX_ROWS]]
    body.append(table(["class", "name", "precision", "recall", "f1", "support"], rows, left=2))
    if len(predictions.per_class) > MAX_ROWS:
        body.append(f'<p class="note">the first {MAX_ROWS:,} of {len(predictions.per_class):,} classes.</p>')
    body.append("<h2>Worst-misclassified test images</h2>")
    if not predictions.worst:
        body.append('<p class="note">no test image was misclassified.</p>')
    else:
        body.append('<p class="note">the most confident mistakes, most confident first.</p><div class="grid">')
        for item in predictions.worst:
            picture = f'<img src="{html.escape(item["image"], quote=True)}" alt="test image {item["index"]}">' if isinstance(item.get("image"), str) and item["image"].startswith("data:image/png;base64,") else "<p>(no image)</p>"
            body.append(
                f'<div class="cell">{picture}<div>#{item["index"]}: true <b>{text(item["true"])}</b></div>'
                f'<div>predicted <b>{text(item["predicted"])}</b> ({item["confidence"]:.1%})</div></div>'
            )
        body.append("</div>")
    return body


def matrix_table(matrix: list[list[int]], names: list[str], normalised: bool) -> str:
    """The confusion matrix as a table, each cell shaded by its share of its row (the true class)."""
    rows, styles = [], []
    for i, counts in enumerate(matrix):
        total = sum(counts) or 1
        rows.append([text(names[i]), *[f"{c / total:.2f}" if normalised else f"{c:,}" for c in counts]])
        styles.append([""] + [
            f"background:rgba(31,119,180,{0.08 + 0.9 * c / total:.2f});color:{'#fff' if c / total > 0.5 else '#222'}" if c else "" for c in counts
        ])
    return '<div class="cm">' + table(["true \\ predicted", *[text(n) for n in names]], rows, styles=styles) + "</div>"
