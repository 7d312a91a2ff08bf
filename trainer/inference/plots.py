"""Pictures of a run: training curves and confusion matrices (matplotlib, Agg, imported when drawn).

Figures are built with ``matplotlib.figure.Figure`` (no pyplot global state), rendered into memory
as PNG bytes, and written by ``trainer.outputs`` (atomically; a named output under its rule). Each
PNG carries a ``Software: trainer`` text chunk, so trainer recognises its own picture
(``is_trainer_png``) and replaces it, while any other file of that name is refused. Text drawn in
a picture (class names from a run's manifest) is drawn as it reads: no mathtext, controls escaped.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from trainer.outputs import atomic_write_bytes, write_file

CURVES_FILE = "curves.png"
# history.csv columns that describe the epoch rather than a loss or metric
NOT_CURVES = ("epoch", "phase", "learning_rate", "epoch_seconds", "examples_per_second")


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="tight")  # as tidy here as "constrained", 40% faster to draw


def preload() -> None:
    """Import matplotlib and load its fonts (one tiny drawing), so that the first real picture starts at once.

    The run calls it on a background thread once the first epoch has ended, where it costs little
    (~0.1 s of the next epoch for an MNIST MLP): most of a training step then runs in TensorFlow's
    native code, which does not hold the GIL.
    """
    import io

    figure = _figure(1, 1)
    from matplotlib.ticker import MaxNLocator  # noqa: F401 - imported for write_curves

    figure.subplots().set_title("0")
    figure.savefig(io.BytesIO(), format="png")


PNG_SOFTWARE = "trainer"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_bytes(figure) -> bytes:
    """The figure as PNG bytes, marked ``Software: trainer`` (a tEXt chunk before the image data)."""
    import io
    import warnings

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")  # a class name in a script the font lacks: boxes, not a warning
        warnings.filterwarnings("ignore", message="Tight layout not applied")  # long class names: the picture is cramped, not wrong
        figure.savefig(buffer, format="png", metadata={"Software": PNG_SOFTWARE})
    return buffer.getvalue()


def is_trainer_png(path: Path) -> bool:
    """Whether ``path`` is a PNG that trainer drew: its text chunks before the image data say ``Software: trainer``.

    Read through ``trainer.readers`` (a regular file, no link), at most the chunks before ``IDAT``.
    """
    from trainer.errors import BadInputError
    from trainer.readers import open_regular

    with open_regular(path, error=BadInputError, what="a picture") as handle:
        if handle.read(8) != _PNG_SIGNATURE:
            return False
        for _ in range(64):  # IHDR, a few text chunks, pHYs: then IDAT
            head = handle.read(8)
            if len(head) != 8:
                return False
            length, kind = struct.unpack(">I4s", head)
            if kind in (b"IDAT", b"IEND") or length > 1 << 16:
                return False
            body = handle.read(length + 4)[:length]
            if kind == b"tEXt" and body == b"Software\x00" + PNG_SOFTWARE.encode():
                return True
    return False


def _save(figure, path: Path) -> Path:
    atomic_write_bytes(Path(path), png_bytes(figure))
    return Path(path)


MAX_LABEL = 60  # characters of a class name drawn as a tick label


def _label(text: object, limit: int = MAX_LABEL) -> str:
    """Text from a run's files as a picture shows it: controls escaped (no font has glyphs for them), at most ``limit`` characters."""
    from trainer.console import visible

    shown = visible(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def curve_names(rows: list[dict[str, Any]]) -> list[str]:
    """The losses and metrics in history rows, training names only (``loss``, ``accuracy``, ...)."""
    names: list[str] = []
    for row in rows:
        for key in row:
            if key not in NOT_CURVES and not key.startswith("val_") and key not in names:
                names.append(key)
    return names


def write_curves(rows: list[dict[str, Any]], path: Path, *, name: str | None = None, best_epoch: int | None = None) -> Path:
    """``curves.png``: one panel per loss/metric (training against validation, per epoch) and one of the learning rate.

    The title names the run (``name``, default: the folder the picture goes into); ``best_epoch``
    (the epoch ``model.h5`` holds) is a dashed line in every panel.
    """
    import math

    names = curve_names(rows) or ["loss"]
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(rows)]
    rates = [(e, row.get("learning_rate")) for e, row in zip(epochs, rows) if isinstance(row.get("learning_rate"), (int, float)) and math.isfinite(row["learning_rate"])]
    panels = len(names) + (1 if rates else 0)
    figure = _figure(4.2 * panels, 3.7)
    from matplotlib.ticker import MaxNLocator

    axes = figure.subplots(1, panels, squeeze=False)[0]
    for axis, metric in zip(axes, names):
        for key, label in ((metric, "training"), (f"val_{metric}", "validation")):
            points = [(e, row.get(key)) for e, row in zip(epochs, rows) if isinstance(row.get(key), (int, float))]
            if points:
                axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        axis.set_title(_label(metric), parse_math=False)
    if rates:
        axis = axes[-1]
        axis.plot([r[0] for r in rates], [r[1] for r in rates], color="0.3", marker=".", label="learning rate")
        if all(r[1] > 0 for r in rates) and max(r[1] for r in rates) > 1.5 * min(r[1] for r in rates):
            axis.set_yscale("log")
        axis.set_title("learning rate")
    for axis in axes:
        if best_epoch is not None:
            axis.axvline(best_epoch, color="tab:red", linestyle="--", linewidth=1, label=f"best epoch {best_epoch}")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=8)
    figure.suptitle(_label(name if name is not None else Path(path).resolve().parent.name, 120), parse_math=False)
    return _save(figure, path)


