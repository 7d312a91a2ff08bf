"""model.type: resnet: airbench94, ResNet-9, ResNet-20/56: sizes, options, the whitening layer, runs, reloads."""
from __future__ import annotations

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.conftest import tiny_config
from tests.datagen import write_cifar10_dir
from trainer.config import load_config
from trainer.errors import ConfigError
from trainer.models import build_model
from trainer.models.whitening import PatchWhitening, image_patches, whitening_filters


def resnet(*overrides: str):
    return load_config(None, ["model.type=resnet", *overrides]).model


def trainable(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def smooth_images(n: int, seed: int = 0, size: int = 12) -> np.ndarray:
    """0..255 colour images whose neighbouring pixels and channels are strongly correlated (patches far from white)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(n, size + 1, size + 1, 1))
    smooth = (noise[:, 1:, 1:] + noise[:, :-1, 1:] + noise[:, 1:, :-1] + noise[:, :-1, :-1]) / 4  # neighbours share 3 of 4 terms
    colour = smooth * np.array([1.0, 0.8, 0.6]) + 0.3 * rng.normal(size=(n, size, size, 3))
    return np.clip(127.5 + 80 * colour, 0, 255).astype(np.float32)


# --------------------------------------------------------------------------- config refusals (fast)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.variant=resnet18", "model.variant"),
        ("model.widths=[64, 128]", "variant resnet9 has 4 widths"),
        ("model.widths=[64, 0, 256, 512]", "model.widths.1"),
        ("model.widths=[64, 128, 256, 4097]", "model.widths.3"),
        ("model.whitening={eps: 0.001}", "only variant airbench has a whitening layer"),
        ("model.activation=gelo", "did you mean 'gelu'"),
        ("model.batch_norm_momentum=1.0", "model.batch_norm_momentum"),
        ("model.logit_scale=0", "model.logit_scale"),
        ("model.blocks=[8]", "unknown key 'blocks'"),
    ],
)
def test_bad_resnet_settings_are_refused_naming_the_key(cli, write_config, mnist_npz, override, expected):
    config = tiny_config(mnist_npz)
    config["model"] = {"type": "resnet"}
    result = cli("validate", write_config(config), "--set", override)
    assert result.exit_code == 2, result.output
    assert expected in result.text and "Traceback" not in result.output


@pytest.mark.parametrize("override", ["model.whitening={sample: 0}", "model.whitening={eps: 0}", "model.whitening={size: 3}"])
def test_bad_whitening_settings_are_refused(cli, write_config, mnist_npz, override):
    config = tiny_config(mnist_npz)
    config["model"] = {"type": "resnet", "variant": "airbench"}
    result = cli("validate", write_config(config), "--set", override)
    assert result.exit_code == 2 and "model.whitening" in result.text and "Traceback" not in result.output


def test_unset_options_take_the_variant_values():
    airbench = resnet("model.variant=airbench")
    assert airbench.resolved("widths") == [64, 256, 256] and airbench.resolved("activation") == "gelu"
    assert airbench.resolved("batch_norm_momentum") == 0.4 and airbench.resolved("batch_norm_scale") is False
    assert airbench.resolved("identity_init") is True and airbench.resolved("logit_scale") == pytest.approx(1 / 9)
    assert airbench.resolved("whitening").eps == 5e-4 and airbench.resolved("whitening").sample == 5000
    chosen = resnet("model.variant=resnet9", "model.logit_scale=0.5", "model.batch_norm_scale=false")
    assert chosen.resolved("logit_scale") == 0.5 and chosen.resolved("batch_norm_scale") is False
    assert chosen.resolved("whitening") is None and chosen.resolved("widths") == [64, 128, 256, 512]


# --------------------------------------------------------------------------- the networks (fast: built, not trained)

# Trainable parameters, counted by hand for 32x32x3 images and 10 classes (convs have no bias; BN: beta, and gamma when scaled):
AIRBENCH = (
    24  # whitening bias (its 2x2x3x24 kernel is frozen)
    + 3 * 3 * (24 * 64 + 64 * 64) + 2 * 64  # group 1: two convs, two BN betas
    + 3 * 3 * (64 * 256 + 256 * 256) + 2 * 256
    + 3 * 3 * (256 * 256 + 256 * 256) + 2 * 256
    + 256 * 10  # class layer, no bias
)  # 1,971,352
RESNET9 = (
    3 * 3 * (3 * 64 + 64 * 128 + 2 * 128 * 128 + 128 * 256 + 256 * 512 + 2 * 512 * 512)
    + 2 * (64 + 3 * 128 + 256 + 3 * 512)  # BN gamma and beta after every conv
    + 512 * 10
)  # 6,573,120


def basic_blocks(n: int) -> int:
    """He et al.'s CIFAR ResNet with 3 stages of n blocks, 1x1 conv + BN shortcuts where the width changes."""
    stem = 3 * 3 * 3 * 16 + 2 * 16
    total = stem
    for width_in, width in ((16, 16), (16, 32), (32, 64)):
        first = 9 * width_in * width + 9 * width * width + 4 * width + (width_in * width + 2 * width if width_in != width else 0)
        total += first + (n - 1) * (2 * 9 * width * width + 4 * width)
    return total + 64 * 10 + 10


@pytest.mark.parametrize(
    ("variant", "expected"),
    [("airbench", AIRBENCH), ("resnet9", RESNET9), ("resnet20", basic_blocks(3)), ("resnet56", basic_blocks(9))],
)
def test_parameter_counts_match_the_hand_count(variant, expected):
    model = build_model(resnet(f"model.variant={variant}"), (32, 32, 3), 10)
    assert trainable(model) == expected
    assert model.output_shape == (None, 10)


def test_hand_counts_are_the_published_sizes():
    assert AIRBENCH == 1_971_352 and RESNET9 == 6_573_120  # ~1.97M (airbench94), ~6.5M (ResNet-9)
    assert basic_blocks(3) == 272_474 and basic_blocks(9) == 855_770  # He et al.: 0.27M and 0.85M


def test_airbench_options_reach_the_layers():
    model = build_model(resnet("model.variant=airbench", "model.widths=[4, 8, 8]"), (32, 32, 3), 10)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 6 and all(n.momentum == 0.4 and n.gamma is None for n in norms)  # frozen scale: no gamma at all
    assert model.get_layer("whiten_gelu").activation.__name__ == "gelu_erf"
    x = np.linspace(-4, 4, 81).astype(np.float32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.get_layer("whiten_gelu")(x)),
                               keras.ops.convert_to_numpy(keras.activations.gelu(x, approximate=False)), atol=1e-6)
    assert model.get_layer("logit_scale").scale == pytest.approx(1 / 9)
    assert model.get_layer("classes").bias is None
    conv = model.get_layer("group2_conv1").kernel.numpy()  # 4 in, 8 out: the first 4 filters are the identity
    assert conv.shape == (3, 3, 4, 8)
    np.testing.assert_array_equal(conv[:, :, :, :4], np.pad(np.eye(4)[None, None], ((1, 1), (1, 1), (0, 0), (0, 0))))
    assert np.abs(conv[:, :, :, 4:]).sum() > 0  # the rest keep their random start


