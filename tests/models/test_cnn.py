"""model.type: cnn: the layers it builds, refusals, and tiny real runs on greyscale and colour images."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from tests.conftest import tiny_config
from tests.datagen import write_cifar10_dir
from trainer.config import load_config
from trainer.models import build_model, load_model


def cnn_config(data_path, model=None, **sections):
    config = tiny_config(data_path, **sections)
    config["model"] = {"type": "cnn", "blocks": [4, 8], "head": {"hidden_units": [8], "dropout": 0.0}, **(model or {})}
    return config


# --------------------------------------------------------------------------- refusals (fast)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.blocks=[]", "model.blocks: List should have at least 1 item"),
        ("model.blocks=[32, 0]", "model.blocks.1"),
        ("model.blocks=[{filters: 8, conv: 2}]", "unknown key 'conv'"),
        ("model.blocks=[{convs: 2}]", "filters: required key is missing"),
        ("model.block_dropout=1.0", "model.block_dropout"),
        ("model.activation=rellu", "did you mean 'relu'"),
        ("model.head.activation=sigmoidd", "did you mean 'sigmoid'"),
        ("model.kernel_regularizer={l3: 0.1}", "model.kernel_regularizer: unknown value 'l3'"),
        ("model.kernel_constraint=maxnorm", "did you mean 'max_norm'"),
        ("model.output=probabilities", "model.output"),
        ("model.hidden_units=[8]", "unknown key 'hidden_units'"),
    ],
)
def test_bad_cnn_settings_are_refused_naming_the_key(cli, write_config, mnist_npz, override, expected):
    result = cli("validate", write_config(cnn_config(mnist_npz)), "--set", override)
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split()) and "Traceback" not in result.output


def test_blocks_as_numbers_and_mappings_fill_in_the_section_defaults():
    config = load_config(None, ["model.type=cnn", "model.blocks=[16, {filters: 32, convs: 3}, {filters: 64, dropout: 0.5}]",
                                "model.convs_per_block=1", "model.block_dropout=0.1"])
    assert [(b.filters, b.convs, b.dropout) for b in config.model.block_list()] == [(16, 1, 0.1), (32, 3, 0.1), (64, 1, 0.5)]
    assert config.model.head.hidden_units == [512]  # the section's own head default, not the VGG16 head's


# --------------------------------------------------------------------------- the model


def test_layers_follow_the_config_and_regularizers_reach_convs_and_dense():
    config = load_config(None, [
        "model.type=cnn", "model.blocks=[4, {filters: 8, convs: 1, dropout: 0.0}]", "model.batch_norm=true",
        "model.kernel_regularizer={l2: 0.01}", "model.head.hidden_units=[6]",
    ])
    model = build_model(config.model, (28, 28), 10)
    names = [layer.name for layer in model.layers]
    assert names[:3] == ["image", "scale", "channel"]  # greyscale without a channel axis gets one inside the model
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.name, c.filters, c.padding) for c in convs] == [
        ("block1_conv1", 4, "same"), ("block1_conv2", 4, "same"), ("block2_conv1", 8, "same")]
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 3
    assert "block1_dropout" in names and "block2_dropout" not in names  # dropout 0 adds no layer
    assert all(c.kernel_regularizer is not None for c in convs) and model.get_layer("dense_1").kernel_regularizer is not None
    assert model.output_shape == (None, 10) and model.get_layer("flatten").output.shape[1:] == (7 * 7 * 8,)


def test_too_many_blocks_for_the_image_size_is_refused(cli, write_config, mnist_npz, tmp_path):
    config = cnn_config(mnist_npz, model={"blocks": [2, 2, 2, 2, 2, 2]})
    result = cli("run", write_config(config), "--run-dir", tmp_path / "r")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "model.blocks: 6 blocks" in text and "28x28" in text and "at most 4" in text
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- runs (slow)


@pytest.mark.slow
def test_greyscale_run_learns_and_eval_agrees(cli, write_config, mnist_npz, tmp_path):
    config = cnn_config(mnist_npz, train={"epochs": 3, "batch_size": 32})
    result = cli("run", write_config(config), "--run-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.5  # the classes are bright blocks at different places
    evaluated = cli("eval", tmp_path / "r")
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((tmp_path / "r" / "eval-test.json").read_text())
    assert report["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)


@pytest.mark.slow
def test_colour_cifar_run_saves_a_model_taking_raw_pixels(cli, write_config, tmp_path):
    data = write_cifar10_dir(tmp_path / "cifar", n_per_batch=8, n_test=20)
    config = cnn_config(data, data={"dataset": "cifar10", "path": str(data)}, model={"batch_norm": True})
    result = cli("run", write_config(config), "--run-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    model = load_model(tmp_path / "r" / "model.h5")
    assert model.input_shape == (None, 32, 32, 3)
    probabilities = model.predict(np.full((2, 32, 32, 3), 255, np.uint8), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


# --------------------------------------------------------------------------- mixed bfloat16 on CPUs


@pytest.mark.parametrize(("setting", "expected"), [("auto", False), (False, False), ("bfloat16", True)])
def test_cpu_bfloat16_is_opt_in(setting, expected):
    from trainer.runtime.devices import cpu_has_bfloat16, wants_cpu_bfloat16

    assert wants_cpu_bfloat16(setting) is expected
    assert cpu_has_bfloat16("flags : fpu avx512f avx512_bf16 avx512_vnni") and not cpu_has_bfloat16("flags : fpu avx2")


def test_true_still_needs_a_gpu_and_bfloat16_runs_on_a_cpu():
    from trainer.runtime.devices import configure_device

    class NoGPU:
        def list_physical_devices(self, kind):
            return []

    with pytest.raises(Exception, match="train.mixed_precision: true needs a GPU"):
        configure_device("auto", True, tf_config=NoGPU())
    try:
        info = configure_device("auto", "bfloat16", tf_config=NoGPU())
        assert info.mixed_precision and "mixed bfloat16" in info.description
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
