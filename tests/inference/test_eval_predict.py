"""`trainer eval`, `trainer predict` and `trainer runs` on tiny runs trained once per module."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import tiny_config
from tests.conftest import run_cli
from tests.datagen import write_mnist_npz

NOISY_TEST_LABELS = 8  # test labels rotated by one class, so the confusion matrix has errors off the diagonal


@pytest.fixture(scope="module")
def data_path(tmp_path_factory) -> Path:
    path = write_mnist_npz(tmp_path_factory.mktemp("data") / "mnist.npz", n_train=256, n_test=64, seed=0)
    arrays = dict(np.load(path))
    arrays["y_test"] = arrays["y_test"].copy()
    arrays["y_test"][:NOISY_TEST_LABELS] = (arrays["y_test"][:NOISY_TEST_LABELS] + 1) % 10
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory, data_path) -> Path:
    """Two finished runs: a softmax model and a logits model."""
    root = tmp_path_factory.mktemp("runs")
    configs = {
        "softmax": tiny_config(data_path, train={"epochs": 2}),
        "logits": tiny_config(
            data_path, train={"epochs": 2}, model={"type": "mlp", "hidden_units": [16], "output": "logits"},
            loss={"name": "sparse_categorical_crossentropy", "from_logits": True},
            metrics=["accuracy", "sparse_top_k_categorical_accuracy"],
        ),
    }
    for name, config in configs.items():
        config_file = root.parent / f"{root.name}-{name}.yaml"
        config_file.write_text(yaml.safe_dump(config))
        result = run_cli("run", config_file, "--run-dir", root / name)
        assert result.exit_code == 0, result.unwrapped
    return root


def raw_test_images(data_path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(data_path)
    return data["x_test"], data["y_test"]


def model_probabilities(run_dir: Path, x: np.ndarray) -> np.ndarray:
    """What the saved model says, computed here independently of trainer (softmax applied to logits)."""
    model = keras.models.load_model(run_dir / "model.h5")
    outputs = model.predict(x.astype("float32").reshape(-1, 28, 28, 1), verbose=0).astype(np.float64)
    if json.loads((run_dir / "manifest.json").read_text())["model_output"] == "logits":
        outputs = np.exp(outputs - outputs.max(1, keepdims=True))
        outputs /= outputs.sum(1, keepdims=True)
    return outputs


def decodes_as_png(path: Path) -> bool:
    with Image.open(path) as image:
        image.load()
        return image.format == "PNG" and image.size[0] > 100


# --------------------------------------------------------------------------- eval


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["softmax", "logits"])
def test_eval_numbers_match_the_models_own_predictions(runs_root, data_path, kind):
    run_dir = runs_root / kind
    result = run_cli("eval", run_dir)
    assert result.exit_code == 0, result.unwrapped
    assert "per class" in result.unwrapped and "confusion matrix" in result.unwrapped
    report = json.loads((run_dir / "eval-test.json").read_text())
    assert set(report) == {"split", "examples", "loss", "accuracy", "metrics", "summary", "per_class", "confusion_matrix", "confusion_matrix_normalized"}

    x, y = raw_test_images(data_path)
    predicted = model_probabilities(run_dir, x).argmax(1)
    assert report["split"] == "test" and report["examples"] == len(y) == 64
    assert report["accuracy"] == pytest.approx(float(np.mean(predicted == y)), abs=1e-12)
    assert report["accuracy"] < 1.0  # the rotated labels are counted as errors

    matrix = np.zeros((10, 10), dtype=int)
    for true, guess in zip(y, predicted):
        matrix[true, guess] += 1
    assert report["confusion_matrix"] == matrix.tolist()
    assert sum(map(sum, report["confusion_matrix"])) == report["examples"]
    for row in report["per_class"]:
        c = row["class"]
        true_positive = int(np.sum((predicted == c) & (y == c)))
        assert row["name"] == str(c)
        assert row["support"] == int(np.sum(y == c))
        assert row["precision"] == pytest.approx(true_positive / max(1, np.sum(predicted == c)))
        assert row["recall"] == pytest.approx(true_positive / max(1, np.sum(y == c)))
        p, r = row["precision"], row["recall"]
        assert row["f1"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)

    recorded = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert report["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-6)
    assert report["loss"] == pytest.approx(recorded["loss"], rel=1e-5)
    # every compiled metric, under the names training used; metrics.json's test adds the summary figures, equal to eval's
    assert set(report["metrics"]) | set(report["summary"]) == set(recorded)
    for key, value in report["summary"].items():
        assert recorded[key] == pytest.approx(value, abs=1e-9), key
    assert decodes_as_png(run_dir / "confusion_matrix-test.png")
    assert decodes_as_png(run_dir / "curves.png")


@pytest.mark.slow
def test_eval_train_split_to_output_and_model_file_with_config(runs_root, tmp_path):
    run_dir = runs_root / "softmax"
    out = tmp_path / "report.json"
    result = run_cli("eval", run_dir, "--split", "train", "--output", out)
    assert result.exit_code == 0, result.unwrapped
    report = json.loads(out.read_text())
    assert report["split"] == "train" and report["examples"] == 256
    assert (tmp_path / "confusion_matrix-train.png").is_file()
    assert not (run_dir / "eval-train.json").exists()

    out2 = tmp_path / "limited.json"
    by_file = run_cli("eval", run_dir / "model.h5", "--config", run_dir / "config.yaml", "--split", "train",
                     "--set", "data.limit=100", "--output", out2)
    assert by_file.exit_code == 0, by_file.unwrapped
    limited = json.loads(out2.read_text())
    assert limited["examples"] == 100  # --set applies to this evaluation only
    assert "limit: null" in (run_dir / "config.yaml").read_text()


@pytest.mark.slow
def test_eval_refuses_bad_targets_and_writes_nothing(runs_root, tmp_path):
    missing = run_cli("eval", tmp_path / "nowhere")
    assert missing.exit_code == 2 and "nowhere" in missing.unwrapped and "config.yaml" in missing.unwrapped

    broken = tmp_path / "broken"
    shutil.copytree(runs_root / "softmax", broken)
    for stale in broken.glob("eval-*"):
        stale.unlink()
    for stale in broken.glob("confusion_matrix-*"):
        stale.unlink()
    model = broken / "model.h5"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    before = sorted(p.name for p in broken.iterdir())
    result = run_cli("eval", broken)
    assert result.exit_code == 2, result.unwrapped
    assert "model.h5" in result.unwrapped and "Traceback" not in result.unwrapped
    assert sorted(p.name for p in broken.iterdir()) == before

    model.unlink()
    gone = run_cli("predict", broken, tmp_path)
    assert gone.exit_code == 2 and "model.h5" in gone.unwrapped

    loose = tmp_path / "loose"  # a model file away from its run directory: nothing says how it was trained
    loose.mkdir()
    (loose / "model.h5").write_bytes((runs_root / "softmax" / "model.h5").read_bytes())
    no_config = run_cli("eval", loose / "model.h5")
    assert no_config.exit_code == 2 and "--config" in no_config.unwrapped

    bad_split = run_cli("eval", runs_root / "softmax", "--split", "dev")
    assert bad_split.exit_code == 2 and "dev" in bad_split.unwrapped and "validation" in bad_split.unwrapped


# --------------------------------------------------------------------------- predict


def write_digit_pngs(folder: Path, x: np.ndarray) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(x):
        path = folder / f"digit_{index:03d}.png"
        Image.fromarray(image, "L").save(path)
        paths.append(path)
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["softmax", "logits"])
def test_predict_json_and_csv_agree_with_model_predict(runs_root, data_path, tmp_path, kind):
    run_dir = runs_root / kind
    x, y = raw_test_images(data_path)
    folder = tmp_path / "pngs"
    write_digit_pngs(folder, x[:12])
    np.save(tmp_path / "batch.npy", x[12:17])  # (5, 28, 28) uint8
    np.save(tmp_path / "single.npy", x[17][..., None].astype(np.float32))  # (28, 28, 1) float 0..255

    as_json, as_csv = tmp_path / "p.json", tmp_path / "p.csv"
    inputs = [folder, tmp_path / "batch.npy", tmp_path / "single.npy"]
    first = run_cli("predict", run_dir, *inputs, "--top-k", "10", "--output", as_json)
    second = run_cli("predict", run_dir, *inputs, "--output", as_csv)
    assert first.exit_code == 0, first.unwrapped
    assert second.exit_code == 0, second.unwrapped
    assert "predictions (18 images)" in first.unwrapped

    records = json.loads(as_json.read_text())
    rows = list(csv.DictReader(as_csv.open()))
    assert len(records) == len(rows) == 18
    assert list(rows[0]) == ["input", "index", "predicted", "name", "probability"]
    assert [r["index"] for r in records] == [None] * 12 + [0, 1, 2, 3, 4] + [None]
    assert all(r["input"].endswith("batch.npy") for r in records[12:17])

    expected = model_probabilities(run_dir, x[:18])
    for record, row, probs in zip(records, rows, expected):
        assert record["predicted"] == int(probs.argmax()) == int(row["predicted"])
        assert record["name"] == row["name"] == str(record["predicted"])
        assert record["probability"] == pytest.approx(probs.max(), abs=1e-6)
        assert float(row["probability"]) == pytest.approx(record["probability"], abs=1e-12)
        assert row["input"] == record["input"] and row["index"] == ("" if record["index"] is None else str(record["index"]))
        top = record["top_k"]
        assert len(top) == 10 and top[0]["class"] == record["predicted"]
        assert [t["probability"] for t in top] == sorted((t["probability"] for t in top), reverse=True)
        assert sum(t["probability"] for t in top) == pytest.approx(1.0, abs=1e-5)  # true probabilities
        assert [t["probability"] for t in top] == pytest.approx(sorted(probs, reverse=True), abs=1e-6)
    correct = sum(r["predicted"] == label for r, label in zip(records[NOISY_TEST_LABELS:], y[NOISY_TEST_LABELS:18]))
    assert correct >= 9  # PNG files of the (learnable) test digits are recognised


@pytest.mark.slow
def test_predict_converts_colour_resized_and_scaled_inputs(runs_root, data_path, tmp_path):
    run_dir = runs_root / "softmax"
    x, _ = raw_test_images(data_path)
    digit = x[30]
    Image.fromarray(digit, "L").convert("RGB").resize((56, 56), Image.Resampling.NEAREST).save(tmp_path / "big.jpg", quality=98)
    Image.fromarray(digit, "L").save(tmp_path / "d.gif")
    Image.fromarray(digit, "L").save(tmp_path / "d.bmp")
    np.save(tmp_path / "scaled.npy", (digit / 255.0).astype(np.float32)[None])  # (1, 28, 28) in 0..1
    out = tmp_path / "p.json"
    result = run_cli("predict", run_dir, tmp_path / "big.jpg", tmp_path / "d.gif", tmp_path / "d.bmp", tmp_path / "scaled.npy", "--output", out)
    assert result.exit_code == 0, result.unwrapped
    assert "multiplied by 255" in result.text  # the notice for 0..1 floats (a sentence: Rich may wrap it anywhere)
    records = json.loads(out.read_text())
    expected = int(model_probabilities(run_dir, digit[None]).argmax())
    assert [r["predicted"] for r in records] == [expected] * 4


@pytest.mark.slow
def test_predict_refuses_bad_inputs_and_writes_nothing(runs_root, tmp_path):
    run_dir = runs_root / "softmax"
    out = tmp_path / "p.json"
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"this is not a png")
    result = run_cli("predict", run_dir, fake, "--output", out)
    assert result.exit_code == 2 and "fake.png" in result.unwrapped and "PNG" in result.unwrapped
    assert not out.exists()

    np.save(tmp_path / "wrong.npy", np.zeros((3, 32, 32, 3), dtype=np.uint8))
    shape = run_cli("predict", run_dir, tmp_path / "wrong.npy", "--output", out)
    assert shape.exit_code == 2 and "wrong.npy" in shape.unwrapped and "(3, 32, 32, 3)" in shape.unwrapped
    assert "(N, 28, 28)" in shape.unwrapped
    assert not out.exists()

    missing = run_cli("predict", run_dir, tmp_path / "absent.png")
    assert missing.exit_code == 2 and "absent.png" in missing.unwrapped

    suffix = run_cli("predict", run_dir, fake, "--output", tmp_path / "p.txt")
    assert suffix.exit_code == 2 and ".json or .csv" in suffix.unwrapped

    no_run = run_cli("predict", tmp_path / "no-run", fake)
    assert no_run.exit_code == 2 and "no-run" in no_run.unwrapped


@pytest.mark.slow
def test_predict_as_a_real_subprocess(runs_root, data_path, tmp_path, subprocess_env):
    x, _ = raw_test_images(data_path)
    write_digit_pngs(tmp_path / "digits", x[20:23])
    out = tmp_path / "p.csv"
    done = subprocess.run(
        [sys.executable, "-m", "trainer", "predict", str(runs_root / "logits"), str(tmp_path / "digits"), "--output", str(out)],
        env=subprocess_env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert len(list(csv.DictReader(out.open()))) == 3


# --------------------------------------------------------------------------- runs


@pytest.mark.slow
def test_runs_lists_runs_sorted_by_time(runs_root, tmp_path):
    folder = tmp_path / "outputs"
    for name, stamp in (("zeta", 2_000_000_000), ("alpha", 1_000_000_000)):
        shutil.copytree(runs_root / "softmax", folder / name)
        os.utime(folder / name / "config.yaml", (stamp, stamp))
    unfinished = folder / "middle"
    unfinished.mkdir()
    shutil.copy(runs_root / "softmax" / "config.yaml", unfinished)
    os.utime(unfinished / "config.yaml", (1_500_000_000, 1_500_000_000))
    (folder / "notrun").mkdir()

    result = run_cli("runs", folder)
    assert result.exit_code == 0, result.unwrapped
    positions = [result.unwrapped.index(name) for name in ("alpha", "middle", "zeta")]
    assert positions == sorted(positions)
    assert "notrun" not in result.unwrapped and "completed" in result.unwrapped and "unfinished" in result.unwrapped
    accuracy = json.loads((runs_root / "softmax" / "metrics.json").read_text())["test"]["accuracy"]
    assert f"{accuracy:.4f}" in result.unwrapped

    from trainer.run.listing import list_runs

    rows = list_runs(folder)
    assert [r["name"] for r in rows] == ["alpha", "middle", "zeta"]
    assert rows[0]["epochs"] == 2 and rows[1]["epochs"] == 0 and rows[1]["status"] == "unfinished"

    missing = run_cli("runs", tmp_path / "nothing-here")
    assert missing.exit_code == 2 and "nothing-here" in missing.unwrapped


def test_cli_and_new_modules_import_without_tensorflow(subprocess_env):
    code = "import sys, trainer.cli, trainer.run.listing, trainer.inference.plots; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    done = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_output_that_is_a_folder_is_refused(runs_root, tmp_path):
    folder = tmp_path / "report.json"
    folder.mkdir()
    evaluated = run_cli("eval", runs_root / "softmax", "--output", folder)
    assert evaluated.exit_code == 2 and "is a folder" in evaluated.unwrapped and "Traceback" not in evaluated.unwrapped
    np.save(tmp_path / "one.npy", np.zeros((28, 28), dtype=np.uint8))
    predicted = run_cli("predict", runs_root / "softmax", tmp_path / "one.npy", "--output", folder)
    assert predicted.exit_code == 2 and "is a folder" in predicted.unwrapped
    assert list(folder.iterdir()) == []


def test_runs_survives_a_metrics_json_that_is_not_an_object(tmp_path):
    from trainer.run.listing import list_runs

    run_dir = tmp_path / "outputs" / "odd"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("name: odd\n")
    (run_dir / "metrics.json").write_text("[1, 2]\n")
    assert list_runs(tmp_path / "outputs")[0]["status"] == "unreadable metrics.json"
