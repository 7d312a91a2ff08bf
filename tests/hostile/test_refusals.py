"""One-line refusals where a traceback or a silent side effect used to be (issue 27, classes 6 and 7).

- ``trainer sweep --study`` meets the name rule of ``sweep.study`` (it names the sweep folder under
  ``output.dir``): ``../../x`` is exit 2 and creates nothing.
- ``trainer export --format onnx|litert`` on a backend other than TensorFlow is one sentence naming
  ``KERAS_BACKEND=tensorflow``, the same on JAX and PyTorch, before any model is loaded.
- The CLI's obvious wrong inputs give exit 2 and one message on JAX as on TensorFlow.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, tiny_config

SPACE = {"optimizer.learning_rate": {"float": [1.0e-3, 3.0e-2], "log": True}}


def refused(result, *expected: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for part in expected:
        assert part in result.text, (part, result.text)


# --------------------------------------------------------------------------- sweep --study


@pytest.mark.parametrize("study", ["../../x", "a/b", "/tmp/x", "..\\x", "", "x" * 129, "naïve", "a b", "x\x1b[2J"])
def test_sweep_study_from_the_command_line_meets_the_config_name_rule(cli, write_config, mnist_npz, tmp_path, study):
    outputs = tmp_path / "outputs"
    config = tiny_config(mnist_npz, data={"validation": 0.25}, output={"dir": str(outputs)}, sweep={"trials": 1, "space": SPACE})
    path = write_config(config)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = cli("sweep", path, "--study", study)
    refused(result, "--study:", "is not a study name", "letters, digits")
    assert "\x1b" not in result.output  # the name is shown escaped
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no sweep folder, no outputs/, nothing outside
    assert not (tmp_path.parent / "x-sweep").exists()


@pytest.mark.parametrize("study", ["mnist-lr", "a.b_c", "..", "x" * 128])
def test_a_valid_study_name_is_accepted_and_names_the_folder(mnist_npz, study, tmp_path):
    from trainer.config.loading import load_config
    from trainer.sweep import plan_sweep

    config = load_config(None, [f"output.dir={tmp_path}", "data.validation=0.1", "sweep={space: {optimizer.learning_rate: {float: [0.001, 0.01]}}}"])
    plan = plan_sweep(config, study=study)
    assert plan.sweep_dir == (tmp_path / f"{study}-sweep").resolve()
    assert plan.sweep_dir.parent == tmp_path.resolve()


def test_the_python_api_takes_the_same_study_rule():
    from trainer.config.loading import load_config
    from trainer.errors import ConfigError
    from trainer.sweep import plan_sweep

    config = load_config(None, ["data.validation=0.1", "sweep={space: {optimizer.learning_rate: {float: [0.001, 0.01]}}}"])
    with pytest.raises(ConfigError, match="is not a study name"):
        plan_sweep(config, study="../x")


# --------------------------------------------------------------------------- export on a backend that cannot convert


@pytest.mark.parametrize("fmt, converter", [("onnx", "tf2onnx"), ("litert", "the TFLite converter")])
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_export_formats_that_need_the_tensorflow_backend_are_one_sentence_on_every_other_backend(monkeypatch, fmt, converter, backend):
    from trainer.errors import BadInputError
    from trainer.inference import export as export_module

    monkeypatch.setattr("trainer.runtime.loaded_keras_backend", lambda: None)  # as in a fresh `trainer export` process
    monkeypatch.setenv("KERAS_BACKEND", backend)
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed: the refusal names its install first")
    with pytest.raises(BadInputError) as refusal:
        export_module.check_can_export(fmt)
    message = str(refusal.value)
    assert message == (
        f"trainer export --format {fmt} needs the TensorFlow backend (Keras converts the model through {converter}), but Keras runs "
        f"on {backend} (KERAS_BACKEND={backend}); rerun with KERAS_BACKEND=tensorflow (a model trained on any backend loads there), "
        "or use --format savedmodel."
    )
    assert "\n" not in message


def test_savedmodel_export_is_not_refused_on_jax(monkeypatch):
    from trainer.errors import BadInputError
    from trainer.inference.export import check_export_backend, get_format

    monkeypatch.setattr("trainer.runtime.loaded_keras_backend", lambda: None)
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    check_export_backend(get_format("savedmodel"))  # Keras traces JAX through jax2tf: works (measured, parity 1.5e-8)
    with pytest.raises(BadInputError, match="KERAS_BACKEND=jax"):  # the same set-up refuses onnx: it is JAX's case
        check_export_backend(get_format("onnx"))


def _trainer(args, cwd: Path, backend: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2",
           "TRAINER_CONFIG_HOME": str(cwd / "config-home"), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "trainer", *map(str, args)], env=env, capture_output=True, text=True, timeout=600, cwd=cwd)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None or importlib.util.find_spec("tensorflow") is None, reason="needs JAX and TensorFlow")
def test_export_of_a_jax_run_is_refused_on_jax_and_works_on_tensorflow(tmp_path, mnist_npz, write_config):
    """The issue's case end to end: a JAX-trained run; onnx on JAX is one sentence (exit 2, nothing written), on TensorFlow it exports."""
    run_dir = tmp_path / "run"
    done = _trainer(["run", write_config(tiny_config(mnist_npz)), "--run-dir", run_dir], tmp_path, "jax")
    assert done.returncode == 0, done.stderr[-3000:]
    before = sorted(p.name for p in run_dir.iterdir())
    for fmt in ("onnx", "litert"):
        done = _trainer(["export", run_dir, "--format", fmt], tmp_path, "jax")
        text = " ".join((done.stdout + done.stderr).split())
        assert done.returncode == 2, text
        assert "Traceback" not in text and "KERAS_BACKEND=tensorflow" in text
        assert sorted(p.name for p in run_dir.iterdir()) == before
    if importlib.util.find_spec("tf2onnx") is not None:
        done = _trainer(["export", run_dir, "--format", "onnx"], tmp_path, "tensorflow")
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        assert (run_dir / "model.onnx").is_file()


