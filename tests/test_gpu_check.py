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
    assert "| case | backend | device | images/s | epoch s | accuracy (synthetic data) |" in done.stdout


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
    text = gpu_check.table(rows, cpu=False, synthetic=True)
    assert "| mnist_mlp | jax | GPU x1: NVIDIA H200 (JAX, mixed bfloat16) | 51,234 | 1.20 | 0.9700 | 1,500 | ok |" in text
    assert "| cifar10_cnn | torch | - | - | - | - | - | failed: needs TensorFlow |" in text
