"""Runs side by side: trainer compare (terminal and page) and trainer runs --compare (trainer.report.compare)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import tiny_config
from tests.rundirs import history_rows, write_run_dir


def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    a = write_run_dir(tmp_path / "runs" / "a-slow", config=tiny_config("/data/mnist.npz", name="a", optimizer={"name": "adam", "learning_rate": 0.001}),
                      rows=history_rows(4, start_loss=2.0), best_epoch=4)
    b = write_run_dir(tmp_path / "runs" / "b-fast", config=tiny_config("/data/mnist.npz", name="b", optimizer={"name": "adam", "learning_rate": 0.01}),
                      rows=history_rows(4, start_loss=1.0), best_epoch=3)
    return a, b


def test_compare_prints_the_table_with_the_best_marked_and_the_differences(tmp_path, cli):
    a, b = two_runs(tmp_path)
    result = cli("compare", a, b)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    b_row = next(line for line in lines if "b-fast" in line and "completed" in line)
    a_row = next(line for line in lines if "a-slow" in line and "completed" in line)
    assert b_row.count("*") >= 2 and "*" not in a_row.split("completed", 1)[1].replace("12.5", "")  # b: lower losses, a: nothing better
    assert "optimizer.learning_rate" in result.output and "name" in result.text
    assert "loss " not in result.text.split("config differences", 1)[1]  # the same in both: not listed
    assert "add --output FILE.html" in result.text


def test_compare_page_holds_metrics_curves_and_differences(tmp_path, cli):
    a, b = two_runs(tmp_path)
    output = tmp_path / "compare.html"
    result = cli("compare", a, b, "--output", output)
    assert result.exit_code == 0, result.output
    page = output.read_text()
    assert page.startswith("<!DOCTYPE html>\n<!-- written by trainer: compare -->")
    metrics = page[page.index("<h2>Metrics"): page.index("<h2>Curves")]
    b_row = re.search(r"<tr><td class=\"l\">b-fast</td>.*?</tr>", metrics).group(0)
    assert b_row.count('class="best"') >= 2  # val loss, test loss
    differences = page[page.index("<h2>Config differences"):]
    assert "optimizer.learning_rate" in differences and "0.001" in differences and "0.01" in differences
    assert "train.epochs" not in differences
    assert page.count("<svg") == 3 and page.count("<polyline") == 2 * 2 * 2 + 2  # 2 metrics x 2 runs x train/val, 2 rates
    assert "<script" not in page and "default-src 'none'" in page


@pytest.mark.parametrize("change, note", [
    ({"dataset": "cifar10"}, "different data"),
    ({"class_names": ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]}, "different class lists"),
    ({"status": "failed", "reason": "boom"}, "not completed: b"),
])
def test_different_data_or_unfinished_runs_are_compared_with_a_note(tmp_path, cli, change, note):
    a = write_run_dir(tmp_path / "a")
    b = write_run_dir(tmp_path / "b", **change)
    output = tmp_path / "c.html"
    result = cli("compare", a, b, "--output", output)
    assert result.exit_code == 0, result.output
    assert note in result.text and note in output.read_text()


def test_runs_compare_over_a_folder_and_over_named_runs(tmp_path, cli):
    a, b = two_runs(tmp_path)
    folder = cli("runs", tmp_path / "runs", "--compare")
    assert folder.exit_code == 0, folder.output
    assert "a-slow" in folder.output and "b-fast" in folder.output and "2 runs" in folder.output
    named = cli("runs", "--compare", a, b)
    assert named.exit_code == 0 and "optimizer.learning_rate" in named.output
    assert cli("runs", a, b).exit_code == 2  # two paths without --compare


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: (p / "plain").mkdir() or p / "plain"])
def test_a_run_that_is_not_a_run_directory_is_one_line_exit_2(tmp_path, cli, make):
    a = write_run_dir(tmp_path / "a")
    result = cli("compare", a, make(tmp_path))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2


def test_a_damaged_run_is_compared_with_what_it_has(tmp_path, cli):
    a = write_run_dir(tmp_path / "a")
    b = write_run_dir(tmp_path / "b")
    (b / "metrics.json").write_text("{")
    (b / "history.csv").unlink()
    (b / "history.csv").symlink_to("/dev/zero")
    result = cli("compare", a, b, "--output", tmp_path / "c.html")
    assert result.exit_code == 0, result.output
    assert "damaged metrics.json" in result.text and "damaged history.csv" in result.text


@pytest.mark.parametrize("hostile", ['<script>alert(1)</script>', '"><img src=http://example.com/x onerror=alert(1)>'])
def test_crafted_names_and_values_stay_text(tmp_path, cli, hostile):
    a = write_run_dir(tmp_path / ("a" + hostile.replace("/", "_")), config=tiny_config("/data/x.npz", name=hostile))
    b = write_run_dir(tmp_path / "b", rows=[{**row, hostile.replace(",", ";"): 1.0} for row in history_rows(2)])
    output = tmp_path / "c.html"
    assert cli("compare", a, b, "--output", output).exit_code == 0
    page = output.read_text()
    assert "<script" not in page and "<img" not in page and "&lt;" in page


def test_output_follows_the_rule(tmp_path, cli):
    a, b = two_runs(tmp_path)
    foreign = tmp_path / "mine.html"
    foreign.write_text("mine")
    assert cli("compare", a, b, "--output", foreign).exit_code == 2 and foreign.read_text() == "mine"
    assert cli("compare", a, b, "--output", foreign, "--overwrite").exit_code == 0
    assert cli("compare", a, b, "--output", foreign).exit_code == 0  # now trainer's own page


def test_the_api(tmp_path):
    import trainer
    from trainer.report.compare import comparison

    a, b = two_runs(tmp_path)
    found = trainer.compare([a, b], tmp_path / "c.html")
    assert found.path == tmp_path / "c.html" and [v.name for v in found.views] == ["a-slow", "b-fast"]
    table = comparison(found.views)
    assert table.best["val loss"] == {1}
    with pytest.raises(trainer.BadInputError, match="run_dirs: expected a list of paths"):
        trainer.compare(str(a))


# --------------------------------------------------------------------------- trained runs in Chromium (slow)

from tests.browser import chromium, colour_pixels, page_requests, visit, write_docs_image  # noqa: E402,F401


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory):
    import yaml

    from tests.conftest import run_cli
    from tests.datagen import write_mnist_npz

    folder = tmp_path_factory.mktemp("compare-runs")
    data = write_mnist_npz(folder / "mnist.npz", n_train=256, n_test=64, seed=0)
    runs = []
    for name, rate in (("mlp_lr3e-3", 0.003), ("mlp_lr3e-4", 0.0003)):
        config = folder / f"{name}.yaml"
        config.write_text(yaml.safe_dump(tiny_config(data, name=name, optimizer={"name": "adam", "learning_rate": rate}, train={"epochs": 3, "batch_size": 32})))
        result = run_cli("run", config, "--run-dir", folder / "runs" / name)
        assert result.exit_code == 0, result.output
        runs.append(folder / "runs" / name)
    return runs


@pytest.mark.slow
def test_the_compare_page_of_trained_runs_in_chromium(trained_pair, chromium, tmp_path, cli):
    output = tmp_path / "compare.html"
    result = cli("compare", *trained_pair, "--output", output)
    assert result.exit_code == 0, result.output
    assert "optimizer.learning_rate" in output.read_text()
    shot = tmp_path / "compare.png"
    seen = visit(chromium, output, shot, tmp_path / "profile", 1280, 1400)
    assert seen.console == [], seen.console
    assert page_requests(seen) == []
    assert colour_pixels(shot, (31, 119, 180)) > 200 and colour_pixels(shot, (255, 127, 14)) > 200  # a colour per run
    write_docs_image(shot, "compare.png", height=1120)
    listed = cli("runs", trained_pair[0].parent, "--compare")
    assert listed.exit_code == 0 and "mlp_lr3e-3" in listed.output and "mlp_lr3e-4" in listed.output
