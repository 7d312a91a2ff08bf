"""data.augment: training batches only, seeded, per-image crops; eval sees the plain images."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import tiny_config
from trainer.config import load_config
from trainer.run.rundir import read_history

AUGMENT = {"flip": "horizontal", "crop": 2, "rotation": 0.05, "zoom": 0.1, "translate": 0.1, "contrast": 0.1}


def cnn_config(data_path, augment=None, **sections):
    config = tiny_config(data_path, **sections)
    config["data"]["augment"] = augment or AUGMENT
    config["model"] = {"type": "cnn", "blocks": [4], "head": {"hidden_units": [8], "dropout": 0.0}}
    return config


# --------------------------------------------------------------------------- refusals (fast)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.augment={flip: diagonal}", "data.augment.flip"),
        ("data.augment={crop: -1}", "data.augment.crop"),
        ("data.augment={rotation: 2}", "data.augment.rotation"),
        ("data.augment={zoom: 1.0}", "data.augment.zoom"),
        ("data.augment={shear: 0.1}", "unknown key 'shear'"),
    ],
)
def test_bad_augment_settings_are_refused_naming_the_key(cli, write_config, mnist_npz, override, expected):
    result = cli("validate", write_config(cnn_config(mnist_npz)), "--set", override)
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split()) and "Traceback" not in result.output


def test_an_all_default_augment_section_changes_nothing():
    assert not load_config(None, ["data.augment={}"]).data.augment.active
    assert load_config(None, ["data.augment={crop: 4}"]).data.augment.active


# --------------------------------------------------------------------------- the pipeline side


def batches(augment: dict, seed: int, images: np.ndarray, epochs: int = 1):
    import tensorflow as tf

    from trainer.config.schema import AugmentConfig
    from trainer.data.augment import augment_dataset

    labels = np.arange(len(images))
    dataset = augment_dataset(tf.data.Dataset.from_tensor_slices((images, labels)).batch(4), AugmentConfig(**augment), seed)
    return [(x.numpy(), y.numpy()) for _ in range(epochs) for x, y in dataset]


@pytest.mark.slow
def test_crop_pads_and_cuts_back_each_image_at_its_own_place():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, size=(8, 10, 12, 3)).astype(np.uint8)  # no zeros: padding is recognisable
    out = [x for x, _ in batches({"crop": 3}, seed=1, images=images)]
    out = np.concatenate(out)
    assert out.shape == images.shape
    padded = np.pad(images, ((0, 0), (3, 3), (3, 3), (0, 0)))
    offsets = []
    for image, original in zip(out, padded):
        matches = [(dy, dx) for dy in range(7) for dx in range(7) if np.array_equal(original[dy : dy + 10, dx : dx + 12], image)]
        assert matches, "every output is a window of the padded image"
        offsets.append(matches[0])
    assert len(set(offsets)) > 2  # places differ within a batch (Keras's RandomCrop draws one per batch)


@pytest.mark.slow
def test_same_seed_same_batches_other_seed_other_batches_labels_untouched():
    images = np.random.default_rng(1).integers(0, 256, size=(8, 16, 16)).astype(np.uint8)  # greyscale, no channel axis
    first, again, other = (batches(AUGMENT, seed, images, epochs=2) for seed in (5, 5, 6))
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, np.arange(len(y1)) + (y1[0] // 4) * 4)
    assert x1.shape == (4, 16, 16)
    assert not np.array_equal(first[0][0], other[0][0])
    assert not np.array_equal(first[0][0], first[2][0])  # epoch 2 draws new changes


# --------------------------------------------------------------------------- runs


@pytest.mark.slow
def test_augmented_runs_repeat_with_the_same_seed_and_eval_sees_plain_images(cli, write_config, mnist_npz, tmp_path):
    config = write_config(cnn_config(mnist_npz, train={"epochs": 2, "batch_size": 64}))
    histories = []
    for name in ("a", "b"):
        result = cli("run", config, "--run-dir", tmp_path / name)
        assert result.exit_code == 0, result.output
        histories.append([{k: v for k, v in row.items() if k not in ("epoch_seconds", "examples_per_second")}
                          for row in read_history(tmp_path / name / "history.csv")])
    assert histories[0] == histories[1]
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    evaluated = cli("eval", tmp_path / "a")
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((tmp_path / "a" / "eval-test.json").read_text())
    assert report["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    assert report["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-5)
    assert metrics["validation"]["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-5)  # validation: test, unaugmented


@pytest.mark.slow
def test_augmentation_with_a_frozen_backbone_turns_the_feature_cache_off(cli, write_config, mnist_npz, tmp_path):
    config = cnn_config(mnist_npz, augment={"flip": "horizontal"}, train={"epochs": 1, "batch_size": 8, "steps_per_epoch": 1})
    config["model"] = {"type": "backbone_head", "backbone": "vgg16", "weights": "none", "head": {"hidden_units": [4]}}
    result = cli("run", write_config(config), "--run-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "data.augment changes the images every epoch" in text and "computed once" not in text


# --------------------------------------------------------------------------- (seed, epoch, position): exact resume, any backend


def test_each_example_draws_from_seed_epoch_and_position_only():
    from trainer.config.schema import AugmentConfig
    from trainer.data.augment import augment_batch

    augment = AugmentConfig(**AUGMENT)
    images = np.random.default_rng(2).integers(0, 256, size=(6, 12, 12, 3)).astype(np.uint8)
    whole = augment_batch(images, augment, seed=3, epoch=4, positions=np.arange(10, 16))
    # the same examples at the same positions, cut into other batches: the same pixels
    halves = np.concatenate([augment_batch(images[:2], augment, 3, 4, np.arange(10, 12)), augment_batch(images[2:], augment, 3, 4, np.arange(12, 16))])
    np.testing.assert_array_equal(whole, halves)
    assert whole.dtype == np.float32 and whole.shape == images.shape
    assert not np.array_equal(whole, augment_batch(images, augment, 3, 5, np.arange(10, 16)))  # another epoch
    assert not np.array_equal(whole, augment_batch(images, augment, 4, 4, np.arange(10, 16)))  # another seed
    assert not np.array_equal(whole, augment_batch(images, augment, 3, 4, np.arange(11, 17)))  # other positions


@pytest.mark.parametrize("flip, axis", [("horizontal", 2), ("vertical", 1)])
def test_a_flip_is_an_exact_mirror_and_about_half_are_flipped(flip, axis):
    from trainer.config.schema import AugmentConfig
    from trainer.data.augment import augment_batch

    images = np.random.default_rng(3).integers(0, 256, size=(200, 5, 7, 3)).astype(np.uint8)
    out = augment_batch(images, AugmentConfig(flip=flip), seed=0, epoch=0, positions=np.arange(200))
    mirrored = [np.array_equal(o, np.flip(i, axis - 1)) for o, i in zip(out, images)]
    same = [np.array_equal(o, i) for o, i in zip(out, images)]
    assert all(m or s for m, s in zip(mirrored, same))
    assert 60 < sum(mirrored) < 140


def test_rotation_zoom_translate_contrast_stay_in_range_and_change_pixels():
    from trainer.config.schema import AugmentConfig
    from trainer.data.augment import augment_batch

    images = np.random.default_rng(4).integers(0, 256, size=(16, 20, 20)).astype(np.uint8)  # greyscale
    for setting in ({"rotation": 0.1}, {"zoom": 0.3}, {"translate": 0.2}, {"contrast": 0.5}):
        out = augment_batch(images, AugmentConfig(**setting), seed=1, epoch=0, positions=np.arange(16))
        assert out.shape == images.shape and out.min() >= 0 and out.max() <= 255, setting
        assert np.mean(out != images) > 0.3, setting


@pytest.mark.slow
def test_augmentation_runs_without_tensorflow(tmp_path):
    """augment_batch is NumPy: with TensorFlow made unimportable it still runs (the backend-neutral data path calls it)."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    code = (
        "import sys; sys.modules['tensorflow'] = None; import numpy as np\n"
        "from trainer.config.schema import AugmentConfig; from trainer.data.augment import augment_batch\n"
        "out = augment_batch(np.zeros((2, 8, 8, 3), np.uint8), AugmentConfig(flip='horizontal', crop=2, rotation=0.1, contrast=0.2), 0, 1, np.arange(2))\n"
        "print(out.shape, 'tensorflow' in sys.modules and sys.modules['tensorflow'] is not None)"
    )
    done = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(2, 8, 8, 3) False"


