"""``trainer lr-find``: the ramp, the smoothing and the suggestion by hand; refusals; real ramps on tiny data."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import tiny_config
from trainer.config import load_config
from trainer.config.loading import parse_override
from trainer.errors import BadInputError, RunDirError
from trainer.readers.lr_find_files import LR_FIND_FILE, LR_FIND_PLOT, LrFindRecord, read_lr_find
from trainer.run.lr_find import DIVERGE_FACTOR, check_ramp, ramp, set_text, smooth, smooth_both_ways, smoothing_for, suggest

DOCUMENTED_FIELDS = {
    "version", "config", "start", "end", "steps", "steps_run", "batch_size", "smoothing", "stopped",
    "rates", "losses", "smoothed_losses", "suggested_learning_rate", "set",
}


# --------------------------------------------------------------------------- the arithmetic, by hand


def test_the_ramp_rises_exponentially_from_start_to_end():
    np.testing.assert_allclose(ramp(1e-3, 1e-1, 3), [1e-3, 1e-2, 1e-1], rtol=1e-12)
    np.testing.assert_allclose(ramp(1e-6, 1.0, 7), [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0], rtol=1e-12)
    assert ramp(0.5, 2.0, 1).tolist() == [0.5]


def test_the_smoothing_is_a_bias_corrected_exponential_average():
    # beta 0.5: averages 0.5, then 0.5*0.5 + 0.5*2 = 1.25; corrected by 1 - 0.5 and 1 - 0.25
    assert smooth([1.0, 2.0], 0.5) == pytest.approx([1.0, 1.25 / 0.75])
    assert smooth([3.0, 3.0, 3.0], 0.9) == pytest.approx([3.0, 3.0, 3.0])  # a constant stays itself
    out = smooth([1.0, math.nan, 1.0], 0.5)
    assert out[0] == 1.0 and math.isnan(out[1]) and math.isnan(out[2])
    # forwards then backwards: [1, 5/3] backwards -> [ (0.5*(5/3)*0.5 + 0.5*1) / 0.75, 5/3 ]
    both = smooth_both_ways([1.0, 2.0], 0.5)
    assert both == pytest.approx([(0.25 * (5 / 3) + 0.5 * 1.0) / 0.75, 5 / 3])
    assert math.isnan(smooth_both_ways([1.0, math.inf], 0.5)[1])
    assert smoothing_for(100) == pytest.approx(0.95) and smoothing_for(1000) == 0.98 and smoothing_for(4) == 0.5


def test_the_suggestion_is_the_steepest_descent_before_the_lowest_point():
    rates = ramp(1e-4, 1e2, 7).tolist()  # equal steps in log rate
    # slopes by central differences: index 1 (4-5)/2, index 2 (2-4.9)/2 = -1.45 (steepest), index 3 (1.9-4)/2
    assert suggest(rates, [5.0, 4.9, 4.0, 2.0, 1.9, 3.0, 10.0]) == 2
    # a steeper fall after the lowest point (index 4: (2-9)/2) does not count: index 1, (1-5)/2
    assert suggest(rates, [5.0, 4.0, 1.0, 9.0, 3.0, 2.0, 8.0]) == 1
    assert suggest(rates, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]) is None  # it never falls
    assert suggest(rates[:1], [1.0]) is None
    assert suggest(rates, [3.0, 2.0, math.nan, 1.0, 0.5, 0.2, 0.1]) == 0  # only the finite start counts


@pytest.mark.parametrize("rate", [1e-05, 0.0108, 3.0, 0.5, 1234.5])
def test_the_printed_set_reads_back_as_the_rate(rate):
    config = load_config(None, [])
    text = set_text(config, rate)
    path, value = parse_override(text)
    assert path == ("optimizer", "learning_rate") and isinstance(value, float)
    assert value == pytest.approx(rate, rel=5e-3)
    assert load_config(None, [text]).optimizer.params["learning_rate"] == value


def test_a_schedule_given_as_a_mapping_gets_its_peak_set():
    class Stub:
        class optimizer:
            params = {"learning_rate": {"name": "one_cycle", "peak": 0.1}}

    assert set_text(Stub, 0.02) == "optimizer.learning_rate.peak=0.02"


@pytest.mark.parametrize(
    "start, end, steps, words",
    [
        (1e-3, 1e-3, 10, "--start (0.001) must be below --end"),
        (1.0, 1e-3, 10, "must be below --end"),
        (1e-7, 10.0, 0, "--steps: 0"),
        (1e-7, 10.0, 1001, "--steps: 1001"),
        (math.nan, 10.0, 10, "--start: nan"),
        (-1.0, 10.0, 10, "--start: -1.0"),
        (1e-7, math.inf, 10, "--end: inf"),
        (0.0, 10.0, 10, "--start: 0.0"),
    ],
)
def test_a_ramp_that_cannot_run_is_refused(start, end, steps, words):
    with pytest.raises(BadInputError) as raised:
        check_ramp(start, end, steps)
    assert words in raised.value.message


# --------------------------------------------------------------------------- the CLI's refusals (no training)


@pytest.mark.parametrize(
    "arguments, words",
    [
        (["--start", "0.1", "--end", "0.1"], "--start (0.1) must be below --end (0.1)"),
        (["--start", "1", "--end", "0.01"], "must be below --end"),
        (["--steps", "0"], "--steps: 0"),
        (["--steps", "5000"], "--steps: 5000"),
        (["--start", "nan"], "--start: nan"),
    ],
)
def test_bad_arguments_exit_2_before_anything_is_made(cli, write_config, mnist_npz, tmp_path, monkeypatch, arguments, words):
    monkeypatch.chdir(tmp_path)
    config = write_config(tiny_config(mnist_npz, output={"dir": str(tmp_path / "out")}))
    result = cli("lr-find", config, *arguments)
    assert result.exit_code == 2, result.output
    assert words in result.text and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_folder_that_is_not_empty_is_refused(cli, write_config, mnist_npz, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    result = cli("lr-find", write_config(tiny_config(mnist_npz)), "--output", taken)
    assert result.exit_code == 2 and "not empty" in result.text and "Traceback" not in result.output
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("output", [None, "results", "new/parents/results"])
def test_a_failure_after_the_folder_was_made_removes_it(cli, write_config, tmp_path, output):
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip archive")  # found by the pre-flight checks, refused only when the data is read
    config = write_config(tiny_config(broken, output={"dir": str(tmp_path / "out")}))
    before = sorted(tmp_path.rglob("*"))
    result = cli("lr-find", config, *(["--output", tmp_path / output] if output else []))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and str(broken) in result.unwrapped
    assert sorted(tmp_path.rglob("*")) == before  # the results folder (and any folder made for it) is gone


# --------------------------------------------------------------------------- lr_find.json read back


def valid_record() -> dict:
    rates = ramp(1e-4, 1.0, 5).tolist()
    return {
        "version": 1, "config": "config.yaml", "start": 1e-4, "end": 1.0, "steps": 5, "steps_run": 5, "batch_size": 32,
        "smoothing": 0.5, "stopped": "completed", "rates": rates, "losses": [2.3, 2.2, 1.5, 0.9, 4.0],
        "smoothed_losses": [2.3, 2.25, 1.8, 1.3, 2.7], "suggested_learning_rate": rates[2], "set": "optimizer.learning_rate=0.01",
    }


def test_a_written_record_reads_back(tmp_path):
    (tmp_path / LR_FIND_FILE).write_text(json.dumps(LrFindRecord(**valid_record()).model_dump(mode="json")))
    assert read_lr_find(tmp_path / LR_FIND_FILE).suggested_learning_rate == valid_record()["suggested_learning_rate"]


@pytest.mark.parametrize(
    "change, field",
    [
        ({"suggested_learning_rate": 5.0}, "suggested_learning_rate"),
        ({"rates": [1.0, 0.1, 0.01, 0.001, 0.0001]}, "rise"),
        ({"losses": [1.0]}, "steps_run"),
        ({"start": 2.0}, "start"),
        ({"steps_run": 6}, "steps_run"),
        ({"stopped": "bored"}, "stopped"),
        ({"batch_size": True}, "batch_size"),
        ({"losses": [2.3, 2.2, "NaN", 0.9, 4.0]}, "losses"),
        ({"extra": 1}, "extra"),
    ],
)
def test_a_malformed_record_is_refused_naming_the_field(tmp_path, change, field):
    (tmp_path / LR_FIND_FILE).write_text(json.dumps({**valid_record(), **change}))
    with pytest.raises(RunDirError) as raised:
        read_lr_find(tmp_path / LR_FIND_FILE)
    assert LR_FIND_FILE in raised.value.message and field in raised.value.message


def test_a_link_out_of_the_folder_is_refused(tmp_path):
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps(valid_record()))
    (tmp_path / "folder").mkdir()
    os.symlink(outside, tmp_path / "folder" / LR_FIND_FILE)
    with pytest.raises(RunDirError):
        read_lr_find(tmp_path / "folder" / LR_FIND_FILE)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(sorted(DOCUMENTED_FIELDS) + ["other"]), value=JSON_VALUES, cut=st.integers(0, 400), drop=st.booleans())
def test_mutated_records_raise_run_dir_error_and_nothing_else(tmp_path, key, value, cut, drop):
    data = valid_record()
    if drop:
        data.pop(key, None)
    else:
        data[key] = value
    text = json.dumps(data)
    if cut % 3 == 0:
        text = text[: cut % (len(text) + 1)]
    path = tmp_path / LR_FIND_FILE
    path.write_text(text)
    try:
        record = read_lr_find(path)
    except RunDirError as error:
        assert str(path) in error.message
        return
    assert record.steps_run == len(record.rates)  # whatever reads back is consistent


# --------------------------------------------------------------------------- real ramps on tiny data


def created_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
def test_lr_find_writes_its_results_and_prints_the_set(cli, write_config, mnist_npz, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_config(tiny_config(mnist_npz, output={"dir": str(tmp_path / "out")}))
    before = created_files(tmp_path)
    result = cli("lr-find", config, "--steps", "40", "--start", "1e-5", "--end", "10")
    assert result.exit_code == 0, result.unwrapped
    folders = list((tmp_path / "out").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("tiny-lr-find-")  # the default folder, and nothing else
    assert sorted(p.name for p in folders[0].iterdir()) == [LR_FIND_FILE, LR_FIND_PLOT]
    assert sorted(set(created_files(tmp_path)) - set(before)) == [f"out/{folders[0].name}/{LR_FIND_FILE}", f"out/{folders[0].name}/{LR_FIND_PLOT}"]

    data = json.loads((folders[0] / LR_FIND_FILE).read_text())
    assert set(data) == DOCUMENTED_FIELDS
    record = read_lr_find(folders[0] / LR_FIND_FILE)
    assert record.config == str(config) and record.steps == 40 and record.batch_size == 32
    assert record.start == 1e-5 and record.end == 10.0 and record.rates[0] == pytest.approx(1e-5)
    assert 1e-5 <= record.suggested_learning_rate <= 10.0 and record.suggested_learning_rate in record.rates
    lowest = int(np.nanargmin(np.array([np.nan if v is None else v for v in record.smoothed_losses])))
    assert record.rates.index(record.suggested_learning_rate) <= lowest

    printed = result.unwrapped.split("apply it with: --set ")[1].split()[0]
    assert printed == record.set and printed.startswith("optimizer.learning_rate=")
    assert float(parse_override(printed)[1]) == pytest.approx(record.suggested_learning_rate, rel=5e-3)
    from PIL import Image

    with Image.open(folders[0] / LR_FIND_PLOT) as image:
        assert image.format == "PNG" and image.size[0] > 300


@pytest.mark.slow
def test_a_diverging_ramp_stops_early(cli, write_config, mnist_npz, tmp_path):
    config = write_config(tiny_config(mnist_npz, optimizer={"name": "sgd", "learning_rate": 0.01}))
    result = cli("lr-find", config, "--start", "1e-3", "--end", "1e6", "--steps", "60", "--output", tmp_path / "found")
    assert result.exit_code == 0, result.unwrapped
    record = read_lr_find(tmp_path / "found" / LR_FIND_FILE)
    assert record.stopped in ("diverged", "not_finite") and record.steps_run < 60
    assert f"{record.steps_run} of 60 (stopped:" in result.text
    # the stopping rule, by hand, on the losses recorded: the running average first passes 4x its best (or a loss
    # is not finite) at the last step, and at no step before it
    running = smooth([math.inf if v is None else v for v in record.losses], record.smoothing)
    best = math.inf
    for step, (loss, value) in enumerate(zip(record.losses, running), start=1):
        stop = loss is None or (min(best, value) > 0 and value > DIVERGE_FACTOR * min(best, value))
        best = min(best, value) if loss is not None else best
        assert stop == (step == record.steps_run), (step, loss, value, best)
    if record.suggested_learning_rate is not None:
        assert record.suggested_learning_rate < record.rates[-1]


@pytest.mark.slow
def test_the_api_returns_the_result_and_makes_no_run_directory(mnist_npz, tmp_path, write_config, monkeypatch):
    import trainer.api

    monkeypatch.chdir(tmp_path)
    config = write_config(tiny_config(mnist_npz, output={"dir": str(tmp_path / "out")}, train={"batch_size": 16}))
    result = trainer.api.lr_find(config, steps=12, start=1e-4, end=1.0, output=tmp_path / "mine", overrides=["seed=3"])
    assert result.output_dir == tmp_path / "mine" and result.record.steps_run <= 12 and result.record.batch_size == 16
    assert result.to_dict() == json.loads((tmp_path / "mine" / LR_FIND_FILE).read_text())
    assert not (tmp_path / "out").exists()  # no run directory, no default folder
    assert not list(tmp_path.rglob("*.h5")) and not list(tmp_path.rglob("checkpoint*"))