def test_options_can_be_changed_from_the_variant_defaults():
    config = resnet("model.variant=resnet9", "model.widths=[4, 8, 8, 8]", "model.identity_init=true", "model.batch_norm_momentum=0.5",
                    "model.batch_norm_scale=false", "model.activation=gelu", "model.logit_scale=1.0", "model.output=logits")
    model = build_model(config, (28, 28), 10)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(n.momentum == 0.5 and n.gamma is None for n in norms)
    assert "logit_scale" not in [layer.name for layer in model.layers] and model.layers[-1].name == "logits"
    kernel = model.get_layer("layer1_res1").kernel.numpy()
    np.testing.assert_array_equal(kernel[1, 1], np.eye(8))


@pytest.mark.parametrize(("variant", "size", "smallest"), [("airbench", 8, "9x9"), ("resnet9", 7, "8x8")])
def test_images_too_small_for_the_poolings_are_refused(variant, size, smallest):
    with pytest.raises(ConfigError, match=f"model.variant: {variant} .* use images of at least {smallest}"):
        build_model(resnet(f"model.variant={variant}"), (size, size, 3), 10)
    build_model(resnet(f"model.variant={variant}", *(["model.widths=[4, 4, 4]"] if variant == "airbench" else [])),
                (size + 1, size + 1, 3), 10)


# --------------------------------------------------------------------------- the whitening layer (fast)


def second_moment(rows: np.ndarray) -> np.ndarray:
    rows = rows.reshape(-1, rows.shape[-1]).astype(np.float64)
    return rows.T @ rows / len(rows)


