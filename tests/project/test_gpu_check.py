"""benchmarks/gpu_check.py on a CPU machine (--cpu --tiny): the cases train, the device line is checked, the table printed."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import gpu_check  # noqa: E402


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="the check trains on JAX (pip install -e '.[jax]')")
def test_gpu_check_runs_on_a_cpu_and_prints_the_table(subprocess_env):
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "gpu_check.py"), "--cpu", "--tiny", "--backends", "jax", "--only", "mnist_mlp"],
        env=subprocess_env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("| mnist_mlp | jax |"))
    assert "| CPU (JAX, float32) |" in row and row.endswith("| ok |")
    assert "| case | backend | device | images/s | epoch s | first epoch s (compile) | augmented / plain | accuracy (synthetic data) |" in done.stdout


def test_data_with_jpeg_folders_feeds_them_to_the_cifar10_94_case_and_the_table_says_real_data(tmp_path):
    """--data DIR with the JPEG class folders (cifar10-jpg/ as ../shared/data holds them, unpacked): the case trains on
    them, not on synthetic images. (The case's training on JAX and PyTorch, its device line, first epoch and
    augmented / plain ratio: every row of .ci/torch-venv's gpu_check, tests/project/test_neutral_venv.py.)"""
    from tests.datagen import write_image_folders

    classes = tuple(f"class{number}" for number in range(10))
    write_image_folders(tmp_path / "given" / "cifar10-jpg", classes=classes, n_per_class=1, size=(32, 32), modes=("RGB",), formats=("jpg",))
    data = gpu_check.write_data(tmp_path / "scratch", tiny=True, data=tmp_path / "given")
    assert data["cifar10_jpg"] == (tmp_path / "given" / "cifar10-jpg", False)
    assert data["mnist"][1] and data["cifar10"][1]  # absent from DIR: synthetic
    config = gpu_check.case_configs(data, tiny=True)["cifar10_94"]
    assert config["data"]["path"] == str(tmp_path / "given" / "cifar10-jpg") and config["data"]["dataset"] == "folder"
    assert config["data"]["augment"] and gpu_check.plain_config(config, tiny=True)["data"]["augment"] is None
    row = gpu_check.Result("cifar10_94", "jax", device="CPU (JAX, mixed bfloat16)", synthetic=False)
    assert "accuracy (synthetic data)" not in gpu_check.table([row], cpu=True, synthetic=False)


def test_data_finds_the_jpeg_folders_and_fills_the_rest(tmp_path):
    (tmp_path / "cifar10-jpg" / "train").mkdir(parents=True)
    (tmp_path / "cifar10-jpg" / "test").mkdir()
    assert gpu_check.jpeg_folders(tmp_path) == tmp_path / "cifar10-jpg"
    assert gpu_check.jpeg_folders(tmp_path / "cifar10-jpg") == tmp_path / "cifar10-jpg"
    assert gpu_check.jpeg_folders(tmp_path / "elsewhere") is None


def test_wheels_for_another_python_are_named_with_the_remedy(tmp_path, monkeypatch):
    (tmp_path / "pydantic_core-2.27.1-cp99-cp99-manylinux_2_17_x86_64.whl").write_bytes(b"")
    (tmp_path / "typer-0.12.0-py3-none-any.whl").write_bytes(b"")
    assert gpu_check.wheel_pythons(tmp_path) == {"9.9"}
    monkeypatch.setattr(gpu_check, "missing_modules", lambda names: ["typer>=0.12"])
    with pytest.raises(SystemExit) as stop:
        gpu_check.install_missing(tmp_path)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"holds wheels for Python 9.9, this is Python {here}" in str(stop.value) and f"--download-wheels {here}" in str(stop.value)
    assert "--python-version" in gpu_check.download_command(tmp_path, "3.12") and "3.12" in gpu_check.download_command(tmp_path, "3.12")


@pytest.mark.parametrize(
    "capability, expected", [("9.0", "mixed bfloat16"), ("8.0", "mixed bfloat16"), ("7.5", "mixed float16"), ("6.1", "float32"), (None, "float32")]
)
def test_the_check_expects_what_auto_chooses(capability, expected):
    from trainer.runtime.devices import choose_precision, parse_capability

    assert gpu_check.expected_precision(capability) == expected
    assert choose_precision("auto", "gpu", parse_capability(capability)).replace("_", " ") == expected  # the check agrees with trainer


def test_a_case_without_tensorflow_says_so_instead_of_crashing():
    assert gpu_check.why_failed("Traceback ...\nModuleNotFoundError: No module named 'tensorflow'\n") == (
        "failed: needs TensorFlow (trainer's data path still imports it on this backend)"
    )
    assert gpu_check.why_failed("error: data.path: no such file\n") == "failed: error: data.path: no such file"


def test_table_shows_every_case_even_failed_ones():
    rows = [gpu_check.Result("mnist_mlp", "jax", device="GPU x1: NVIDIA H200 (JAX, mixed bfloat16)", images_per_second=51234.0, epoch_seconds=1.2,
                             accuracy=0.97, peak_gpu_mib=1500.0),
            gpu_check.Result("cifar10_cnn", "torch", status="failed: needs TensorFlow")]
    rows[0].first_epoch_seconds, rows[0].augment_ratio = 27.5, 1.1
    text = gpu_check.table(rows, cpu=False, synthetic=True)
    assert "| mnist_mlp | jax | GPU x1: NVIDIA H200 (JAX, mixed bfloat16) | 51,234 | 1.20 | 27.50 | 1.10 | 0.9700 | 1,500 | ok |" in text
    assert "| cifar10_cnn | torch | - | - | - | - | - | - | - | failed: needs TensorFlow |" in text
