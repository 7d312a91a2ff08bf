"""benchmarks/run.py's cifar10_94 case: listed, timed by the epoch (not the command), and runnable end to end on tiny folders."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import cifar10_94  # noqa: E402
import run as bench_run  # noqa: E402

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def write_cifar_jpegs(root: Path, train_per_class: int = 3, test_per_class: int = 2) -> Path:
    """``root/cifar10-jpg/{train,test}/<class>/NNNN.jpg``: 32x32 RGB noise, laid out as prepare_data.py unpacks CIFAR-10."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for name in CLASSES:
            folder = root / "cifar10-jpg" / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{index:04d}.jpg")
    return root


def test_the_case_is_listed_with_both_commands_and_its_limit(tmp_path):
    (case,) = bench_run.cases(tmp_path, tmp_path / "scratch", {"cifar10_94"}, limit=2048)
    assert case.target == 1.0 and case.timing is not None and case.summary is not None
    assert case.baseline[1].endswith("baselines/cifar10_94_keras.py")
    assert case.baseline[case.baseline.index("--limit") + 1] == "2048" and case.baseline[case.baseline.index("--epochs") + 1] == "1"
    assert case.trainer[case.trainer.index("--limit") + 1] == "2048"
    arguments = cifar10_94.trainer_arguments(tmp_path / "cifar10-94-2048", str(tmp_path / "run"))
    assert {"train.epochs=1", "data.validation=none", "data.dataset=folder", f"data.path={tmp_path / 'cifar10-94-2048'}"} <= set(arguments)
    assert "10,240 training images (--limit 10240)" in cifar10_94.summary(10240, 100.0, 80.0)
    assert "50,000 training images (--limit 0, the full set)" in cifar10_94.summary(0, 100.0, 80.0)


@pytest.mark.parametrize("line, expected", [("  mixed_precision: bfloat16\n", "bfloat16"), ("  mixed_precision: auto\n", "float32"), ("", "float32")])
def test_the_baseline_computes_in_the_precision_the_config_trains_in(tmp_path, line, expected):
    """Same numerics both sides: the config's train.mixed_precision: bfloat16 becomes the script's --mixed-precision bfloat16."""
    config = tmp_path / "c.yaml"
    config.write_text("name: x\ntrain:\n  epochs: 1\n" + line)
    assert cifar10_94.config_precision(config) == expected
    (case,) = bench_run.cases(tmp_path, tmp_path / "scratch", {"cifar10_94"}, limit=2048)
    assert case.baseline[case.baseline.index("--mixed-precision") + 1] == cifar10_94.config_precision()


def test_the_seconds_compared_are_the_epochs_own(tmp_path):
    """The baseline's JSON line and trainer's history.csv, never the wall time of the command."""
    stdout = "Epoch 1/1\n" + json.dumps({"epoch_seconds": [12.5], "test_accuracy": 0.1}) + "\n"
    assert cifar10_94.epoch_seconds("baseline", stdout, tmp_path) == 12.5
    (tmp_path / "history.csv").write_text("epoch,loss,learning_rate,epoch_seconds,examples_per_second\n1,2.3,0.1,7.25,1412.4\n")
    assert cifar10_94.epoch_seconds("trainer", "", tmp_path) == 7.25


def test_a_side_without_its_epoch_time_stops_the_benchmark(tmp_path):
    with pytest.raises(SystemExit, match="no JSON line"):
        cifar10_94.epoch_seconds("baseline", "Traceback ...\n", tmp_path)
    (tmp_path / "history.csv").write_text("epoch,loss\n")
    with pytest.raises(SystemExit, match="no epoch_seconds"):
        cifar10_94.epoch_seconds("trainer", "", tmp_path)


@pytest.mark.slow
def test_the_case_runs_end_to_end_on_tiny_folders(tmp_path, subprocess_env):
    """Both sides train one step on 20 images (--limit 20) and the table and the images/s line come out."""
    data = write_cifar_jpegs(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "run.py"), "--data", str(data), "--only", "cifar10_94", "--repeats", "1", "--limit", "20"],
        env=subprocess_env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("| cifar10_94 |"))
    assert "(<= 1.0, " in row
    assert "of 20 training images (--limit 20)" in done.stdout and "images/s baseline" in done.stdout
    linked = data / "cifar10-94-20"
    assert sorted(p.name for p in (linked / "train" / "cat").iterdir()) == ["0000.jpg", "0001.jpg"]  # the first 2 a class, as the script takes
    assert len(list((linked / "test").rglob("*.jpg"))) == 20


@pytest.mark.parametrize("text", ["-10", "5", "ten"])
def test_a_limit_below_one_image_a_class_is_refused(text, subprocess_env):
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "run.py"), "--only", "cifar10_94", "--limit", text],
        env=subprocess_env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2 and "--limit" in done.stderr and "Traceback" not in done.stderr
    assert "0 (all 50,000) or at least 10" in done.stderr


@pytest.mark.parametrize("text, value", [("0", 0), ("10", 10), ("10240", 10240)])
def test_a_limit_of_whole_images_a_class_is_taken(text, value):
    assert cifar10_94.limit_argument(text) == value
