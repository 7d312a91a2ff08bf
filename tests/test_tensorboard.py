"""The tensorboard callback: event files under RUN_DIR/tensorboard/ whose scalars match history.csv."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import tiny_config
from trainer.run.rundir import read_history


def read_epoch_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """The ``epoch_*`` scalars of the event files in ``folder`` as (step, value), read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    scalars = {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in tags["scalars"] if tag.startswith("epoch_")}
    for tag in tags.get("tensors", []):  # TensorFlow 2 writes scalar summaries as tensor events
        if tag.startswith("epoch_"):
            scalars[tag] = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)]
    return scalars


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory):
    """One 3-epoch run with callbacks: [tensorboard]: its history rows and its train / validation scalars."""
    import yaml

    import trainer
    from tests.datagen import write_mnist_npz

    root = tmp_path_factory.mktemp("tensorboard")
    data = write_mnist_npz(root / "mnist.npz", n_train=256, n_test=64, seed=0)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(data, train={"epochs": 3}, callbacks=["tensorboard"], output={"dir": str(root / "outputs")})))
    result = trainer.train(path)
    events = result.run_dir / "tensorboard"
    return read_history(result.run_dir / "history.csv"), {"train": read_epoch_scalars(events / "train"), "validation": read_epoch_scalars(events / "validation")}


@pytest.mark.slow
@pytest.mark.parametrize(
    "side, tag, column",
    [
        ("train", "epoch_loss", "loss"), ("train", "epoch_accuracy", "accuracy"), ("train", "epoch_learning_rate", "learning_rate"),
        ("validation", "epoch_loss", "val_loss"), ("validation", "epoch_accuracy", "val_accuracy"),
    ],
)
def test_tensorboard_event_scalars_match_history_csv(tensorboard_run, side, tag, column):
    history, scalars = tensorboard_run
    assert [step for step, _ in scalars[side][tag]] == [0, 1, 2]
    assert [value for _, value in scalars[side][tag]] == pytest.approx([row[column] for row in history], rel=1e-6)