# --------------------------------------------------------------------------- the CLI's wrong inputs, JAX as TensorFlow


def wrong_inputs(tmp_path: Path, data: Path) -> dict[str, list]:
    """Obvious wrong inputs for each command; each must be exit 2 with one message on every backend."""
    import yaml

    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(tiny_config(data)))
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({**tiny_config(data), "optimzer": "adam"}))
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    (tmp_path / "notarun").mkdir(exist_ok=True)
    (tmp_path / "image.png").write_bytes(b"not a png")
    return {
        "run_missing_config": ["run", tmp_path / "missing.yaml"],
        "run_yaml_error": ["run", tmp_path / "bad.yaml"],
        "run_unknown_key": ["run", tmp_path / "typo.yaml"],
        "run_bad_set": ["run", good, "--set", "train.epochs=-1"],
        "run_missing_data": ["run", good, "--set", f"data.path={tmp_path / 'nothing.npz'}"],
        "run_resume_nothing": ["run", good, "--resume", "--run-dir", tmp_path / "notarun"],
        "validate_unknown_loss": ["validate", good, "--set", "loss=mse_typo"],
        "eval_not_a_run": ["eval", tmp_path / "notarun"],
        "eval_missing": ["eval", tmp_path / "missing"],
        "predict_not_a_run": ["predict", tmp_path / "notarun", tmp_path / "image.png"],
        "export_unknown_format": ["export", tmp_path / "notarun", "--format", "pickle"],
        "export_not_a_run": ["export", tmp_path / "notarun", "--format", "savedmodel"],
        "runs_missing": ["runs", tmp_path / "missing"],
        "list_unknown": ["list", "lossses"],
        "lr_find_bad_range": ["lr-find", good, "--start", "1", "--end", "0.1"],
        "sweep_no_section": ["sweep", good],
    }


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs JAX")
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_every_command_refuses_wrong_inputs_in_one_line_on_each_backend(tmp_path, mnist_npz, backend):
    if backend == "tensorflow" and importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed")
    failures = []
    for name, args in wrong_inputs(tmp_path, mnist_npz).items():
        done = _trainer(args, tmp_path, backend)
        output = done.stdout + done.stderr
        if done.returncode != 2 or "Traceback" in output or "error" not in output.lower():
            failures.append((name, done.returncode, output[-600:]))
    assert not failures, failures
