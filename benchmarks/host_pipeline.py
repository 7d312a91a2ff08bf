"""The host's share of cifar10_94's input: batches per second from the input pipeline alone, against the training step.

    python benchmarks/host_pipeline.py --data /tmp/trainer-data/cifar10-jpg [--limit 5000] [--backend jax]

The pipeline alone is what the host does for every training step, as trainer does it on this
branch: the epoch's order, reading (a folder split decoded once, as the run loads it), slicing the
batch's rows, the host-side part of ``data.augment`` (today all of it), and handing over the batch
(uint8 pixels, labels) as ``trainer.data.batches.make_batches`` gives it to ``fit`` on JAX/PyTorch.
It is timed over ``--passes`` epochs (the loading of the folder is reported on its own, not in the
rate). The training step is a real ``trainer run configs/cifar10_94.yaml`` on the same images, two
epochs; its second epoch's ``examples_per_second`` (compiled, warm) is the consumer's rate. The
ratio is the headroom: the issue's target is >= 20 on a CPU, so that a GPU ~50x faster than these
CPUs still waits for nothing. Another engineer moves augmentation onto the device: rerun this
script then; the host share shrinks to the order, the slicing and the hand-over.
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "cifar10_94.yaml"


def overrides(data: Path, limit: int, bf16: bool) -> list[str]:
    return [
        "data.dataset=folder", f"data.path={data}", "data.image_size=[32, 32]", "data.validation=none",
        *([f"data.limit={limit}"] if limit else []), *([] if bf16 else ["train.mixed_precision=false"]),
    ]


def pipeline_rate(data: Path, limit: int, passes: int, bf16: bool) -> tuple[float, float, int]:
    """(images/s of the host pipeline over ``passes`` epochs, seconds to load the split, images a pass)."""
    from trainer.config.loading import load_config
    from trainer.data.batches import epoch_counter, make_batches
    from trainer.data.loaders import load_data

    config = load_config(CONFIG, overrides(data, limit, bf16))
    started = time.perf_counter()
    loaded = load_data(config.data, seed=config.seed)
    load_seconds = time.perf_counter() - started

    counter = epoch_counter()  # what the checkpointer assigns at each epoch's start in a run
    batches = make_batches(
        loaded.x_train, loaded.y_train, batch_size=config.train.batch_size, encoding="sparse", num_classes=loaded.num_classes,
        shuffle=True, seed=config.seed, epoch_variable=counter, augment=config.data.augment,
    )
    images = 0
    started = time.perf_counter()
    for epoch in range(passes):
        counter.assign(epoch)
        if hasattr(batches, "__getitem__"):  # JAX / PyTorch: the PyDataset fit reads
            for index in range(len(batches)):
                images += len(batches[index][0])
        else:  # TensorFlow: the tf.data pipeline (its own parallel workers)
            for rows, *_ in batches:
                images += int(rows.shape[0])
    return images / (time.perf_counter() - started), load_seconds, len(loaded.x_train)


def training_rate(data: Path, limit: int, bf16: bool, backend: str) -> float:
    """images/s of the compiled training step: the second epoch of a real ``trainer run`` on the same images."""
    with tempfile.TemporaryDirectory(prefix="host-pipeline-") as scratch:
        run_dir = Path(scratch) / "run"
        args = [sys.executable, "-m", "trainer", "run", str(CONFIG), "--run-dir", str(run_dir), "--set", "train.epochs=2", "--set", "evaluate.tta=none"]
        for item in overrides(data, limit, bf16):
            args += ["--set", item]
        env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(args, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"trainer run failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        with open(run_dir / "history.csv") as handle:
            return float(list(csv.DictReader(handle))[-1]["examples_per_second"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the JPEG class folders (train/<class>/*.jpg, test/...): cifar10-jpg/")
    parser.add_argument("--limit", type=int, default=5000, help="training images (data.limit; 0: all)")
    parser.add_argument("--passes", type=int, default=3, help="epochs the pipeline is timed over")
    parser.add_argument("--backend", default="jax", help="the Keras backend of both sides (jax or torch: the PyDataset path)")
    parser.add_argument("--bf16", action="store_true", help="train in the config's bfloat16 (emulated, slow, on CPUs without it)")
    parser.add_argument("--pipeline-only", action="store_true", help="only the pipeline's rate (the training run also tests on the whole test split)")
    args = parser.parse_args()
    os.environ.setdefault("KERAS_BACKEND", args.backend)
    sys.path.insert(0, str(ROOT))
    host, load_seconds, count = pipeline_rate(args.data, args.limit, args.passes, args.bf16)
    print(f"host pipeline alone: {host:,.0f} images/s ({count:,} images, {args.passes} passes; loading them once: {load_seconds:.1f} s)", flush=True)
    if args.pipeline_only:
        return
    step = training_rate(args.data, args.limit, args.bf16, args.backend)
    print(f"| host pipeline alone (images/s) | training step (images/s) | ratio (target >= 20) | images | load once |  ({args.backend}, load {os.getloadavg()[0]:.1f})")
    print("| ---: | ---: | ---: | ---: | ---: |")
    print(f"| {host:,.0f} | {step:,.0f} | {host / step:.1f} | {count:,} | {load_seconds:.1f} s |")


if __name__ == "__main__":
    main()