def confusion_matrix_file(split: str) -> str:
    return f"confusion_matrix-{split}.png"


def write_confusion_matrix(
    matrix: list[list[int]], class_names: list[str], path: Path, title: str, *, overwrite: bool = False, what: str = "the confusion matrix"
) -> Path:
    """``confusion_matrix_png`` written to ``path`` under the output rule: a new file or trainer's own picture, else only with ``overwrite``."""
    return write_file(path, confusion_matrix_png(matrix, class_names, title), what, overwrite=overwrite, is_own=is_trainer_png, expected="a .png file name")


def confusion_matrix_png(matrix: list[list[int]], class_names: list[str], title: str) -> bytes:
    """Two heat maps, rows = true class and columns = predicted class: the counts, and each row divided by its count
    (recall on the diagonal, so a rare class's errors show as plainly as a common one's); numbers written in when they fit.
    The title says the accuracy the matrix holds."""
    import numpy as np

    counts = np.asarray(matrix)
    size = len(counts)
    totals = counts.sum(axis=1, keepdims=True)
    rows = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    accuracy = float(np.trace(counts) / counts.sum()) if counts.sum() else 0.0
    side = min(max(4.0, 0.45 * size + 2.0), 30.0)
    figure = _figure(2 * side + 2.0, side + 1.0)
    left, right = figure.subplots(1, 2)
    figure.suptitle(f"{_label(title, 200)}; accuracy {accuracy:.4f} of {int(counts.sum()):,}", parse_math=False)
    labels = [_label(name) for name in class_names[:size]] if len(class_names) >= size else [str(i) for i in range(size)]
    for axis, values, name, text in ((left, counts, "counts", lambda v: str(v)), (right, rows, "each row / its count", lambda v: f"{v:.2f}")):
        image = axis.imshow(values, cmap="Blues", interpolation="nearest", vmin=0, vmax=None if values is counts else 1)
        figure.colorbar(image, ax=axis, shrink=0.8)
        axis.set_title(name)
        axis.set_xlabel("predicted class")
        axis.set_ylabel("true class")
        if size <= 30:
            ticks = list(range(size))
            axis.set_xticks(ticks, labels, rotation=90 if max(map(len, labels), default=0) > 2 else 0, parse_math=False)
            axis.set_yticks(ticks, labels, parse_math=False)
        if size <= 20:
            threshold = values.max() / 2 if values.size else 0
            for row in range(size):
                for col in range(size):
                    axis.text(col, row, text(values[row, col]), ha="center", va="center", fontsize=8,
                              color="white" if values[row, col] > threshold else "black")
    return png_bytes(figure)


def write_lr_find_plot(rates: list[float], losses: list[float], smoothed: list[float], suggested: float | None, path: Path) -> Path:
    """``lr_find.png``: the loss of each step and its smoothed curve against the learning rate (log axis), the suggestion marked."""
    import math

    figure = _figure(6.4, 4.2)
    axis = figure.subplots()
    raw = [(r, v) for r, v in zip(rates, losses) if math.isfinite(v)]
    even = [(r, v) for r, v in zip(rates, smoothed) if math.isfinite(v)]
    if raw:
        axis.plot([p[0] for p in raw], [p[1] for p in raw], color="0.7", linewidth=1, label="loss per step")
    if even:
        axis.plot([p[0] for p in even], [p[1] for p in even], linewidth=2, label="smoothed loss")
    if suggested is not None:
        axis.axvline(suggested, color="tab:red", linestyle="--", label=f"suggested {suggested:.3g}")
        at = [v for r, v in even if r == suggested]
        if at:
            axis.plot([suggested], at, marker="o", color="tab:red")
    if even:  # a diverging step's raw loss would squash the curve that matters
        low, high = min(p[1] for p in even), max(p[1] for p in even)
        margin = 0.05 * (high - low) or 0.05 * abs(high) or 0.05
        axis.set_ylim(low - margin, high + margin)
    axis.set_xscale("log")
    axis.set_xlabel("learning rate (log scale)")
    axis.set_ylabel("training loss")
    axis.set_title("learning-rate range test")
    axis.grid(alpha=0.3, which="both")
    if axis.lines:
        axis.legend()
    return _save(figure, path)
