"""data.augment's recipes: crop_padding reflect, random_erasing, rand_augment, mixup and cutmix (issue 21 item 4)."""
from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tests.conftest import tiny_config
from trainer.config import load_config
from trainer.config.schema import AugmentConfig
from trainer.data.augment import SLOTS, augment_batch, augment_examples, example_uniforms, random_erasing, random_pad_crop
from trainer.data import mixing, rand_augment as ra

needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
RECIPE = {
    "flip": "horizontal", "crop": 2, "crop_padding": "reflect", "random_erasing": 0.5,
    "rand_augment": {"magnitude": 9, "layers": 2}, "mixup": 0.2, "cutmix": 1.0,
}
# Every change the training step applies (trainer.data.device_augment): RECIPE's rand_augment keeps it on the host.
DEVICE_RECIPE = {**{k: v for k, v in RECIPE.items() if k != "rand_augment"}, "flip": "alternating", "rotation": 0.05, "contrast": 0.2}


def draws(**values):
    """One example's draws, every slot 0.5 unless given."""
    u = np.full((1, len(SLOTS)), 0.5)
    for name, value in values.items():
        u[0, SLOTS[name]] = value
    return u


# --------------------------------------------------------------------------- hand-computed values (fast)


def test_reflect_padding_of_a_known_4x4_image_at_the_top_left_offset():
    image = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1)
    reflect = random_pad_crop(image, 2, np.array([0.0]), np.array([0.0]), "reflect")[0, :, :, 0]
    # rows/cols -2, -1, 0, 1 of the padded image are 2, 1, 0, 1 of the image (c b | a b c d: the edge not repeated, as PyTorch pads)
    assert reflect.tolist() == [[10, 9, 8, 9], [6, 5, 4, 5], [2, 1, 0, 1], [6, 5, 4, 5]]
    zeros = random_pad_crop(image, 2, np.array([0.0]), np.array([0.0]))[0, :, :, 0]
    assert zeros.tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 4, 5]]
    bottom_right = random_pad_crop(image, 2, np.array([0.99]), np.array([0.99]), "reflect")[0, :, :, 0]
    assert bottom_right.tolist() == [[10, 11, 10, 9], [14, 15, 14, 13], [10, 11, 10, 9], [6, 7, 6, 5]]


def test_erasing_fills_the_drawn_rectangle_with_the_image_mean_and_nothing_else():
    image = np.random.default_rng(0).integers(0, 256, size=(1, 10, 10, 3)).astype(np.float32)
    # area 0.33 * 100 = 33, aspect sqrt(0.3 * 3.3) = 0.995: a 6x6 box; top 0, left int(0.999 * 5) = 4
    u = draws(erase=0.0, erase_area=1.0 - 1e-12, erase_aspect=0.5, erase_y=0.0, erase_x=0.999)
    out = random_erasing(image, 1.0, u)
    mean = image.mean(axis=(1, 2))[0]
    np.testing.assert_allclose(out[0, :6, 4:], np.broadcast_to(mean, (6, 6, 3)), rtol=1e-6)
    keep = np.ones((10, 10), bool)
    keep[:6, 4:] = False
    np.testing.assert_array_equal(out[0][keep], image[0][keep])
    np.testing.assert_array_equal(random_erasing(image, 0.5, draws(erase=0.6)), image)  # drawn above P: untouched


def test_mixup_of_two_known_images_and_labels_is_the_hand_value(monkeypatch):
    monkeypatch.setattr(mixing, "beta_draw", lambda alpha, u: 0.25)
    images = np.stack([np.full((2, 2, 1), 100.0), np.full((2, 2, 1), 20.0)]).astype(np.float32)
    targets = np.eye(3, dtype=np.float32)[[0, 1]]
    out, mixed = mixing.mix_batch(images, targets, AugmentConfig(mixup=0.2), draws()[0], SLOTS)
    np.testing.assert_allclose(out[0], 40.0)  # 0.25 * 100 + 0.75 * 20
    np.testing.assert_allclose(out[1], 80.0)  # 0.25 * 20 + 0.75 * 100
    np.testing.assert_allclose(mixed, [[0.25, 0.75, 0.0], [0.75, 0.25, 0.0]])


def test_cutmix_label_weight_is_the_area_kept(monkeypatch):
    monkeypatch.setattr(mixing, "beta_draw", lambda alpha, u: 0.75)
    images = np.stack([np.full((8, 8, 1), 100.0), np.full((8, 8, 1), 20.0)]).astype(np.float32)
    targets = np.eye(2, dtype=np.float32)
    # sides sqrt(0.25) * 8 = 4; centre (4, 0): rows 2..6, columns -2..2 clipped to 0..2: 8 of 64 pixels pasted
    out, mixed = mixing.mix_batch(images, targets, AugmentConfig(cutmix=1.0), draws(cutmix_y=0.5, cutmix_x=0.0)[0], SLOTS)
    assert (out[0] == 20.0).sum() == 8 and (out[0, 2:6, 0:2] == 20.0).all()
    np.testing.assert_allclose(mixed[0], [1 - 8 / 64, 8 / 64])