def test_whitening_filters_whiten_the_patches_of_the_sample():
    images = smooth_images(200)
    model = build_model(resnet("model.variant=airbench", "model.widths=[4, 4, 4]", "model.whitening={eps: 0.0005, sample: 200}"),
                        (12, 12, 3), 10, train_images=images)
    scaled = images / 127.5 - 1.0
    before = second_moment(keras.ops.convert_to_numpy(image_patches(scaled)))
    correlation = before / np.sqrt(np.outer(np.diag(before), np.diag(before)))
    assert np.abs(correlation - np.eye(12)).max() > 0.5  # the input patches are strongly correlated
    eigenvalues = np.linalg.eigvalsh(before)[::-1]
    assert eigenvalues.min() > 50 * 5e-4
    layer = model.get_layer("whiten")
    assert float(layer.initialised.numpy()) == 1.0
    outputs = keras.ops.convert_to_numpy(layer(scaled)) - layer.bias.numpy()
    whitened = second_moment(outputs[..., :12])
    np.testing.assert_allclose(whitened, np.diag(eigenvalues / (eigenvalues + 5e-4)), atol=2e-4)  # exactly, up to float32
    np.testing.assert_allclose(whitened, np.eye(12), atol=0.02)  # so ~ the identity: every eigenvalue >> eps here
    np.testing.assert_allclose(outputs[..., 12:], -outputs[..., :12], atol=1e-5)  # then the negated filters


def test_whitening_sample_is_spread_over_the_training_set():
    images = smooth_images(40)
    images[20:] = 255 - images[20:]  # a second half unlike the first: a sample from the start alone would differ
    config = resnet("model.variant=airbench", "model.widths=[4, 4, 4]", "model.whitening={sample: 10}")
    model = build_model(config, (12, 12, 3), 10, train_images=images)
    expected = PatchWhitening(name="w")
    expected.build((None, 12, 12, 3))
    expected.initialise(images[np.linspace(0, 39, 10).astype(int)] / 127.5 - 1.0)
    np.testing.assert_allclose(model.get_layer("whiten").kernel.numpy(), expected.kernel.numpy(), atol=2e-3)  # float32 sums


def test_a_layer_never_given_a_sample_takes_the_first_training_batch_once():
    layer = PatchWhitening(eps=1e-3)
    first, second = smooth_images(16, seed=1) / 127.5 - 1, smooth_images(16, seed=2) / 127.5 - 1
    layer(first, training=False)
    assert float(layer.initialised.numpy()) == 0.0 and not layer.kernel.numpy().any()  # inference does not initialise
    layer(first, training=True)
    patches = keras.ops.convert_to_numpy(image_patches(first.astype(np.float32)))
    expected = keras.ops.convert_to_numpy(whitening_filters(second_moment(patches).astype(np.float32), 1e-3))
    np.testing.assert_allclose(layer.kernel.numpy(), expected, atol=2e-3)  # float32 sums
    kernel = layer.kernel.numpy()
    layer(second, training=True)
    np.testing.assert_array_equal(layer.kernel.numpy(), kernel)  # kept: the flag is set


# --------------------------------------------------------------------------- runs (slow)

TINY = {
    "airbench": {"variant": "airbench", "widths": [4, 8, 8]},
    "resnet9": {"variant": "resnet9", "widths": [4, 4, 8, 8]},
    "resnet20": {"variant": "resnet20", "widths": [4, 4, 8]},
}


