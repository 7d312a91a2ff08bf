"""Every kind of bad input gets one clear message and exit 2 through the CLI, never a traceback."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import tiny_config


def refused(result, *expected: str) -> None:
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for part in expected:
        assert part in text, (part, text)


@pytest.fixture
def broken_npz(mnist_npz, tmp_path):
    """Write a copy of the tiny mnist.npz with one array replaced."""
    arrays = dict(np.load(mnist_npz))

    def write(name: str, **replace) -> str:
        path = tmp_path / name
        np.savez(path, **{**arrays, **replace})
        return str(path)

    return write, arrays


@pytest.mark.parametrize(
    "case, expected",
    [
        ("short", ["x_train has 256 examples but y_train has 253"]),
        ("labels", ["labels range from 5 to 14", "need labels 0 to 9"]),
        ("nan", ["nan.npz", "NaN or infinite"]),
        ("missing", ["missing.npz: no such file or folder"]),
    ],
)
def test_data_problems_are_named(cli, write_config, broken_npz, tmp_path, case, expected):
    write, arrays = broken_npz
    x_nan = arrays["x_train"].astype("float32")
    x_nan[0, 0, 0] = np.nan
    make = {
        "short": lambda: write("short.npz", y_train=arrays["y_train"][:-3]),
        "labels": lambda: write("labels.npz", y_train=arrays["y_train"] + 5),
        "nan": lambda: write("nan.npz", x_train=x_nan),
        "missing": lambda: str(tmp_path / "missing.npz"),
    }
    refused(cli("run", write_config(tiny_config(make[case]())), "--run-dir", tmp_path / "never"), *expected)
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize(
    "section, value, expected",
    [
        ("optimizer", "adamm", ["optimizer: unknown value 'adamm'", "did you mean 'adam'"]),
        ("metrics", ["acc", "accuracyy"], ["metrics.1: unknown value 'accuracyy'", "did you mean 'accuracy'"]),
        ("callbacks", ["early_stoping"], ["callbacks.0.name: unknown value 'early_stoping'", "did you mean 'early_stopping'"]),
        ("loss", "sparse_categorical_crossentropyy", ["loss: unknown value", "did you mean 'sparse_categorical_crossentropy'"]),
        ("model", {"type": "mlpp"}, ["model.type: unknown value 'mlpp'", "did you mean 'mlp'"]),
        ("data", {"dataset": "mnistt"}, ["data.dataset: unknown value 'mnistt'", "did you mean 'mnist'"]),
    ],
)
def test_unknown_names_are_refused_by_validate_and_run(cli, write_config, mnist_npz, tmp_path, section, value, expected):
    config = write_config(tiny_config(mnist_npz, **{section: value}))
    refused(cli("validate", config), *expected)
    refused(cli("run", config, "--dry-run"), *expected)


def test_config_file_problems(cli, write_config, tmp_path):
    refused(cli("validate", write_config("train:\n  epochs: [1, 2\nseed: 3\n", "syntax.yaml")), "syntax.yaml:3:5: YAML syntax error")
    refused(cli("validate", write_config("", "empty.yaml")), "empty.yaml is empty")
    refused(cli("validate", write_config("- 1\n- 2\n", "list.yaml")), "top level must be a mapping", "got a list")
    refused(cli("validate", tmp_path / "absent.yaml"), "config file not found")
    several = write_config(
        "train:\n  epochs: -1\n  batch_size: 0\ndata:\n  validation: 1.5\nmodel:\n  type: mlp\n  hidden_units: [16, x]\n  dropuot: 0.1\n",
        "several.yaml",
    )
    refused(
        cli("validate", several),
        "5 problems",
        "several.yaml:2: train.epochs: Input should be greater than 0; got -1",
        "train.batch_size: Input should be greater than 0; got 0",
        "data.validation: must be 'test', 'none' or a fraction strictly between 0 and 1; got 1.5",
        "model.hidden_units.1: Input should be a valid integer; got 'x'",
        "model.dropuot: unknown key 'dropuot' (did you mean 'dropout'?)",
    )


def test_malformed_set(cli, write_config, mnist_npz):
    config = write_config(tiny_config(mnist_npz))
    refused(cli("validate", config, "--set", "train.epochs"), "expected KEY=VALUE")
    refused(cli("validate", config, "--set", "train.epochs=["), "the value is not valid YAML")
    refused(cli("validate", config, "--set", "=3"), "the key must be a dotted path")
    refused(cli("validate", config, "--set", "train.epochs=0"), "--set train.epochs=0: train.epochs: Input should be greater than 0")