@pytest.mark.parametrize("epoch", range(6))
def test_cutmix_label_weight_matches_the_pixels_pasted_for_real_draws(epoch):
    images = np.stack([np.zeros((16, 16, 3)), np.full((16, 16, 3), 255.0)]).astype(np.uint8)
    out, mixed = augment_examples(images, np.eye(2, dtype=np.float32), AugmentConfig(cutmix=1.0), 3, epoch, np.arange(2))
    pasted = (out[0, :, :, 0] == 255).mean()
    assert mixed[0, 1] == pytest.approx(pasted) and mixed[0].sum() == pytest.approx(1.0)


def test_solarize_posterize_and_the_magnitude_ends_are_exact():
    pixels = np.array([0, 15, 127, 128, 243, 255], np.uint8).reshape(1, 1, 6, 1)
    assert ra.solarize(pixels, 128).ravel().tolist() == [0, 15, 127, 127, 12, 0]
    assert ra.posterize(pixels, 4).ravel().tolist() == [0, 0, 112, 128, 240, 240]
    assert ra.apply_op("solarize", pixels, 10, np.ones(1)).ravel().tolist() == (255 - pixels).ravel().tolist()  # invert
    assert ra.autocontrast(np.array([50, 100, 150], np.uint8).reshape(1, 1, 3, 1)).ravel().tolist() == [0, 128, 255]


@pytest.mark.parametrize("op", ra.OPS)
def test_magnitude_zero_is_the_identity_for_every_op(op):
    images = np.random.default_rng(1).integers(0, 256, size=(3, 9, 7, 3)).astype(np.uint8)
    if op in ("autocontrast", "equalize"):  # these have no magnitude
        return
    np.testing.assert_array_equal(ra.apply_op(op, images, 0, np.array([1.0, -1.0, 1.0])), images)


@pytest.mark.parametrize(("op", "enhancer", "tolerance"), [
    ("autocontrast", None, 1), ("equalize", None, 0), ("color", "Color", 1), ("contrast", "Contrast", 1),
    ("brightness", "Brightness", 1), ("sharpness", "Sharpness", 1),
])
def test_the_ops_match_pil(op, enhancer, tolerance):
    from PIL import Image, ImageEnhance, ImageOps

    images = np.random.default_rng(2).integers(0, 200, size=(2, 12, 10, 3)).astype(np.uint8)
    got = ra.apply_op(op, images, 5, np.array([1.0, -1.0]))
    for image, out, factor in zip(images, got, (1.45, 0.55)):
        pil = Image.fromarray(image)
        want = getattr(ImageEnhance, enhancer)(pil).enhance(factor) if enhancer else getattr(ImageOps, op)(pil)
        assert np.abs(out.astype(int) - np.asarray(want).astype(int)).max() <= tolerance, op


def test_a_shift_moves_pixels_exactly_and_fills_with_grey():
    image = np.arange(25, dtype=np.uint8).reshape(1, 5, 5, 1)
    shifted = ra.affine_nearest(image, np.eye(2)[None], np.array([[0.0, 2.0]]))[0, :, :, 0]
    assert shifted[:, :3].tolist() == image[0, :, 2:, 0].tolist() and (shifted[:, 3:] == ra.FILL).all()


# --------------------------------------------------------------------------- draws (fast)