@pytest.mark.slow
@pytest.mark.first  # long: started early, so that it does not end the suite alone
@pytest.mark.parametrize("variant", list(TINY))
def test_one_epoch_trains_evals_and_reloads_in_a_fresh_process(cli, write_config, tmp_path, subprocess_env, variant):
    data = write_cifar10_dir(tmp_path / "cifar", n_per_batch=8, n_test=20)
    config = tiny_config(data, data={"dataset": "cifar10", "path": str(data)}, train={"epochs": 1, "batch_size": 16})
    config["model"] = {"type": "resnet", **TINY[variant]}
    result = cli("run", write_config(config), "--run-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    evaluated = cli("eval", tmp_path / "r")
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((tmp_path / "r" / "eval-test.json").read_text())
    assert report["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    script = (
        "import sys, keras, numpy as np\n"
        "from trainer.models.keras_objects import trainer_objects\n"
        "from trainer.models import load_model\n"
        "plain = keras.models.load_model(sys.argv[1], custom_objects=trainer_objects())\n"
        "ours = load_model(sys.argv[1])\n"
        "x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype('float32')\n"
        "a, b = plain.predict(x, verbose=0), ours.predict(x, verbose=0)\n"
        "whiten = [l for l in plain.layers if l.name == 'whiten']\n"
        "print(float(np.abs(a - b).max()), float(a.sum(axis=1).mean()), whiten and float(whiten[0].initialised.numpy()))\n"
    )
    if variant == "airbench":  # a fresh interpreter: nothing registered but what trainer_objects() gives
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "r" / "model.h5")], env=subprocess_env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        output = done.stdout
    else:  # the same layers as airbench's: the same script in this process
        import contextlib
        import io

        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer), pytest.MonkeyPatch.context() as patch:
            patch.setattr(sys, "argv", ["-c", str(tmp_path / "r" / "model.h5")])
            exec(compile(script, "<reload>", "exec"), {})
        output = buffer.getvalue()
    difference, total, initialised = output.split()
    assert float(difference) == 0.0 and float(total) == pytest.approx(1.0, abs=1e-5)
    if variant == "airbench":  # the filters the first batch set are saved in model.h5: eval and predict need no data
        assert float(initialised) == 1.0
        import h5py  # a model file whose whitening layer carries a bad eps is refused as a damaged run file

        with h5py.File(tmp_path / "r" / "model.h5", "r+") as handle:
            handle.attrs["model_config"] = handle.attrs["model_config"].replace('"eps": 0.0005', '"eps": -1.0')
        tampered = cli("eval", tmp_path / "r")
        assert tampered.exit_code == 2 and "model.h5" in tampered.unwrapped and "cannot load the model" in tampered.text
        assert "Traceback" not in tampered.output


def test_list_models_names_every_type_and_what_each_variant_fills_in(cli):
    result = cli("list", "models")
    assert result.exit_code == 0, result.output
    text = result.unwrapped.replace("│", " ")
    text = " ".join(text.split())
    for expected in ("model.type: resnet", "model.type: cnn", "model.type: backbone_head", "variant: airbench",
                     "widths=[64, 256, 256], activation='gelu'", "batch_norm_momentum=0.4", "variant: resnet56", "logit_scale=0.125"):
        assert expected in text, expected


def test_a_run_on_images_too_small_stops_before_the_run_directory(cli, write_config, tmp_path):
    from tests.datagen import write_image_folders

    data = write_image_folders(tmp_path / "images", n_per_class=2, size=(8, 8))
    config = tiny_config(data, data={"dataset": "folder", "path": str(data), "image_size": [8, 8]})
    config["model"] = {"type": "resnet", "variant": "airbench", "widths": [4, 4, 4]}
    result = cli("run", write_config(config), "--run-dir", tmp_path / "r")
    assert result.exit_code == 2, result.output
    assert "model.variant: airbench halves the image side 3 times" in result.text and "at least 9x9" in result.text
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()


@pytest.mark.slow  # trains (two compiled steps): seconds
def test_the_first_training_batch_sets_the_filters_in_a_compiled_step_under_mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        inputs = keras.Input((12, 12, 3))
        whiten = PatchWhitening(name="whiten")
        outputs = keras.layers.Dense(2, dtype="float32")(keras.layers.GlobalAveragePooling2D()(whiten(inputs)))
        model = keras.Model(inputs, outputs)
        model.compile(optimizer="sgd", loss="mse")
        model.train_on_batch(smooth_images(8) / 127.5 - 1, np.zeros((8, 2), np.float32))  # a traced graph: both branches built
        kernel = whiten.kernel.numpy().copy()
        model.train_on_batch(smooth_images(8, seed=3) / 127.5 - 1, np.zeros((8, 2), np.float32))
        np.testing.assert_array_equal(whiten.kernel.numpy(), kernel)  # not even rounded through bfloat16
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert float(whiten.initialised.numpy()) == 1.0 and whiten.kernel.dtype == "float32"
    assert np.isfinite(whiten.kernel.numpy()).all() and np.abs(whiten.kernel.numpy()).max() > 0.1


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(eps=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.text(max_size=5), st.none(),
                     st.booleans(), st.lists(st.floats(), max_size=2)))
def test_a_saved_whitening_config_builds_only_with_a_sound_eps(eps):
    """What a model.h5 says about the layer is read back from disk: a bad eps is refused (Keras wraps the ValueError in a
    TypeError; ``load_model_file`` turns either into a RunDirError, exit 2), never accepted."""
    config = PatchWhitening(name="whiten").get_config()
    try:
        layer = PatchWhitening.from_config({**config, "eps": eps})
    except (ValueError, TypeError) as error:
        assert "eps must be a number in (0, 1]" in str(error)
    else:
        assert not isinstance(eps, bool) and 0 < layer.eps <= 1
