"""``backend: auto | tensorflow | jax | torch`` in the config (issue 20 item 5): the choice, the notice, validate's check."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO_ROOT, tiny_config
from trainer.errors import BadInputError, ConfigError
from trainer.runtime.distribute import check_backend, choose_backend


@pytest.mark.parametrize(
    "configured, environ, strategy, expected",
    [
        ("auto", {}, "none", ("tensorflow", None)),
        ("jax", {}, "none", ("jax", None)),
        ("torch", {}, "none", ("torch", None)),
        ("tensorflow", {}, "mirrored", ("tensorflow", None)),
        ("jax", {"KERAS_BACKEND": "jax"}, "multi_worker", ("jax", None)),
    ],
)
def test_config_backend_is_used_when_the_environment_is_silent(configured, environ, strategy, expected):
    assert choose_backend(strategy, environ, None, configured) == expected


@pytest.mark.parametrize(
    "installed, expected",
    [({"tensorflow", "jax", "jaxlib", "torch"}, "tensorflow"), ({"jax", "jaxlib", "torch"}, "jax"), ({"jax", "torch"}, "torch"), ({"torch"}, "torch")],
)
def test_auto_takes_the_first_installed_backend(installed, expected):
    """Each backend is an extra: auto runs on TensorFlow when it is there, else JAX (both its packages), else PyTorch."""
    assert choose_backend("none", {}, None, "auto", find_spec=lambda name: name if name in installed else None) == (expected, None)


def test_no_backend_at_all_is_one_line_naming_the_extras(cli, write_config, mnist_npz, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("tensorflow", "jax", "jaxlib", "torch") else real(name, *a))
    result = cli("validate", write_config(tiny_config(mnist_npz)))
    assert result.exit_code == 2
    assert "no Keras backend is installed" in result.text and "pip install -e '.[tensorflow]' (or '.[jax]', or '.[torch]')" in result.text


def test_pyproject_installs_no_backend_but_offers_each_as_an_extra():
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith(("tensorflow", "jax", "torch")) for d in project["dependencies"])
    assert {"tensorflow", "jax", "torch"} <= set(project["optional-dependencies"])


def test_environment_wins_with_a_notice():
    backend, notice = choose_backend("none", {"KERAS_BACKEND": "tensorflow"}, None, "jax")
    assert backend == "tensorflow"
    assert notice == "KERAS_BACKEND=tensorflow in the environment wins over backend: jax in the config."


@pytest.mark.parametrize(
    "configured, strategy, needle",
    [
        ("tensorflow", "multi_worker", "multi_worker is not supported on the tensorflow backend"),
        ("torch", "mirrored", "mirrored is not supported on the torch backend"),
        ("torch", "multi_worker", "multi_worker is not supported on the torch backend"),
    ],
)
def test_unsupported_pairs_are_refused(configured, strategy, needle):
    with pytest.raises(BadInputError, match=needle) as error:
        choose_backend(strategy, {}, None, configured)
    assert error.value.exit_code == 2 and "backend: jax" in str(error.value)


@pytest.mark.parametrize(
    "backend, missing, command",
    [("torch", "torch", "pip install -e '.[torch]'"), ("jax", "jax and jaxlib", "pip install -e '.[jax]'"), ("tensorflow", "tensorflow", "pip install -e '.[tensorflow]'")],
)
def test_missing_packages_are_named_with_the_install_command(backend, missing, command):
    from trainer.config.schema import Config

    config = Config.model_validate({"backend": backend})
    looked = []
    with pytest.raises(BadInputError) as error:
        check_backend(config, {}, find_spec=lambda name: looked.append(name))
    assert f"{missing} {'are' if ' and ' in missing else 'is'} not installed; run {command}" in str(error.value)
    assert looked  # asked importlib.util.find_spec: nothing was imported


def test_backend_key_round_trips_and_is_checked(write_config):
    from trainer.config import load_config
    from trainer.config.schema import Config

    assert "backend" not in Config().to_dict()  # auto: older run directories' config.yaml stays the same
    assert Config.model_validate({"backend": "jax"}).to_dict()["backend"] == "jax"
    with pytest.raises(ConfigError, match="backend") as error:
        load_config(write_config({"backend": "jaxx"}, "bad.yaml"))
    assert "bad.yaml" in str(error.value)


def test_validate_refuses_a_backend_that_is_not_installed(cli, mnist_npz, write_config, monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    path = write_config({**tiny_config(mnist_npz), "backend": "torch"})
    result = cli("validate", path)
    assert result.exit_code == 2, result.output
    assert "torch is not installed; run pip install -e '.[torch]'" in result.text and "Traceback" not in result.output


def test_validate_names_the_backend_and_the_override(cli, mnist_npz, write_config, monkeypatch):
    path = write_config({**tiny_config(mnist_npz), "backend": "jax"})
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    result = cli("validate", path)
    assert result.exit_code == 0, result.output
    assert "on the jax backend" in result.text
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    result = cli("validate", path)
    assert result.exit_code == 0, result.output
    assert "KERAS_BACKEND=tensorflow in the environment wins over backend: jax in the config" in result.text
    assert "on the tensorflow backend" in result.text


def test_the_library_asks_for_the_variable_instead_of_setting_it(monkeypatch):
    """A Python caller with backend: jax and no KERAS_BACKEND is told what to set (the library never changes the environment)."""
    import trainer.runtime as runtime

    monkeypatch.setattr(runtime, "loaded_keras_backend", lambda: None)
    environ: dict[str, str] = {}
    with pytest.raises(BadInputError, match="this run needs KERAS_BACKEND='jax'"):
        runtime.choose_keras_backend(configured="jax", environ=environ)
    assert environ == {}


@pytest.mark.slow
def test_run_on_the_configured_backend_records_it(tmp_path):
    """backend: jax with no KERAS_BACKEND: the CLI trains on JAX; metrics.json and manifest.json say so; eval runs on TensorFlow."""
    from tests.datagen import write_mnist_npz

    data = write_mnist_npz(tmp_path / "mnist.npz", n_train=128, n_test=32, seed=0)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**tiny_config(data, train={"epochs": 1, "batch_size": 32}), "backend": "jax"}))
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env.update(PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-m", "trainer", "run", str(config), "--run-dir", str(tmp_path / "run")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CPU (JAX, float32)" in done.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["device"]["backend"] == "jax" and metrics["device"]["precision"] == "float32"
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["trained_on"] == {"backend": "jax", "kind": "cpu", "devices": ["CPU"], "precision": "float32"}
    evaluated = subprocess.run([sys.executable, "-m", "trainer", "eval", str(tmp_path / "run"), "--output", str(tmp_path / "eval.json")],
                               env={**env, "KERAS_BACKEND": "tensorflow"}, capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert json.loads((tmp_path / "eval.json").read_text())["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)


# --------------------------------------------------------------------------- manifest.json's trained_on, read back

from hypothesis import given, settings, strategies as st  # noqa: E402

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=300),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
MANIFEST = {"dataset": "mnist", "num_classes": 10, "class_names": [str(i) for i in range(10)], "input_shape": [28, 28],
            "label_encoding": "sparse", "loss": {"name": "sparse_categorical_crossentropy"}, "model_output": "softmax"}


@settings(max_examples=30, deadline=None)
@given(trained_on=st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries({"backend": JSON_VALUES, "kind": JSON_VALUES, "devices": JSON_VALUES, "precision": JSON_VALUES}),
))
def test_a_mutated_trained_on_is_read_or_refused_naming_the_file(trained_on):
    from trainer.errors import RunDirError
    from trainer.readers.records import Manifest

    try:
        manifest = Manifest.from_dict({**MANIFEST, "trained_on": trained_on}, "run/manifest.json")
    except RunDirError as error:
        assert "run/manifest.json" in str(error) and "trained_on" in str(error) and error.exit_code == 2
    else:
        assert manifest.trained_on is None or isinstance(manifest.trained_on, dict)


def test_old_manifests_without_trained_on_still_read():
    from trainer.readers.records import Manifest

    assert Manifest.from_dict(dict(MANIFEST)).trained_on is None
    good = {"backend": "jax", "kind": "gpu", "devices": ["NVIDIA H200"], "precision": "mixed_bfloat16"}
    assert Manifest.from_dict({**MANIFEST, "trained_on": good}).trained_on == good
