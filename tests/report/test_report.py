"""report.html: one run on one self-contained page (trainer report, the end of every run, trainer.report)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from tests.rundirs import history_rows, write_run_dir

HOSTILE = ['<script>alert(1)</script>', '"><img src=http://example.com/x.png onerror=alert(1)>', "</pre><b>x</b>", "a\x1b[31mred\u202e"]


def page_of(run: Path) -> str:
    return (run / "report.html").read_text()


def assert_inert(page: str) -> None:
    """No script and no element that could load anything: every tag is one the report itself writes."""
    assert "<script" not in page.lower()
    assert not re.search(r"<img(?![^>]*src=\"data:image/png;base64,)", page), "an <img> that is not a data: PNG"
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


def test_report_of_a_completed_run_holds_its_sections(tmp_path, cli):
    run = write_run_dir(tmp_path / "mnist_sparse-20260101-000000", epochs=4, best_epoch=3)
    result = cli("report", run, "--no-predict")
    assert result.exit_code == 0, result.output
    page = page_of(run)
    assert page.startswith("<!DOCTYPE html>\n<!-- written by trainer: report -->") and page.endswith("</html>\n")
    for expected in ("mnist_sparse-20260101-000000", "completed", "tensorflow", "CPU (TensorFlow, float32)", "float32", "3 by val_loss",
                     "<h2>Metrics</h2>", "<h2>Curves</h2>", "learning rate (log scale)", ">best 3<", "<details><summary>config.yaml"):
        assert expected in page, expected
    assert page.count("<svg") == 3  # accuracy, loss, learning rate
    assert "not computed" in page  # --no-predict: the test sections say why they are absent
    assert_inert(page)
    assert str(run / "report.html") in result.unwrapped


def test_every_figure_is_inline_and_no_file_beside_is_needed(tmp_path, cli):
    run = write_run_dir(tmp_path / "run")
    assert cli("report", run, "--no-predict").exit_code == 0
    page = page_of(run)
    assert not re.search(r"(src|href)=\"(?!data:)", page)
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page


@pytest.mark.parametrize("status, reason", [("failed", "out of memory: OOM when allocating"), ("interrupted", "interrupted after 1 completed epoch(s)"), ("stopped", "test stop")])
def test_a_run_that_did_not_complete_gets_a_report_of_what_it_has(tmp_path, cli, status, reason):
    run = write_run_dir(tmp_path / "run", status=status, reason=reason, epochs=1)
    result = cli("report", run)  # predictions asked for, but the run did not complete: no TensorFlow, a reason
    assert result.exit_code == 0, result.output
    page = page_of(run)
    assert f">{status}<" in page and reason in page
    assert f"the run did not complete (status {status})" in page
    assert "<svg" in page  # the one epoch's curves


def test_a_run_killed_before_its_first_epoch(tmp_path, cli):
    run = write_run_dir(tmp_path / "run", status=None, rows=[])
    result = cli("report", run)
    assert result.exit_code == 0, result.output
    page = page_of(run)
    assert "no metrics.json" in page and "holds no epoch" in page and "no epoch was recorded, so there are no curves" in page
    assert "unfinished" in page


@pytest.mark.parametrize("make, expected", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "file.txt").write_text("x") and p / "file.txt", "is not a folder"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "has no config.yaml"),
    (lambda p: (p / "linked").mkdir() or (p / "linked" / "config.yaml").symlink_to("/etc/passwd") or p / "linked", "is a link or not a regular file"),
    (lambda p: (p / "fifo").mkdir() or os.mkfifo(p / "fifo" / "config.yaml") or p / "fifo", "is a link or not a regular file"),
])
def test_not_a_run_directory_is_one_line_exit_2(tmp_path, cli, make, expected):
    result = cli("report", make(tmp_path))
    assert result.exit_code == 2
    assert expected in result.text and len(result.output.strip().splitlines()) <= 2  # one message (Rich may fold a long path)
    assert "Traceback" not in result.output


def _dev_zero(run: Path) -> None:
    (run / "history.csv").unlink()
    (run / "history.csv").symlink_to("/dev/zero")


@pytest.mark.parametrize("damage, expected", [
    (lambda run: (run / "metrics.json").write_text("{\"status\": "), "damaged metrics.json"),
    (lambda run: (run / "metrics.json").write_text('{"status": true}'), "damaged metrics.json"),
    (lambda run: (run / "history.csv").write_text("epoch,loss\nnot-a-number,1\n"), "damaged history.csv"),
    (lambda run: (run / "history.csv").write_bytes(b"epoch,loss\n1,\xff\n"), "damaged history.csv"),
    (_dev_zero, "damaged history.csv"),
    (lambda run: (run / "manifest.json").write_text("[1, 2]"), "damaged manifest.json"),
    (lambda run: (run / "config.yaml").write_text("a: [unclosed\n"), "YAML syntax error"),
])
def test_damaged_files_are_said_on_the_page_not_raised(tmp_path, cli, damage, expected):
    run = write_run_dir(tmp_path / "run")
    damage(run)
    result = cli("report", run, "--no-predict")
    assert result.exit_code == 0, result.output
    assert expected in page_of(run)
    assert expected in result.text  # and as a notice


def test_a_huge_history_is_read_bounded_and_drawn_thinned(tmp_path, cli):
    rows = history_rows(20_000)  # 10x the points a line holds (200,000 rows: 19 MB, 14 s here; in docs/report.md's hostile pass)
    run = write_run_dir(tmp_path / "run", rows=rows, best_epoch=1000)
    result = cli("report", run, "--no-predict")
    assert result.exit_code == 0, result.output
    page = page_of(run)
    assert len(page) < 2_000_000
    from trainer.report.svg import MAX_POINTS

    longest = max(len(points.split()) for points in re.findall(r'<polyline points="([^"]*)"', page))
    assert longest == MAX_POINTS


def test_a_history_past_the_readers_limit_is_refused_on_the_page(tmp_path, cli):
    run = write_run_dir(tmp_path / "run")
    with open(run / "history.csv", "r+b") as handle:  # sparse: 65 MiB past the 64 MiB limit, read no further than the size
        handle.truncate(65 * 2**20)
    result = cli("report", run, "--no-predict")
    assert result.exit_code == 0
    assert "more than the 64 MiB" in page_of(run)


@pytest.mark.parametrize("where", ["class name", "run name", "config value", "reason", "metric name"])
@pytest.mark.parametrize("hostile", HOSTILE)
def test_crafted_strings_are_shown_never_obeyed(tmp_path, where, hostile):
    from trainer.report.build import report
    from trainer.report.predictions import from_outputs

    names = [str(i) for i in range(10)]
    config = None
    rows = None
    reason = None
    folder = "run"
    shown = hostile
    if where == "class name":
        names[3] = hostile
    elif where == "run name":
        shown = hostile.replace("/", "_")  # a folder name holds no slash
        folder = "run" + shown
    elif where == "config value":
        from tests.conftest import tiny_config

        config = tiny_config("/data/mnist.npz", name=hostile)
    elif where == "reason":
        reason = hostile
    else:
        shown = hostile.replace(",", ";")
        rows = [{**row, shown: 0.5} for row in history_rows(2)]
    run = write_run_dir(tmp_path / folder, class_names=names, config=config, rows=rows, reason=reason, status="failed" if reason else "completed")
    x = np.zeros((20, 28, 28, 1), dtype=np.uint8)
    y = np.arange(20) % 10
    outputs = np.eye(10)[(y + 3) % 10]  # every example wrong, predicted class 3 among them
    written = report(run, predictions=from_outputs(x, y, outputs, "softmax", names))
    page = written.path.read_text()
    assert_inert(page)
    visible = shown.replace("\x1b", "\\x1b").replace("\u202e", "\\u202e")
    import html

    assert "\x1b" not in page and "\u202e" not in page  # controls shown as escapes, never raw
    if where not in ("config value", "metric name") or visible == shown:  # YAML writes \e, a CSV header keeps its own form
        assert html.escape(visible, quote=True) in page


def test_predictions_give_the_matrix_per_class_scores_and_the_worst_images():
    from trainer.report.predictions import from_outputs

    x = np.stack([np.full((4, 4, 1), i * 40, dtype=np.uint8) for i in range(5)])
    y = np.array([0, 0, 1, 1, 1])
    outputs = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4], [0.95, 0.05]])
    found = from_outputs(x, y, outputs, "softmax", ["cat", "dog"])
    assert found.confusion_matrix == [[1, 1], [2, 1]]
    assert found.accuracy == pytest.approx(2 / 5)
    assert [w["index"] for w in found.worst] == [4, 1, 3]  # most confident mistake first: 0.95, 0.7, 0.6
    assert found.worst[0] == {**found.worst[0], "true": "dog", "predicted": "cat", "confidence": pytest.approx(0.95)}
    assert all(w["image"].startswith("data:image/png;base64,") for w in found.worst)
    assert found.per_class[0]["recall"] == pytest.approx(0.5) and found.per_class[1]["precision"] == pytest.approx(0.5)
    assert found.summary["balanced_accuracy"] == pytest.approx((0.5 + 1 / 3) / 2)


def test_logits_become_probabilities():
    from trainer.report.predictions import from_outputs

    found = from_outputs(np.zeros((1, 2, 2)), np.array([1]), np.array([[2.0, 0.0]]), "logits", ["a", "b"])
    assert found.worst[0]["confidence"] == pytest.approx(np.exp(2) / (np.exp(2) + 1))


@pytest.mark.parametrize("image", [np.arange(28 * 28, dtype=np.uint8).reshape(28, 28), np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)])
def test_the_png_encoder_round_trips(image):
    import io

    from PIL import Image

    from trainer.report.images import png_bytes

    with Image.open(io.BytesIO(png_bytes(image))) as decoded:
        assert np.array_equal(np.asarray(decoded), image)


def test_output_follows_evals_rule(tmp_path, cli):
    run = write_run_dir(tmp_path / "run")
    foreign = tmp_path / "notes.html"
    foreign.write_text("mine")
    refused = cli("report", run, "--no-predict", "--output", foreign)
    assert refused.exit_code == 2 and "--overwrite" in refused.text and foreign.read_text() == "mine"
    assert cli("report", run, "--no-predict", "--output", foreign, "--overwrite").exit_code == 0
    assert "written by trainer: report" in foreign.read_text()
    assert cli("report", run, "--no-predict", "--output", foreign).exit_code == 0  # trainer's own page: replaced
    link = tmp_path / "link.html"
    link.symlink_to(tmp_path / "elsewhere.html")
    assert cli("report", run, "--no-predict", "--output", link, "--overwrite").exit_code == 2
    assert not (tmp_path / "elsewhere.html").exists()
    assert cli("report", run, "--no-predict", "--output", tmp_path / "no" / "such.html").exit_code == 2


def test_a_foreign_report_html_in_the_run_is_not_replaced(tmp_path, cli):
    run = write_run_dir(tmp_path / "run")
    (run / "report.html").write_text("someone else's")
    result = cli("report", run, "--no-predict")
    assert result.exit_code == 2 and (run / "report.html").read_text() == "someone else's"


def test_curves_png_has_the_learning_rate_the_name_and_the_best_epoch(tmp_path, monkeypatch):
    from trainer.inference import plots

    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda figure, path: drawn.setdefault("figure", figure) and Path(path))
    plots.write_curves(history_rows(5), tmp_path / "run-a" / "curves.png", best_epoch=2)
    figure = drawn["figure"]
    titles = [axis.get_title() for axis in figure.axes]
    assert titles == ["accuracy", "loss", "learning rate"]
    assert figure._suptitle.get_text() == "run-a"
    assert figure.axes[2].get_yscale() == "log"
    for axis in figure.axes:
        assert any(list(line.get_xdata()) == [2, 2] for line in axis.lines), "best epoch line"


@pytest.mark.slow  # optuna import and fANOVA: ~6 s here
def test_sweep_plots_have_whole_trial_ticks_and_a_caveat_when_few(tmp_path, monkeypatch):
    optuna = pytest.importorskip("optuna")
    from types import SimpleNamespace

    from trainer.inference import plots
    from trainer.sweep import outputs
    from trainer.sweep.events import TrialRecord

    drawn = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: drawn.append(figure) or Path(path))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("lr", 1e-3, 1e-1) + t.suggest_int("units", 8, 64) / 100, n_trials=3)
    records = [TrialRecord(t.number, "completed", t.value, t.params, None, None, None, None, None, []) for t in study.trials]
    outputs.plot_history(records, SimpleNamespace(direction="minimize", metric="val_loss"), tmp_path / "h.png")
    outputs.plot_importances(study, tmp_path / "i.png")
    history, importance = drawn
    ticks = history.axes[0].get_xticks()
    assert all(float(t).is_integer() for t in ticks)
    assert "from only 3 finished trials" in importance.axes[0].get_title()


# --------------------------------------------------------------------------- trained runs, in Chromium (slow)

from tests.browser import chromium, colour_pixels, page_requests, region_colours, visit, write_docs_image  # noqa: E402,F401


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One tiny MLP run of 2 epochs at a rate too low to learn: test mistakes to show."""
    import yaml

    from tests.conftest import run_cli, tiny_config
    from tests.datagen import write_mnist_npz

    folder = tmp_path_factory.mktemp("report-run")
    data = write_mnist_npz(folder / "mnist.npz", n_train=256, n_test=64, seed=0)
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data, name="report_demo", optimizer={"name": "adam", "learning_rate": 1e-5}, train={"epochs": 2, "batch_size": 32})))
    run = folder / "report_demo"
    result = run_cli("run", config, "--run-dir", run)
    assert result.exit_code == 0, result.output
    return run


