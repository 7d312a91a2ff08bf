"""The tf.data path with ``train.steps_per_epoch``: every batch a pure function of (seed, epoch, step), as on the PyDataset path.

Keras keeps one iterator of an endless dataset across epochs, and ``tf.data`` prefetches (and maps
in parallel) ahead of the step being trained, across the epoch boundary. So nothing a batch is
made of may be read from the epoch variable while it is produced: step k of epoch N is batch
N * steps_per_epoch + k of an endless stream of passes (``trainer.data.order.EpochStream``),
on TensorFlow as in ``ArrayBatches``.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # tf.data pipelines: TensorFlow starts in every test

from tests.conftest import tiny_config
from trainer.config.schema import AugmentConfig

RECIPE = {
    "flip": "horizontal", "crop": 2, "crop_padding": "reflect", "random_erasing": 0.5,
    "rand_augment": {"magnitude": 9, "layers": 2}, "mixup": 0.2, "cutmix": 1.0,
}
COUNT, BATCH, STEPS = 40, 5, 5  # 8 batches a pass, 5 steps an epoch: epochs end mid-pass


def _data():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(COUNT, 8, 8, 3)).astype(np.uint8), rng.integers(0, 4, size=COUNT)


def _settings(**more):
    return dict(batch_size=BATCH, encoding="onehot", num_classes=4, shuffle=True, seed=3, augment=AugmentConfig(**RECIPE), **more)


def _as_numpy(batch):
    return tuple(np.asarray(t) for t in batch)


def _keras_like_tf_epochs(epochs, *, initial_epoch=0, read_per_epoch=STEPS, wait=0.0, steps_per_execution=1, **more):
    """As Keras's fit reads an endless tf.data dataset: one iterator, the epoch variable set at each epoch's start.

    ``wait``: seconds between epochs, so that prefetch and the parallel maps run ahead into the next epoch.
    """
    import tensorflow as tf

    from trainer.data.batches import make_batches

    x, y = _data()
    variable = tf.Variable(initial_epoch, dtype=tf.int64)
    where = {"initial_epoch": initial_epoch} if initial_epoch else {}  # (a fit from epoch 0 passes neither)
    where.update({"steps_per_execution": steps_per_execution} if steps_per_execution > 1 else {})
    dataset = make_batches(x, y, epoch_variable=variable, repeat=True, steps_per_epoch=STEPS, **where, **_settings(**more))
    iterator, seen = iter(dataset), {}
    for epoch in range(initial_epoch, epochs):
        variable.assign(epoch)
        seen[epoch] = [_as_numpy(next(iterator)) for _ in range(read_per_epoch)]
        time.sleep(wait)
    return seen


def _pydataset_epochs(epochs, *, read_per_epoch=STEPS, **more):
    """The PyDataset path's batches for the same (seed, epoch, step): Keras's index runs on across epochs."""
    from trainer.data.batches import ArrayBatches, EpochCounter

    x, y = _data()
    counter = EpochCounter()
    batches = ArrayBatches(x, y, epoch_variable=counter, repeat=True, steps_per_epoch=STEPS, **_settings(**more))
    seen, index = {}, 0
    for epoch in range(epochs):
        counter.assign(epoch)
        seen[epoch] = [batches[index + step] for step in range(read_per_epoch)]
        index += read_per_epoch
    return seen


def _assert_same(got, want):
    assert sorted(got) == sorted(want) or set(got) <= set(want)
    for epoch in got:
        assert len(got[epoch]) == len(want[epoch])
        for step, (a_batch, b_batch) in enumerate(zip(got[epoch], want[epoch])):
            assert len(a_batch) == len(b_batch)
            for a, b in zip(a_batch, b_batch):
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-4, err_msg=f"epoch {epoch} step {step}")


@pytest.mark.parametrize("wait", [0.0, 0.3])
@pytest.mark.parametrize("weights", [False, True])
def test_tf_data_steps_per_epoch_batches_equal_the_pydataset_ones_whatever_prefetch_did(wait, weights):
    """Epochs that end mid-pass, every augmentation on: each (epoch, step) gets the PyDataset's batch, however far prefetch ran ahead."""
    more = {"weights": np.linspace(0.1, 1, COUNT).astype(np.float32)} if weights else {}
    _assert_same(_keras_like_tf_epochs(4, wait=wait, **more), _pydataset_epochs(4, **more))


@pytest.mark.parametrize("initial_epoch", [1, 2, 3])
def test_a_resumed_tf_data_stream_continues_where_the_uninterrupted_one_is(initial_epoch):
    """A fresh dataset started at epoch N (``--resume``) gives the batches epoch N..3 of an uninterrupted stream had."""
    _assert_same(_keras_like_tf_epochs(4, initial_epoch=initial_epoch, wait=0.2), _pydataset_epochs(4))


