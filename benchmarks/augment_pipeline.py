"""The host's share of cifar10_94's training input alone: images/s of the batches ``fit`` would read, without training.

    python benchmarks/augment_pipeline.py                       # the current backend's batch maker, 50,000 images, 2 epochs
    KERAS_BACKEND=jax python benchmarks/augment_pipeline.py     # ArrayBatches (JAX and PyTorch) instead of tf.data

Two ways of handing over configs/cifar10_94.yaml's augmented batches (batch 1024, shuffled):

- ``device``: what a run does now: uint8 images plus a few numbers per image (``device_params``); the training step
  augments them (``trainer.data.device_augment``), so that work is not the host's;
- ``host``: what runs did before (and ``rand_augment`` still does): the NumPy changes applied on the host, float32 out.

The images are random uint8 of CIFAR-10's shape (the pipeline's cost does not depend on the pixels); every
batch is materialised as NumPy, as Keras's data adapters hand it to the step. Prints one JSON line per way.
Compare with the images/s the training step consumes (``history.csv``'s ``examples_per_second`` of a
``trainer run configs/cifar10_94.yaml``): issue 25's target is the host at >= 20x that.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def batches_of(way: str, images, labels, augment, batch_size: int, seed: int):
    from trainer.data.batches import epoch_counter, make_batches

    epoch = epoch_counter()
    dataset = make_batches(
        images, labels, batch_size=batch_size, encoding="sparse", num_classes=10, shuffle=True, seed=seed,
        epoch_variable=epoch, augment=augment, augment_on_device=way == "device",
    )
    return dataset, epoch


def one_epoch(dataset) -> int:
    """Every batch of one pass, as NumPy; the images counted."""
    import numpy as np

    count = 0
    if hasattr(dataset, "as_numpy_iterator"):
        batches = dataset.as_numpy_iterator()
    else:
        batches = (dataset[index] for index in range(len(dataset)))
    for batch in batches:
        x = batch[0]
        count += len(np.asarray(x[0] if isinstance(x, tuple) else x))
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50000)
    parser.add_argument("--epochs", type=int, default=2, help="passes timed (after one untimed warm-up pass)")
    parser.add_argument("--ways", nargs="*", default=["device", "host"])
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import keras
    import numpy as np

    from trainer.config import load_config

    config = load_config(ROOT / "configs" / "cifar10_94.yaml", [])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.images)
    for way in args.ways:
        dataset, epoch = batches_of(way, images, labels, config.data.augment, config.train.batch_size, config.seed)
        epoch.assign(0)
        one_epoch(dataset)  # warm-up: tf.data's first pass builds its functions
        started, count = time.perf_counter(), 0
        for number in range(1, args.epochs + 1):
            epoch.assign(number)
            count += one_epoch(dataset)
        seconds = time.perf_counter() - started
        print(json.dumps({
            "way": way, "backend": keras.backend.backend(), "augment": config.data.augment.model_dump(exclude_defaults=True),
            "images": count, "seconds": round(seconds, 3), "images_per_second": round(count / seconds, 1),
        }), flush=True)


if __name__ == "__main__":
    main()
