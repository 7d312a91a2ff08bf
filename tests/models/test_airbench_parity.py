"""airbench94 parity pieces of ``model.whitening`` (issue 25 item 5): ``eps_scale`` (eps on unit-variance pixels, as airbench
states it) and ``bias_epochs`` (the whitening bias frozen after N epochs). ``train.ema``'s lookahead is in tests/run/test_ema.py."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.conftest import tiny_config
from tests.models.test_resnet import second_moment, smooth_images
from trainer.models.whitening import PatchWhitening, image_patches, schedule_bias_freeze


@pytest.mark.parametrize(
    "override, says",
    [
        ("model.whitening={eps_scale: pixels}", "eps_scale"),
        ("model.whitening={eps_scale: 1}", "eps_scale"),
        ("model.whitening={bias_epochs: -1}", "bias_epochs"),
        ("model.whitening={bias_epochs: 1.5}", "bias_epochs"),
        ("model.whitening={bias_epochs: true}", "bias_epochs"),
        ("model.whitening={bias_epochs: 1000000}", "bias_epochs"),
        ("model.whitening={bias_epochs: '3'}", "bias_epochs"),
    ],
)
def test_bad_parity_keys_exit_2_naming_the_key(cli, write_config, mnist_npz, override, says):
    config = tiny_config(mnist_npz)
    config["model"] = {"type": "resnet", "variant": "airbench"}
    result = cli("validate", write_config(config), "--set", override)
    assert result.exit_code == 2, result.output
    assert f"model.whitening.{says}" in result.text and "Traceback" not in result.output


@pytest.mark.parametrize("key, value", [("eps_scale", "pixels"), ("eps_scale", None), ("bias_epochs", -1), ("bias_epochs", True), ("bias_epochs", 2.0)])
def test_a_saved_layer_config_with_a_bad_parity_value_is_refused(key, value):
    config = PatchWhitening(name="whiten").get_config()
    with pytest.raises((ValueError, TypeError), match=key):
        PatchWhitening.from_config({**config, key: value})


def test_standardized_eps_is_eps_times_the_mean_channel_variance():
    """The whitened patches' second moment is diag(l / (l + eps')) (l: the eigenvalues of the inputs' patch moment),
    with eps' = eps on the input scale and eps x the mean per-channel variance with eps_scale: standardized."""
    images = (smooth_images(50) / 127.5 - 1.0).astype(np.float32)
    variance = images.reshape(-1, 3).astype(np.float64).var(axis=0).mean()
    eigenvalues = np.linalg.eigvalsh(second_moment(keras.ops.convert_to_numpy(image_patches(images))))[::-1]
    for scale, eps in (("input", 0.01), ("standardized", 0.01 * variance)):
        layer = PatchWhitening(eps=0.01, eps_scale=scale, name=scale)
        layer.build((None, 12, 12, 3))
        layer.initialise(images)
        whitened = second_moment((keras.ops.convert_to_numpy(layer(images)) - layer.bias.numpy())[..., :12])
        np.testing.assert_allclose(np.diag(whitened), eigenvalues / (eigenvalues + eps), atol=2e-3)
    assert variance < 0.5 and np.abs(eigenvalues / (eigenvalues + 0.01) - eigenvalues / (eigenvalues + 0.01 * variance)).max() > 0.02  # told apart


def _whitening_model(bias_epochs):
    inputs = keras.Input((12, 12, 3))
    whiten = PatchWhitening(eps=1e-3, bias_epochs=bias_epochs, name="whiten")
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(whiten(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.05), loss="mse")
    return model, whiten


class _BiasAfterEachEpoch(keras.callbacks.Callback):
    def __init__(self, layer):
        super().__init__()
        self.layer, self.seen = layer, []

    def on_epoch_end(self, epoch, logs=None):  # (JAX syncs the variables at the end of an epoch)
        self.seen.append(self.layer.bias.numpy().copy())


def check_bias_freeze(steps_per_execution: int) -> None:
    """bias_epochs 1 at 2 steps an epoch: steps 1-2 train the bias; from step 3 the layer uses the bias as step 2 left it,
    although momentum and weight decay keep moving the (now unused) variable; predictions use the frozen one."""
    model, whiten = _whitening_model(bias_epochs=1)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.05), loss="mse", steps_per_execution=steps_per_execution)
    images = (smooth_images(16) / 127.5 - 1.0).astype(np.float32)
    target = np.linspace(-1, 1, 16).astype(np.float32)[:, None]
    schedule_bias_freeze(model, steps_per_epoch=2)
    assert float(whiten.freeze_step.numpy()) == 2.0
    seen = _BiasAfterEachEpoch(whiten)
    model.fit(images, target, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[seen])
    assert float(whiten.steps.numpy()) == 4.0
    bias_at_freeze = seen.seen[0]  # after epoch 1 = after step 2
    assert np.abs(bias_at_freeze).max() > 1e-4  # epoch 1 trained it
    np.testing.assert_array_equal(whiten.frozen_bias.numpy(), bias_at_freeze)
    assert not np.allclose(whiten.bias.numpy(), bias_at_freeze)  # the optimizer still moves the variable ...
    inputs = images[:4]
    no_bias = keras.ops.convert_to_numpy(keras.ops.conv(inputs, whiten.kernel.numpy(), padding="valid"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(whiten(inputs)), no_bias + bias_at_freeze, atol=1e-5)  # ... unused


@pytest.mark.slow  # trains (model.fit): seconds
@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_the_bias_is_frozen_after_bias_epochs(steps_per_execution):
    check_bias_freeze(steps_per_execution)


@pytest.mark.slow
def test_the_bias_is_frozen_after_bias_epochs_on_jax(subprocess_env):
    import subprocess
    import sys
    from pathlib import Path

    script = "from tests.models.test_airbench_parity import check_bias_freeze as c; c(1); c(2); print('FROZEN OK')"
    done = subprocess.run([sys.executable, "-c", script], env={**subprocess_env, "KERAS_BACKEND": "jax"}, capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0 and "FROZEN OK" in done.stdout, done.stderr[-3000:]


@pytest.mark.slow  # trains (model.fit): seconds
def test_without_a_schedule_or_bias_epochs_the_bias_trains_on():
    model, whiten = _whitening_model(bias_epochs=2)  # never scheduled: freeze_step stays -1
    images = (smooth_images(16) / 127.5 - 1.0).astype(np.float32)
    model.fit(images, np.ones((16, 1), np.float32), batch_size=8, epochs=2, verbose=0)
    inputs = images[:4]
    no_bias = keras.ops.convert_to_numpy(keras.ops.conv(inputs, whiten.kernel.numpy(), padding="valid"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(whiten(inputs)), no_bias + whiten.bias.numpy(), atol=1e-5)
    plain, layer = _whitening_model(bias_epochs=None)
    assert len(layer.weights) == 3  # kernel, bias, initialised: models saved before the option load as before


@pytest.mark.slow  # trains (model.fit): seconds
def test_bias_epochs_zero_never_trains_the_bias():
    model, whiten = _whitening_model(bias_epochs=0)
    schedule_bias_freeze(model, steps_per_epoch=2)
    images = (smooth_images(16) / 127.5 - 1.0).astype(np.float32)
    model.fit(images, np.ones((16, 1), np.float32), batch_size=8, epochs=1, verbose=0)
    assert not whiten.frozen_bias.numpy().any()