def section(page: str, title: str) -> str:
    start = page.index(f"<h2>{title}")
    end = page.find("<h2>", start + 4)
    return page[start:end]


@pytest.mark.slow
def test_a_run_writes_its_report_with_the_test_split(trained_run):
    page = page_of(trained_run)
    assert ">completed<" in page
    for title in ("Metrics", "Curves", "Confusion matrix (test split)", "Per-class scores (test split)", "Worst-misclassified test images", "Config"):
        assert f"<h2>{title}" in page, title
    matrix = section(page, "Confusion matrix")
    rows = re.findall(r"<tr>(.*?)</tr>", matrix.split("each row divided")[0])[1:]  # below the header row
    counts = [[int(n.replace(",", "")) for n in re.findall(r"<td[^>]*>([^<]*)</td>", row)[1:]] for row in rows]  # after the class name
    assert len(counts) == 10 and all(len(row) == 10 for row in counts)
    assert sum(map(sum, counts)) == 64  # every test example once
    images = re.findall(r'<img src="data:image/png;base64,', section(page, "Worst-misclassified"))
    assert 1 <= len(images) <= 12
    assert "macro f1" in page
    assert_inert(page)


@pytest.mark.slow
def test_trainer_report_predicts_from_model_h5_as_the_run_did(trained_run, tmp_path, cli):
    output = tmp_path / "again.html"
    result = cli("report", trained_run, "--output", output)
    assert result.exit_code == 0, result.output
    again, first = output.read_text(), page_of(trained_run)
    for title in ("Confusion matrix", "Per-class scores", "Worst-misclassified"):
        assert section(again, title) == section(first, title), title


