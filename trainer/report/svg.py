"""Line charts as inline SVG text: every label escaped, every number finite, at most ``MAX_POINTS`` points a line.

Hand-written rather than matplotlib's SVG: a chart is a few kilobytes (matplotlib's is ~100 KB of
glyph paths), it draws in microseconds, and text stays text (selectable, escaped once, here).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

MAX_LEGEND = 24  # lines named below a chart
MAX_POINTS = 2_000  # a line with more is thinned evenly (a history.csv may hold a million rows)
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


@dataclass
class Line:
    label: str
    points: list[tuple[float, float]]
    colour: str = COLOURS[0]
    dashed: bool = False


@dataclass
class Mark:
    """A vertical line at ``x`` with a label (the best epoch)."""

    x: float
    label: str
    colour: str = "#d62728"


@dataclass
class Chart:
    title: str
    lines: list[Line]
    x_label: str = "epoch"
    y_label: str = ""
    marks: list[Mark] = field(default_factory=list)
    log_y: bool = False
    integer_x: bool = True


def escape(value: Any) -> str:
    """Text from a run's files as a page shows it: controls made visible (``trainer.console.visible``), then HTML-escaped."""
    import html

    from trainer.console import visible

    return html.escape(visible(value), quote=True)


def finite_points(xs: Sequence[object], ys: Sequence[object]) -> list[tuple[float, float]]:
    """(x, y) pairs where both are finite numbers (text, None, NaN and infinity left out)."""
    def number(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    return [(float(x), float(y)) for x, y in zip(xs, ys) if number(x) and number(y)]  # type: ignore[arg-type]


def thin(points: list[tuple[float, float]], limit: int = MAX_POINTS) -> list[tuple[float, float]]:
    if len(points) <= limit:
        return points
    step = len(points) / limit
    return [points[int(i * step)] for i in range(limit - 1)] + [points[-1]]


def _ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if integer:
        step = max(1.0, math.ceil(step))
    start = math.ceil(low / step) * step
    ticks, value = [], start
    while value <= high + step * 1e-9 and len(ticks) < 50:
        ticks.append(value)
        value += step
    return ticks


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.1e}"
    return f"{value:.4g}"


def render(chart: Chart, width: int = 440, height: int = 280) -> str:
    """The chart as an ``<svg>`` element; a chart with no finite point says so in its middle."""
    left, right, top, bottom = 58, 12, 28, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    legend_rows = (min(len(chart.lines), MAX_LEGEND) + 1) // 2
    full_height = height + 14 * legend_rows + (10 if legend_rows else 0)
    lines = [Line(l.label, thin([p for p in l.points if not chart.log_y or p[1] > 0]), l.colour, l.dashed) for l in chart.lines]
    points = [p for line in lines for p in line.points]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{full_height}" viewBox="0 0 {width} {full_height}" role="img" aria-label="{escape(chart.title)}">',
        f'<rect x="0" y="0" width="{width}" height="{full_height}" fill="#fff"/>',
        f'<text x="{width / 2:.1f}" y="17" text-anchor="middle" class="title">{escape(chart.title)}</text>',
    ]
    if not points:
        parts.append(f'<text x="{width / 2:.1f}" y="{height / 2:.1f}" text-anchor="middle" class="empty">no values to draw</text></svg>')
        return "".join(parts)
    xs = [p[0] for p in points] + [m.x for m in chart.marks if math.isfinite(m.x)]
    ys = [math.log10(p[1]) if chart.log_y else p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.05 or 0.05
        y0, y1 = y0 - pad, y1 + pad
    else:
        pad = (y1 - y0) * 0.05
        y0, y1 = y0 - pad, y1 + pad

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return top + (1 - ((math.log10(y) if chart.log_y else y) - y0) / (y1 - y0)) * plot_h

    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>')
    for tick in _ticks(x0, x1, 6, chart.integer_x):
        x = sx(tick)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#eee"/>')
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 15}" text-anchor="middle" class="tick">{escape(_number(tick))}</text>')
    for tick in _ticks(y0, y1, 5):
        y = top + (1 - (tick - y0) / (y1 - y0)) * plot_h
        label = f"{10**tick:.3g}" if chart.log_y else _number(tick)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" class="tick">{escape(label)}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle" class="axis">{escape(chart.x_label)}</text>')
    if chart.y_label:
        parts.append(f'<text x="12" y="{top + plot_h / 2:.1f}" text-anchor="middle" class="axis" transform="rotate(-90 12 {top + plot_h / 2:.1f})">{escape(chart.y_label)}</text>')
    for mark in chart.marks:
        if math.isfinite(mark.x):
            x = sx(mark.x)
            parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="{mark.colour}" stroke-dasharray="4 3" class="mark"><title>{escape(mark.label)}</title></line>')
            anchor, shift = ("end", -3) if x > left + plot_w * 0.6 else ("start", 3)
            parts.append(f'<text x="{x + shift:.1f}" y="{top + 11 + 11 * chart.marks.index(mark) % 66}" text-anchor="{anchor}" class="marklabel" fill="{mark.colour}">{escape(mark.label)}</text>')
    for line in lines:
        if not line.points:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line.points)
        dash = ' stroke-dasharray="6 3"' if line.dashed else ""
        parts.append(f'<polyline points="{path}" fill="none" stroke="{line.colour}" stroke-width="2"{dash}><title>{escape(line.label)}</title></polyline>')
        if len(line.points) <= 60:
            parts.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{line.colour}"/>' for x, y in line.points)
    for index, line in enumerate(lines[:MAX_LEGEND]):  # below the plot, two to a row: never over a line or a mark
        x = left + (index % 2) * (plot_w / 2)
        y = height + 14 * (index // 2) + 10
        dash = ' stroke-dasharray="6 3"' if line.dashed else ""
        parts.append(f'<line x1="{x:.1f}" y1="{y - 4}" x2="{x + 16:.1f}" y2="{y - 4}" stroke="{line.colour}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{x + 20:.1f}" y="{y}" class="legend">{escape(_short(line.label, 34))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