def test_steps_per_execution_not_dividing_steps_per_epoch_reads_the_same_batches():
    """Keras reads whole executions: 5 steps by 2 a call read 6 batches an epoch. Epoch N still starts at batch N * 5."""
    got = _keras_like_tf_epochs(3, read_per_epoch=6, steps_per_execution=2, wait=0.2)
    _assert_same(got, _pydataset_epochs(3, read_per_epoch=6))
    resumed = _keras_like_tf_epochs(3, initial_epoch=2, read_per_epoch=6, steps_per_execution=2)
    _assert_same(resumed, got)


@pytest.mark.parametrize("streamed", [False, True])
def test_one_pass_an_epoch_reads_the_epoch_once_at_its_start(tmp_path, monkeypatch, streamed):
    """Without steps_per_epoch Keras re-iterates the dataset each epoch: the pass's number is read once, at its start,
    so a variable changed mid-pass (or by a late callback) changes neither its order nor its augmentation."""
    import tensorflow as tf

    from trainer.data import pipeline
    from trainer.data.batches import ArrayBatches, EpochCounter, make_batches

    if streamed:
        monkeypatch.setattr(pipeline, "STREAM_MEMMAP_OVER", 0)
    x, y = _data()
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    variable = tf.Variable(2, dtype=tf.int64)
    dataset = make_batches(mapped, y, epoch_variable=variable, **_settings())
    iterator = iter(dataset)
    got = [_as_numpy(next(iterator))]
    variable.assign(7)
    time.sleep(0.2)
    got += [_as_numpy(batch) for batch in iterator]
    want = ArrayBatches(x, y, epoch_variable=EpochCounter(2), **_settings())
    _assert_same({2: got}, {2: [want[index] for index in range(len(want))]})


def _history(run_dir):
    from trainer.run.rundir import read_history

    return [{k: v for k, v in row.items() if k not in ("epoch_seconds", "examples_per_second")} for row in read_history(run_dir / "history.csv")]


@pytest.mark.slow
@pytest.mark.parametrize("steps_per_execution", [2])  # 2: executions read ahead across the epoch's end (1 is the easy case)
def test_tensorflow_runs_with_steps_per_epoch_agree_when_shorter_and_when_resumed(cli, write_config, mnist_npz, tmp_path, steps_per_execution):
    """256 examples by 32: 8 batches a pass, 5 steps an epoch. A 2-epoch run is the first 2 epochs of a 3-epoch run, and a
    run stopped after epoch 1 and resumed gives the 3-epoch run's history.csv."""
    config = tiny_config(mnist_npz, train={"epochs": 3, "batch_size": 32, "steps_per_epoch": 5}, compile={"steps_per_execution": steps_per_execution})
    config["data"]["augment"] = RECIPE
    path = write_config(config)
    runs = {}
    for name, epochs in (("whole", 3), ("short", 2), ("resumed", 1)):
        result = cli("run", path, "--run-dir", tmp_path / name, "--set", f"train.epochs={epochs}")
        assert result.exit_code == 0, result.output
    result = cli("run", path, "--run-dir", tmp_path / "resumed", "--resume")
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    runs = {name: _history(tmp_path / name) for name in ("whole", "short", "resumed")}
    assert [row["epoch"] for row in runs["whole"]] == [1, 2, 3]
    assert runs["short"] == runs["whole"][:2]
    assert runs["resumed"] == runs["whole"]


def test_epochs_longer_than_a_pass_and_a_streamed_source_read_the_same_stream(tmp_path, monkeypatch):
    """12 steps an epoch over 8-batch passes (an epoch spans passes), read by rows from a memory map, resumed at epoch 2."""
    import tensorflow as tf

    from trainer.data import pipeline
    from trainer.data.batches import ArrayBatches, EpochCounter, make_batches

    monkeypatch.setattr(pipeline, "STREAM_MEMMAP_OVER", 0)
    x, y = _data()
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    settings = _settings(repeat=True, steps_per_epoch=12)
    iterator = iter(make_batches(mapped, y, epoch_variable=tf.Variable(0, dtype=tf.int64), initial_epoch=2, **settings))
    neutral = ArrayBatches(x, y, epoch_variable=EpochCounter(), **settings)
    got = {epoch: [_as_numpy(next(iterator)) for _ in range(12)] for epoch in (2, 3)}
    want = {}
    for epoch in (0, 1, 2, 3):
        neutral.epoch_variable.assign(epoch)
        want[epoch] = [neutral[epoch * 12 + step] for step in range(12)]
    _assert_same(got, want)


@pytest.mark.parametrize(("count", "drop_remainder"), [(0, False), (3, True)])
def test_an_endless_stream_of_no_batch_ends_instead_of_hanging(count, drop_remainder):
    """No example (or fewer than a batch, with full batches only): the stream is empty, not an endless search for a batch."""
    import tensorflow as tf

    from trainer.data.batches import make_batches

    x, y = np.zeros((count, 8, 8, 3), np.uint8), np.zeros(count, np.int64)
    dataset = make_batches(
        x, y, epoch_variable=tf.Variable(0, dtype=tf.int64), repeat=True, steps_per_epoch=STEPS, drop_remainder=drop_remainder, **_settings()
    )
    assert list(dataset) == []
