"""CI's second and third environments: trainer without TensorFlow, the backend-neutral tests under
KERAS_BACKEND=jax (``.ci/neutral-venv``) and under KERAS_BACKEND=torch (``.ci/torch-venv``).

``.ci/neutral-venv`` makes a virtual environment with trainer installed without its TensorFlow
dependency plus an explicit list of packages, checks TensorFlow is absent, and runs
tests/project/test_backend_neutral.py there; ``.ci/torch-venv`` does the same with PyTorch's CPU wheel, and runs
``benchmarks/gpu_check.py --cpu --tiny --backends jax,torch``. Marked ``first``: most of it is installing, which overlaps
the rest of the suite under ``-n 2``.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.first(order=0)
@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason=".ci/neutral-venv is a bash script for Linux CI")
def test_the_backend_neutral_tests_pass_in_an_environment_without_tensorflow():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "KERAS_BACKEND", "PYTHONPATH", "TRAINER_NEUTRAL_HERE"))}
    done = subprocess.run(["bash", str(REPO_ROOT / ".ci" / "neutral-venv")], env=env, capture_output=True, text=True, timeout=900)
    tail = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, tail
    summary = re.search(r"(\d+) passed", done.stdout)
    assert summary and int(summary.group(1)) >= 9 and " failed" not in done.stdout, tail
    assert "TensorFlow is installed" not in done.stderr


@pytest.mark.first(order=0)
@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason=".ci/torch-venv is a bash script for Linux CI")
def test_the_backend_neutral_tests_and_the_gpu_check_pass_on_pytorch_without_tensorflow():
    """CI's third environment (.ci/torch-venv): PyTorch's CPU wheel, no TensorFlow; the backend-neutral tests, the
    hand-computed optimizer, EMA and exact-resume tests on torch, then ``gpu_check.py --cpu --tiny --backends jax,torch``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "KERAS_BACKEND", "PYTHONPATH", "TRAINER_NEUTRAL_HERE"))}
    done = subprocess.run(["bash", str(REPO_ROOT / ".ci" / "torch-venv")], env=env, capture_output=True, text=True, timeout=1500)
    tail = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, tail
    summary = re.search(r"(\d+) passed", done.stdout)
    assert summary and int(summary.group(1)) >= 30 and " failed" not in done.stdout, tail
    assert "TensorFlow is installed" not in done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and line.split(" | ")[1:2] in (["jax"], ["torch"])]
    cases = {line.split(" | ")[0].strip("| ") for line in rows}
    # every case of gpu_check ran on both backends, and each row is ok
    assert rows and all(" | ok |" in line for line in rows) and len(rows) == 2 * len(cases) >= 6, tail
    assert "| case | backend | device | images/s | epoch s | first epoch s (compile) | augmented / plain |" in done.stdout, tail
    for line in rows:  # columns: case, backend, device, images/s, epoch s, first epoch s, augmented / plain, ...
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert float(cells[5]) > 0, line  # the first epoch, compiling included, measured
        if cells[0] in ("cifar10_cnn", "cifar10_94"):  # the cases with data.augment: also timed without it
            assert float(cells[6]) > 0, line


def test_the_no_tensorflow_requirements_are_pyprojects_dependencies_less_tensorflow():
    import tomllib

    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = (REPO_ROOT / "requirements" / "no-tensorflow.txt").read_text().splitlines()
    listed = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert sorted(listed) == sorted(d.split("#")[0].strip() for d in declared if not d.startswith("tensorflow"))