@pytest.mark.slow
def test_the_pipeline_augments_epoch_n_the_same_whatever_ran_before():
    """With the pipeline's epoch variable: epoch 2's batches equal whether epochs 0 and 1 were iterated first or not (a resume)."""
    import tensorflow as tf

    from trainer.config.schema import AugmentConfig
    from trainer.data.augment import augment_dataset
    from trainer.data.pipeline import make_dataset

    images = np.random.default_rng(5).integers(0, 256, size=(10, 8, 8, 3)).astype(np.uint8)

    def epoch_batches(epochs):
        variable = tf.Variable(0, dtype=tf.int64)
        dataset = make_dataset(images, np.arange(10), batch_size=4, encoding="sparse", num_classes=10, shuffle=True, seed=1, epoch_variable=variable)
        dataset = augment_dataset(dataset, AugmentConfig(**AUGMENT), seed=1)
        seen = []
        for epoch in epochs:
            variable.assign(epoch)
            seen.append([x.numpy() for x, _ in dataset])
        return seen

    uninterrupted, resumed = epoch_batches([0, 1, 2]), epoch_batches([2])
    for a, b in zip(uninterrupted[2], resumed[0]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(uninterrupted[0][0], uninterrupted[1][0])


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(0, 4), st.integers(1, 9), st.integers(1, 9)).flatmap(
        lambda s: st.sampled_from([s, (*s, 1), (*s, 3)])
    ),
    setting=st.fixed_dictionaries({
        "flip": st.sampled_from(["none", "horizontal", "vertical", "horizontal_and_vertical"]), "crop": st.integers(0, 12),
        "rotation": st.floats(0, 1), "zoom": st.floats(0, 0.999), "translate": st.floats(0, 0.999), "contrast": st.floats(0, 1),
    }),
    seed=st.integers(0, 2**32 - 1), epoch=st.integers(0, 10**6), start=st.integers(0, 2**40),
)
def test_any_batch_and_setting_keeps_shape_and_range(shape, setting, seed, epoch, start):
    from trainer.config.schema import AugmentConfig
    from trainer.data.augment import augment_batch

    images = np.random.default_rng(seed).integers(0, 256, size=shape).astype(np.uint8)
    out = augment_batch(images, AugmentConfig(**setting), seed, epoch, np.arange(start, start + shape[0]))
    assert out.shape == images.shape and out.dtype == np.float32
    assert not out.size or (out.min() >= 0 and out.max() <= 255 and np.isfinite(out).all())
