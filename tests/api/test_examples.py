"""The example inputs the README's predict line uses: real MNIST test digits that trainer's predict reads as 28x28 images."""
from __future__ import annotations

import re

import numpy as np
import pytest

from tests.conftest import REPO_ROOT

DIGITS = sorted((REPO_ROOT / "examples" / "digits").glob("*.png"))


def test_one_example_digit_of_each_class_ships():
    labels = sorted(int(path.name.split("-")[0]) for path in DIGITS)
    assert labels == list(range(10))


@pytest.mark.parametrize("path", DIGITS, ids=lambda p: p.name)
def test_each_example_digit_reads_as_an_mnist_image(path):
    from trainer.inference.predict import load_image

    image = load_image(path, (28, 28, 1))
    assert image.shape == (28, 28, 1) and image.dtype == np.uint8
    assert 0 <= image.min() < 30 and image.max() > 200  # black background, a white stroke: MNIST's polarity
    assert (image > 128).mean() < 0.5


def test_the_readmes_predict_line_names_files_that_exist():
    readme = (REPO_ROOT / "README.md").read_text()
    line = next(line for line in readme.splitlines() if "trainer predict" in line and "examples/" in line)
    command = line.split("#")[0]
    targets = re.findall(r"examples/\S+", command)
    assert targets and all((REPO_ROOT / target).exists() for target in targets), targets
