"""data.augment inside the training step (trainer.data.device_augment): equal to the NumPy reference, uint8 to the step.

(That the PyDataset and tf.data hand the step the same uint8 batches and params, step by step with train.steps_per_epoch,
is tests/project/test_backend_neutral.py's test_the_pydataset_gives_the_tf_data_batches_of_each_step_with_steps_per_epoch[device-*].)
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import tiny_config
from trainer.config.schema import AugmentConfig
from trainer.data.augment import PARAMS, augment_batch, augment_examples, device_params, identity_uniforms
from trainer.run.rundir import read_history

CHANGES = {
    "crop zeros": {"crop": 2},
    "crop reflect": {"crop": 3, "crop_padding": "reflect"},
    "flip horizontal": {"flip": "horizontal"},
    "flip vertical": {"flip": "vertical"},
    "flip both + crop": {"flip": "horizontal_and_vertical", "crop": 2},
    "flip alternating": {"flip": "alternating"},
    "rotation": {"rotation": 0.1},
    "zoom": {"zoom": 0.3},
    "translate": {"translate": 0.2},
    "affine + flip + crop + contrast": {"flip": "horizontal", "crop": 2, "rotation": 0.05, "zoom": 0.1, "translate": 0.1, "contrast": 0.2},
    "contrast": {"contrast": 0.5},
    "random erasing": {"random_erasing": 0.7},
    "mixup": {"mixup": 0.4},
    "cutmix": {"cutmix": 1.0},
    "everything": {"mixup": 0.2, "cutmix": 1.0, "crop": 4, "crop_padding": "reflect", "flip": "alternating", "random_erasing": 0.5, "contrast": 0.1},
}
# (batch shape, epoch): colour, greyscale without a channel axis, a batch of one
CASES = [((16, 12, 10, 3), 0), ((5, 8, 8), 1), ((1, 6, 6, 1), 4)]


def on_device(images, targets, augment, params):
    from keras import ops

    from trainer.data.device_augment import DeviceAugment

    out, mixed = DeviceAugment(augment)(ops.convert_to_tensor(images), ops.convert_to_tensor(params), ops.convert_to_tensor(targets))
    return ops.convert_to_numpy(out), ops.convert_to_numpy(mixed)


@pytest.mark.parametrize(("shape", "epoch"), CASES, ids=str)
@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_each_change_on_the_device_equals_the_numpy_reference(change, epoch, shape):
    """Same (seed, epoch, positions, indices): the same pixels (float32 rounding) and the same mixed targets."""
    rng = np.random.default_rng(epoch)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    targets = np.eye(4, dtype=np.float32)[rng.integers(0, 4, shape[0])]
    positions, indices = np.arange(7, 7 + shape[0]), rng.permutation(100)[: shape[0]]
    augment = AugmentConfig(**change)
    want, want_targets = augment_examples(images, targets, augment, 3, epoch, positions, indices)
    params = device_params(augment, 3, epoch, positions, shape[1], shape[2], indices)
    got, got_targets = on_device(images, targets, augment, params)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=0)
    np.testing.assert_allclose(got_targets, want_targets, atol=1e-6)


def test_device_params_are_a_pure_function_of_seed_epoch_and_position():
    augment = AugmentConfig(**CHANGES["everything"], rotation=0.1)
    whole = device_params(augment, 3, 4, np.arange(10, 16), 8, 8)
    assert whole.dtype == np.float32 and whole.shape == (6, len(PARAMS))
    np.testing.assert_array_equal(whole, device_params(augment, 3, 4, np.arange(10, 16), 8, 8))
    np.testing.assert_array_equal(whole[2:, : PARAMS["mix_cutmix"]], device_params(augment, 3, 4, np.arange(12, 16), 8, 8)[:, : PARAMS["mix_cutmix"]])
    assert not np.array_equal(whole, device_params(augment, 3, 5, np.arange(10, 16), 8, 8))
    assert not np.array_equal(whole, device_params(augment, 4, 4, np.arange(10, 16), 8, 8))
    assert device_params(augment, 3, 4, np.arange(0), 8, 8).shape == (0, len(PARAMS))


@pytest.mark.parametrize("epoch", [0, 1, 2, 3])
def test_the_alternating_flip_mirrors_each_image_every_other_epoch_whatever_its_place(epoch):
    """Epoch 0 flips by the image's own bit; each later epoch flips exactly the images the one before did not."""
    images = np.random.default_rng(0).integers(0, 256, (64, 4, 5, 1), dtype=np.uint8)
    augment = AugmentConfig(flip="alternating")
    order = np.random.default_rng(epoch).permutation(64)  # another order every epoch: the bit follows the image
    out = augment_batch(images[order], augment, seed=2, epoch=epoch, positions=np.arange(64), indices=order)
    flipped = np.array([np.array_equal(o, images[i][:, ::-1]) and not np.array_equal(o, images[i]) for o, i in zip(out, order)])
    own_bit = identity_uniforms(2, order)[:, 0] < 0.5
    np.testing.assert_array_equal(flipped, own_bit ^ bool(epoch % 2))
    assert 16 < flipped.sum() < 48


def test_rand_augment_and_distribution_stay_on_the_host():
    from trainer.data.device_augment import runs_on_device

    assert runs_on_device(AugmentConfig(crop=2))
    assert not runs_on_device(AugmentConfig(crop=2), "mirrored")
    assert not runs_on_device(AugmentConfig(crop=2, rand_augment={"magnitude": 5}))
    assert not runs_on_device(AugmentConfig()) and not runs_on_device(None)


