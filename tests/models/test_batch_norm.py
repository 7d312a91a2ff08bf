"""model.batch_norm_momentum on every model type whose BatchNormalization layers train (cnn, resnet, a backbone from scratch)."""
from __future__ import annotations

import pytest

from tests.conftest import tiny_config
from trainer.config import load_config
from trainer.errors import ConfigError


def with_model(model: dict) -> dict:
    config = tiny_config(None)
    config["model"] = model  # the whole section: tiny_config's mlp keys do not apply
    return config


def momenta(model) -> set[float]:
    import keras

    return {round(float(layer.momentum), 6) for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)}


@pytest.mark.parametrize(
    "model, shape, expected",
    [
        ({"type": "cnn", "blocks": [4], "batch_norm": True, "head": {"hidden_units": [8]}}, (8, 8, 3), {0.9}),  # CNN_BATCH_NORM_MOMENTUM
        ({"type": "cnn", "blocks": [4], "batch_norm": True, "batch_norm_momentum": 0.5, "head": {"hidden_units": [8]}}, (8, 8, 3), {0.5}),
        ({"type": "resnet", "variant": "resnet20", "widths": [4, 4, 4], "batch_norm_momentum": 0.7}, (8, 8, 3), {0.7}),
        pytest.param({"type": "backbone_head", "backbone": "mobilenet_v2", "weights": None, "trainable_backbone": True, "batch_norm_momentum": 0.8},
                     (32, 32, 3), {0.8}, marks=pytest.mark.slow),  # building MobileNetV2 takes seconds
    ],
)
def test_every_batch_normalization_layer_gets_the_momentum(model, shape, expected):
    from trainer.models import build_model

    config = load_config(None, [], base=with_model(model))
    assert momenta(build_model(config.model, shape, 3)) == expected


@pytest.mark.parametrize(
    "model, message",
    [
        ({"type": "cnn", "batch_norm_momentum": 0.9}, "batch_norm is false"),
        ({"type": "cnn", "batch_norm": True, "batch_norm_momentum": 1.0}, "batch_norm_momentum"),
        ({"type": "cnn", "batch_norm": True, "batch_norm_momentum": -0.1}, "batch_norm_momentum"),
        ({"type": "backbone_head", "backbone": "resnet50", "trainable_backbone": True, "batch_norm_momentum": 0.9}, "stay frozen"),
        ({"type": "backbone_head", "backbone": "resnet50", "weights": None, "batch_norm_momentum": 0.9}, "the backbone is frozen"),
        ({"type": "backbone_head", "backbone": "resnet50", "fine_tune": {"epochs": 1}, "batch_norm_momentum": 0.9}, "fine-tuning keeps"),
        ({"type": "mlp", "batch_norm_momentum": 0.9}, "batch_norm_momentum"),
    ],
)
def test_a_momentum_that_would_change_nothing_is_refused_with_exit_2(model, message, cli, write_config):
    result = cli("validate", write_config(with_model(model)))
    assert result.exit_code == 2, result.output
    assert message in result.unwrapped and "Traceback" not in result.output


def test_a_backbone_without_batch_normalization_says_so():
    from trainer.models import build_model

    config = load_config(None, [], base=with_model({"type": "backbone_head", "backbone": "vgg16", "weights": None, "trainable_backbone": True, "batch_norm_momentum": 0.9}))
    with pytest.raises(ConfigError, match="backbone vgg16 has no BatchNormalization layers"):
        build_model(config.model, (32, 32, 3), 3)