def test_same_seed_epoch_position_same_output_other_epoch_other_output():
    images = np.random.default_rng(3).integers(0, 256, size=(8, 16, 16, 3)).astype(np.uint8)
    targets = np.eye(4, dtype=np.float32)[np.arange(8) % 4]
    augment = AugmentConfig.model_validate(RECIPE)
    a = augment_examples(images, targets, augment, 1, 2, np.arange(8))
    b = augment_examples(images, targets, augment, 1, 2, np.arange(8))
    c = augment_examples(images, targets, augment, 1, 3, np.arange(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_the_first_slots_keep_their_numbers():
    """Runs trained before the new slots drew these numbers: the later slots must not renumber them."""
    u = example_uniforms(0, 0, np.arange(2))
    assert u.shape == (2, len(SLOTS))
    np.testing.assert_array_equal(u[:, :9], example_uniforms(0, 0, np.arange(2), slots=9))
    assert u[0, SLOTS["flip_h"]] == pytest.approx(example_uniforms(0, 0, np.arange(1), slots=1)[0, 0])


# --------------------------------------------------------------------------- hostile shapes (fast)


@pytest.mark.parametrize("shape", [(1, 1, 1, 3), (1, 1, 1), (3, 1, 1, 1), (1, 5, 3, 3), (2, 2, 2)])
def test_tiny_and_greyscale_images_and_a_batch_of_one(shape):
    images = np.full(shape, 255, np.uint8)
    augment = AugmentConfig.model_validate({**RECIPE, "crop": 0})
    out, mixed = augment_examples(images, np.eye(3, dtype=np.float32)[np.zeros(shape[0], int)], augment, 0, 0, np.arange(shape[0]))
    assert out.shape == shape and out.min() >= 0 and out.max() <= 255
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=1e-6)
    if shape[0] == 1:  # its own partner: the label stays whole
        np.testing.assert_allclose(mixed, [[1.0, 0.0, 0.0]])


def test_bright_pixels_saturate_instead_of_wrapping_around():
    images = np.full((2, 4, 4, 3), 250, np.uint8)
    assert ra.apply_op("brightness", images, 10, np.ones(2)).min() == 255
    assert ra.apply_op("contrast", images, 10, np.ones(2)).min() >= 249
    assert (ra.apply_op("brightness", images, 10, -np.ones(2)) == 25).all()


@pytest.mark.parametrize("alpha", [1e-3, 1.0, 1000.0])
def test_any_alpha_gives_a_lambda_in_zero_one(alpha):
    values = [mixing.beta_draw(alpha, u) for u in np.linspace(0, 0.999, 20)]
    assert all(0.0 <= v <= 1.0 and math.isfinite(v) for v in values)
    if alpha == 1000.0:
        assert all(abs(v - 0.5) < 0.05 for v in values)


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 5), st.integers(1, 9), st.integers(1, 9), st.sampled_from([1, 3])),
    magnitude=st.floats(0, 10), layers=st.integers(1, 8), erase=st.floats(0, 1), mixup=st.floats(0, 1000), cutmix=st.floats(0, 1000),
    epoch=st.integers(0, 2**40), start=st.integers(0, 2**40),
)
def test_any_batch_and_recipe_keeps_shape_range_and_label_mass(shape, magnitude, layers, erase, mixup, cutmix, epoch, start):
    images = np.random.default_rng(epoch % 1000).integers(0, 256, size=shape).astype(np.uint8)
    augment = AugmentConfig.model_validate(
        {"rand_augment": {"magnitude": magnitude, "layers": layers}, "random_erasing": erase, "mixup": mixup, "cutmix": cutmix, "crop_padding": "reflect"}
    )
    targets = np.eye(4, dtype=np.float32)[np.arange(shape[0]) % 4]
    out, mixed = augment_examples(images, targets, augment, 7, epoch, np.arange(start, start + shape[0]))
    assert out.shape == shape and out.dtype == np.float32 and out.min() >= 0 and out.max() <= 255
    assert np.isfinite(mixed).all()
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=1e-5)


# --------------------------------------------------------------------------- config and plan (fast)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.augment={mixup: -1}", "data.augment.mixup"),
        ("data.augment={cutmix: .nan}", "data.augment.cutmix"),
        ("data.augment={mixup: 1.0e9}", "data.augment.mixup"),
        ("data.augment={random_erasing: 1.5}", "data.augment.random_erasing"),
        ("data.augment={rand_augment: {magnitude: 99}}", "data.augment.rand_augment.magnitude"),
        ("data.augment={rand_augment: {layers: 0}}", "data.augment.rand_augment.layers"),
        ("data.augment={rand_augment: {layers: 9}}", "data.augment.rand_augment.layers"),
        ("data.augment={rand_augment: {n: 2}}", "unknown key 'n'"),
        ("data.augment={crop: 2, crop_padding: wrap}", "data.augment.crop_padding"),
        ("data.augment={cut_mix: 1.0}", "unknown key 'cut_mix'"),
    ],
)
def test_bad_recipe_values_exit_2_naming_the_key(cli, write_config, mnist_npz, override, expected):
    result = cli("validate", write_config(tiny_config(mnist_npz)), "--set", override)
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split()) and "Traceback" not in result.output