def test_array_batches_hand_over_uint8_images_and_params_on_the_device_path():
    from trainer.data.batches import ArrayBatches

    x = np.random.default_rng(0).integers(0, 256, (10, 6, 6, 3), dtype=np.uint8)
    y = np.arange(10) % 3
    augment = AugmentConfig(crop=1, flip="alternating", mixup=0.3)
    batches = ArrayBatches(x, y, batch_size=4, encoding="onehot", num_classes=3, shuffle=True, seed=5, augment=augment, augment_on_device=True)
    (images, params), targets = batches[1]
    assert images.dtype == np.uint8 and images.shape == (4, 6, 6, 3) and params.shape == (4, len(PARAMS))
    assert targets.dtype == np.float32 and targets.shape == (4, 3)  # one-hot, mixed by the step
    order = batches._order(0)
    np.testing.assert_array_equal(images, x[order[4:8]])
    np.testing.assert_array_equal(params, device_params(augment, 5, 0, np.arange(4, 8), 6, 6, order[4:8]))
    host = ArrayBatches(x, y, batch_size=4, encoding="onehot", num_classes=3, shuffle=True, seed=5, augment=augment)
    want, want_targets = host[1]
    got, got_targets = on_device(images, targets, augment, params)
    np.testing.assert_allclose(got, want, atol=2e-3)
    np.testing.assert_allclose(got_targets, want_targets, atol=1e-6)


@pytest.mark.slow
def test_the_tf_data_pipeline_hands_over_uint8_images_and_the_same_params():
    import tensorflow as tf

    from trainer.data.order import epoch_order
    from trainer.data.pipeline import make_dataset

    x = np.random.default_rng(0).integers(0, 256, (10, 6, 6), dtype=np.uint8)
    y = np.arange(10) % 3
    augment = AugmentConfig(crop=1, flip="alternating", random_erasing=0.5)
    epoch = tf.Variable(3, dtype=tf.int64)
    dataset = make_dataset(x, y, batch_size=4, encoding="sparse", num_classes=3, shuffle=True, seed=5, epoch_variable=epoch,
                           augment=augment, augment_on_device=True)
    batches = list(dataset)
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    (images, params), labels = batches[1]
    order = epoch_order(10, 5, 3)
    assert images.dtype == tf.uint8
    np.testing.assert_array_equal(images.numpy(), x[order[4:8]])
    np.testing.assert_array_equal(params.numpy(), device_params(augment, 5, 3, np.arange(4, 8), 6, 6, order[4:8]))


def test_install_wraps_the_step_once_and_uninstall_restores_the_class_step():
    import keras

    from trainer.data import device_augment

    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    for _ in range(2):  # a second install (the next fit) wraps the class's step, not the first wrapper
        device_augment.install(model, AugmentConfig(crop=1))
        assert getattr(model.train_step, "_trainer_augment_inner").__func__ is type(model).train_step
    device_augment.uninstall(model)
    assert "train_step" not in model.__dict__ and "_symbolic_build" not in model.__dict__
    assert model.train_step.__func__ is type(model).train_step


# --------------------------------------------------------------------------- whole runs


def cnn_config(data_path, augment, **sections):
    config = tiny_config(data_path, **sections)
    config["data"]["augment"] = augment
    config["model"] = {"type": "cnn", "blocks": [4], "head": {"hidden_units": [8], "dropout": 0.0}}
    return config


@pytest.mark.slow
@pytest.mark.parametrize(
    ("augment", "train"),
    [
        (CHANGES["affine + flip + crop + contrast"], {}),
        # with train.ema's step wrapper, two steps per call, and per-example weights beside the mixed targets
        (CHANGES["everything"], {"ema": {"decay": 0.9}, "class_weight": "balanced"}),
    ],
    ids=["affine", "mixing-ema-weights"],
)
def test_a_run_augmented_on_the_device_trains_as_the_host_augmented_one(write_config, mnist_npz, tmp_path, monkeypatch, augment, train):
    """The same batches either way: the histories agree to float rounding, and the step did the augmenting."""
    import trainer
    from trainer.data import device_augment

    calls = []
    original = device_augment.DeviceAugment.__call__
    monkeypatch.setattr(device_augment.DeviceAugment, "__call__", lambda self, *a: calls.append(1) or original(self, *a))
    config = write_config(cnn_config(
        mnist_npz, augment, train={"epochs": 2, "batch_size": 64, **train}, optimizer={"name": "sgd", "learning_rate": 0.01},
        compile={"steps_per_execution": 2 if train else 1},
    ))
    trainer.train(config, run_dir=tmp_path / "device")
    assert calls  # traced into the training step
    monkeypatch.setattr(device_augment, "runs_on_device", lambda *args: False)
    trainer.train(config, run_dir=tmp_path / "host")
    device, host = (read_history(tmp_path / name / "history.csv") for name in ("device", "host"))
    for a, b in zip(device, host):
        assert a["loss"] == pytest.approx(b["loss"], rel=2e-4) and a["val_loss"] == pytest.approx(b["val_loss"], rel=2e-4)
    metrics = json.loads((tmp_path / "device" / "metrics.json").read_text())
    assert metrics["validation"]["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-5)  # validation: the plain images