@pytest.mark.slow
def test_a_report_without_its_data_says_why(trained_run, tmp_path, cli):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy, ignore=shutil.ignore_patterns("report.html"))
    data = Path(__import__("yaml").safe_load((copy / "config.yaml").read_text())["data"]["path"])
    moved = data.with_suffix(".moved")
    data.rename(moved)
    try:
        result = cli("report", copy)
    finally:
        moved.rename(data)
    assert result.exit_code == 0, result.output
    assert "the test split could not be measured" in page_of(copy) and "<h2>Curves</h2>" in page_of(copy)


@pytest.mark.slow
def test_a_stopped_run_writes_a_report_of_what_it_has(mnist_npz, tmp_path):
    import yaml

    import trainer
    from tests.conftest import StopAfter, tiny_config

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(mnist_npz, train={"epochs": 3, "batch_size": 32})))
    result = trainer.train(path, run_dir=tmp_path / "run", events=[StopAfter(2)])
    assert result.status == "stopped"
    page = page_of(tmp_path / "run")
    assert ">stopped<" in page and "the run did not complete (status stopped)" in page and "<svg" in page


@pytest.mark.slow
def test_the_report_in_chromium(trained_run, chromium, tmp_path):
    shot = tmp_path / "report.png"
    seen = visit(chromium, trained_run / "report.html", shot, tmp_path / "profile")
    assert seen.console == [], seen.console
    assert page_requests(seen) == []
    distinct, ink = region_colours(shot, (0, 0, 1, 1))
    assert distinct > 100 and ink > 0.03, (distinct, ink)
    assert colour_pixels(shot, (31, 119, 180)) > 300  # the training curves and the matrix's shading
    assert colour_pixels(shot, (255, 127, 14)) > 100  # the validation curves
    assert colour_pixels(shot, (214, 39, 40)) > 20  # the best epoch's mark
    write_docs_image(shot, "report.png", height=2000)


@pytest.mark.slow
@pytest.mark.parametrize("hostile", HOSTILE[:2])
def test_a_hostile_run_directory_stays_inert_in_chromium(chromium, tmp_path, hostile, cli):
    names = [hostile] + [str(i) for i in range(1, 10)]
    run = write_run_dir(tmp_path / "run", class_names=names, reason=hostile, status="failed")
    assert cli("report", run).exit_code == 0
    seen = visit(chromium, run / "report.html", tmp_path / "shot.png", tmp_path / "profile", 900, 900)
    assert seen.console == [] and page_requests(seen) == []


@pytest.mark.slow  # a subprocess
def test_a_report_without_predictions_imports_no_keras(tmp_path, subprocess_env):
    import subprocess
    import sys

    run = write_run_dir(tmp_path / "run", status="failed", reason="boom")
    code = (
        "import sys; from trainer.cli import app\n"
        f"try:\n    app(['report', {str(run)!r}])\nexcept SystemExit as done:\n    assert done.code in (0, None), done.code\n"
        "assert not {'tensorflow', 'keras', 'jax', 'matplotlib'} & set(sys.modules), 'a heavy import'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (run / "report.html").is_file()