def test_mixing_trains_on_one_hot_targets_with_the_categorical_twin_loss():
    from trainer.config.checks import plan_run

    plan = plan_run(load_config(None, ["data.augment={mixup: 0.2}", "loss={name: sparse_categorical_crossentropy, label_smoothing: 0.1}"]))
    assert (plan.encoding, plan.loss_name, plan.loss_params["label_smoothing"]) == ("onehot", "categorical_crossentropy", 0.1)
    assert any("categorical_crossentropy" in notice for notice in plan.notices)
    plain = plan_run(load_config(None, ["data.augment={rand_augment: {magnitude: 5}}"]))
    assert (plain.encoding, plain.loss_name) == ("sparse", "sparse_categorical_crossentropy")
    onehot = plan_run(load_config(None, ["data.augment={cutmix: 1.0}", "loss=categorical_crossentropy"]))
    assert (onehot.encoding, onehot.loss_name) == ("onehot", "categorical_crossentropy")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["metrics=[sparse_categorical_accuracy]"], "metrics.0: sparse_categorical_accuracy reads integer labels"),
        (["loss={name: sparse_categorical_crossentropy, ignore_class: 0}"], "loss.ignore_class"),
        (["loss=my_losses:Loss", "labels.encoding=sparse"], "labels.encoding"),
    ],
)
def test_mixing_refuses_what_needs_integer_labels(cli, write_config, mnist_npz, overrides, expected):
    args = [a for o in ["data.augment={mixup: 0.2}", *overrides] for a in ("--set", o)]
    result = cli("validate", write_config(tiny_config(mnist_npz)), *args)
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split()) and "Traceback" not in result.output


# --------------------------------------------------------------------------- runs (slow)


def _history(run_dir):
    from trainer.run.rundir import read_history

    return [{k: v for k, v in row.items() if k not in ("epoch_seconds", "examples_per_second")} for row in read_history(run_dir / "history.csv")]


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "categorical_crossentropy"])
def test_a_mixup_cutmix_run_trains_on_sparse_and_one_hot_labels_and_eval_sees_plain_images(cli, write_config, mnist_npz, tmp_path, loss):
    config = tiny_config(mnist_npz, loss={"name": loss, "label_smoothing": 0.1}, train={"epochs": 2, "batch_size": 32})
    config["data"]["augment"] = RECIPE
    path, run_dir = write_config(config), tmp_path / "run"
    result = cli("run", path, "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    rows = _history(run_dir)
    assert len(rows) == 2 and all(math.isfinite(row["loss"]) and math.isfinite(row["val_loss"]) for row in rows)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    evaluated = cli("eval", run_dir)
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((run_dir / "eval-test.json").read_text())
    assert report["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-5)
    assert report["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    assert metrics["validation"]["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-5)  # validation: test, unmixed


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [RECIPE, DEVICE_RECIPE], ids=["host", "device"])
def test_a_tensorflow_run_with_the_recipes_resumed_equals_the_uninterrupted_one(cli, write_config, mnist_npz, tmp_path, recipe):
    # One pass an epoch here; train.steps_per_epoch shorter than a pass: tests/data/test_tf_stream.py.
    config = tiny_config(mnist_npz, train={"epochs": 3, "batch_size": 32})
    config["data"]["augment"] = recipe
    path = write_config(config)
    histories = []
    for run_dir, first_epochs in ((tmp_path / "whole", 3), (tmp_path / "resumed", 2)):
        assert cli("run", path, "--run-dir", run_dir, "--set", f"train.epochs={first_epochs}").exit_code == 0
        if first_epochs < 3:
            result = cli("run", path, "--run-dir", run_dir, "--resume")
            assert result.exit_code == 0, result.output
        histories.append(_history(run_dir))
    assert len(histories[0]) == 3
    for a, b in zip(*histories):
        assert (a["loss"], a["val_loss"]) == (pytest.approx(b["loss"], rel=1e-5), pytest.approx(b["val_loss"], rel=1e-5))


@needs_jax
@pytest.mark.slow
@pytest.mark.parametrize("recipe", [RECIPE, DEVICE_RECIPE], ids=["host", "device"])
def test_a_jax_run_with_the_recipes_without_tensorflow_resumed_equals_the_uninterrupted_one(tmp_path, mnist_npz, write_config, recipe):
    from tests.project.test_backend_neutral import _trainer

    config = tiny_config(mnist_npz, train={"epochs": 3, "batch_size": 32, "steps_per_epoch": 10})
    config["data"]["augment"] = recipe
    path = write_config(config)
    histories = []
    for run_dir, first_epochs in ((tmp_path / "whole", 3), (tmp_path / "resumed", 2)):
        done = _trainer(["run", path, "--run-dir", run_dir, "--set", f"train.epochs={first_epochs}"], tmp_path)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        assert "TENSORFLOW_LOADED False" in done.stderr
        if first_epochs < 3:
            done = _trainer(["run", path, "--run-dir", run_dir, "--resume"], tmp_path)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        histories.append(_history(run_dir))
    assert len(histories[0]) == 3 and all(math.isfinite(row["loss"]) for row in histories[0])
    assert histories[0] == histories[1]
