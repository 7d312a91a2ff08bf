"""The report and compare workflows: read the runs, predict where it can, build the page, write it under the output rule.

``trainer.api.report`` / ``trainer.api.compare`` and the end of a run call these; nothing here prints.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from trainer.errors import BadInputError
from trainer.report.page import REPORT_FILE, is_report_page
from trainer.report.run_view import RunView, read_run_view

PAGE_EXPECTED = "an .html file name"


@dataclass
class Report:
    """A written page: where, the run(s) it shows, and why the test-split sections are absent (None when present)."""

    path: Path | None
    views: list[RunView]
    absent: str | None = None
    html: str = ""


def check_page_output(output: Path, what: str, overwrite: bool) -> None:
    """``--output`` under the output rule (as eval's): a new file, trainer's own page, or any regular file with ``overwrite``."""
    from trainer.outputs import check_output_file

    check_output_file(output, what, overwrite=overwrite, is_own=is_report_page, expected=PAGE_EXPECTED)


def write_page(path: Path, html: str, what: str, overwrite: bool) -> Path:
    from trainer.outputs import write_file

    return write_file(path, html, what, overwrite=overwrite, is_own=is_report_page, expected=PAGE_EXPECTED)


def why_no_predictions(view: RunView) -> str | None:
    """Why ``model.h5`` is not run on the test split for this run (None: it may be)."""
    if view.status != "completed":
        return f"the run did not complete (status {view.status}), so its model was not measured on the test split."
    if not view.has_model:
        return "the run directory has no model.h5."
    return None


def report(
    run_dir: Path, output: Path | None = None, *, overwrite: bool = False, predict: bool = True, predictions: Any = None, absent: str | None = None,
    before_predict: Any = None,
) -> Report:
    """Write ``report.html`` of ``run_dir`` (into the run directory, or ``output``); returns the ``Report``.

    ``predictions`` (``TestPredictions``) given: used as they are (the end of a run). Else, with
    ``predict``, ``model.h5`` is run on the test split when the run completed and its data can be
    loaded; what prevents it is said on the page.
    """
    from trainer.errors import TrainerError
    from trainer.report.page import report_html

    view = read_run_view(run_dir)
    target = Path(output) if output is not None else view.path / REPORT_FILE
    what = "--output" if output is not None else "the report"
    check_page_output(target, what, overwrite)  # before any work
    if predictions is None and absent is None:  # ``absent`` given: the caller knows why there are none
        absent = why_no_predictions(view) if predict else "not computed (predictions were not asked for)."
        if absent is None:
            from trainer.report.predictions import predict_test_split

            if before_predict is not None:  # Keras is started only when model.h5 will run (the CLI: quietly)
                before_predict()
            try:
                predictions = predict_test_split(view.path)
            except TrainerError as exc:  # data gone, a model that does not load: the page says so
                absent = f"the test split could not be measured: {exc.message}"
    html = report_html(view, predictions, absent)
    return Report(write_page(target, html, what, overwrite), [view], absent, html)


def compare(run_dirs: Sequence[Path], output: Path | None = None, *, overwrite: bool = False) -> Report:
    """Read the runs and, with ``output``, write the comparison page there; returns the ``Report`` (views in the order given)."""
    from trainer.report.compare import compare_html

    if not run_dirs:
        raise BadInputError("RUN: no run directory given; pass two or more run directories (or a folder of runs to trainer runs --compare).")
    if output is not None:
        check_page_output(Path(output), "--output", overwrite)
    views = [read_run_view(path) for path in run_dirs]
    html = compare_html(views)
    path = write_page(Path(output), html, "--output", overwrite) if output is not None else None
    return Report(path, views, None, html)


def report_at_end(training: Any) -> str | None:
    """``report.html`` at the end of a run (``trainer.run.training.Training``, process 0): with the test split's
    predictions from the model in memory when the run completed. Returns a notice when the page cannot be written.

    The page is a convenience: a failure to write it never changes how the run ended.
    """
    run_dir = training.run_dir
    distribution = getattr(training, "distribution", None)
    if run_dir is None or training.scratch is not None or distribution is None or not distribution.is_chief:
        return None
    if not (Path(run_dir) / "config.yaml").is_file():  # a run refused before it started: its folder is gone
        return None
    try:
        predictions, absent = None, None
        processes = distribution.setup.num_processes
        computed = getattr(training, "test_probabilities", None)  # the test split's probabilities metrics.json's figures came from
        if training.completed and computed is not None:  # every completed one-process run (Training.test_figures)
            from trainer.report.predictions import from_outputs

            data = training.data
            predictions = from_outputs(data.x_test, data.y_test, computed, "softmax", list(data.class_names or []))
        elif training.completed and processes > 1:  # a predict on process 0 alone could wait for the others' collectives forever
            absent = f"the run trained across {processes} processes; trainer report {run_dir} computes them from model.h5 in one."
        elif training.completed:  # a one-process run measures its test split (Training.test_figures) unless it has none
            absent = "the data has no test split."
        report(Path(run_dir), predictions=predictions, predict=not training.completed, absent=absent)  # not completed: the page says why
    except Exception as exc:  # noqa: BLE001 - the run's own files are written; the page must not turn its ending into another
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        return f"could not write {Path(run_dir) / REPORT_FILE}: {message}"
    return None
