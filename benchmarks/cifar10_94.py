"""The ``cifar10_94`` benchmark case: one epoch of configs/cifar10_94.yaml beside the same network in plain Keras.

    python benchmarks/run.py --only cifar10_94 --repeats 1             # 10,240 training images (10 steps of 1024)
    python benchmarks/run.py --only cifar10_94 --repeats 1 --limit 0   # the full epoch of 50,000 (~10-25 min a side here)

Both sides train ONE epoch on the first ``limit / 10`` training images of each CIFAR-10 class (the JPEG
folders prepare_data.py unpacks) and test on the first 20 test images of each class; what is compared
is the epoch's own seconds (Keras's epoch start to its end, training only: no start-up, no data
loading, no test), which each side measures the same way:

- baseline: ``benchmarks/baselines/cifar10_94_keras.py ROOT --limit N --test-limit 200 --mixed-precision P`` prints them
  in its JSON line (P: the config's ``train.mixed_precision`` when it is ``bfloat16``, else float32: the same numerics);
- trainer: ``trainer run configs/cifar10_94.yaml`` on a folder of hard links to the same images
  (``data.dataset=folder``, ``train.epochs=1``, ``data.validation=none``), whose ``history.csv``
  records them (``epoch_seconds``). This file is also the trainer command's entry point: it makes
  the folder (once), then replaces itself with ``python -m trainer run ...`` (``os.execv``), so the
  time and memory measured are trainer's own.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable

DEFAULT_LIMIT = 10240  # training images (10 steps of batch 1024): one step takes ~10 s on this project's 2-core CPUs
TEST_PER_CLASS = 20  # test images a class: the test (and its TTA) come after the timed epoch; kept small to save time
CLASSES = 10


def limit_argument(text: str) -> int:
    """``--limit``: 0 (all 50,000) or at least 10 (one image a class); argparse's ``type``."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value != 0 and value < CLASSES:
        raise argparse.ArgumentTypeError(f"{text!r}: give 0 (all 50,000) or at least {CLASSES} training images (one a class)")
    return value


def subset_folder(data: Path, limit: int) -> Path:
    """The folder of hard links both sides' images come from: ``limit / 10`` training images a class (0: all)."""
    return data / f"cifar10-94-{limit or 'all'}"


def trainer_arguments(folder: Path, run_dir: str) -> list[str]:
    """``trainer run`` of configs/cifar10_94.yaml for one epoch on ``folder`` (no validation pass inside the epoch)."""
    return [
        "run", str(ROOT / "configs" / "cifar10_94.yaml"),
        "--set", "data.dataset=folder", "--set", f"data.path={folder}", "--set", "data.image_size=[32, 32]",
        "--set", "data.validation=none", "--set", "train.epochs=1", "--run-dir", run_dir,
    ]


def _this_checkout_importable() -> None:
    """run.py runs as a script: import this checkout's trainer, as its children do."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def config_precision(config: Path = ROOT / "configs" / "cifar10_94.yaml") -> str:
    """The baseline's ``--mixed-precision``: ``bfloat16`` when the config trains in it, else ``float32`` (same numerics both sides).

    Read by trainer's own config loader (its defaults and spellings), not a second YAML reading.
    """
    _this_checkout_importable()
    from trainer.config import load_config

    return "bfloat16" if load_config(config, []).train.mixed_precision == "bfloat16" else "float32"


def commands(data: Path, run_dir: str, limit: int) -> tuple[list[str], list[str]]:
    """The baseline's and trainer's commands for ``run.py``'s Case."""
    baseline = [
        PY, str(HERE / "baselines" / "cifar10_94_keras.py"), str(data / "cifar10-jpg"),
        "--epochs", "1", "--limit", str(limit), "--test-limit", str(TEST_PER_CLASS * CLASSES),
        "--mixed-precision", config_precision(),
    ]
    trainer = [PY, str(Path(__file__).resolve()), "--data", str(data), "--limit", str(limit), "--run-dir", run_dir]
    return baseline, trainer


def epoch_seconds(side: str, stdout: str, run_dir: Path) -> float:
    """The timed epoch's seconds: the baseline's JSON line, or trainer's ``history.csv`` (read as trainer reads it back)."""
    if side == "baseline":
        for line in reversed(stdout.splitlines()):
            if line.startswith("{"):
                return float(json.loads(line)["epoch_seconds"][0])
        raise SystemExit(f"the cifar10_94 baseline printed no JSON line:\n{stdout[-2000:]}")
    _this_checkout_importable()
    from trainer.readers.run_files import HISTORY_FILE, read_history_table

    rows = read_history_table(run_dir / HISTORY_FILE, folder=run_dir).rows
    if not rows or not isinstance(rows[0].get("epoch_seconds"), (int, float)):
        raise SystemExit(f"{run_dir / HISTORY_FILE} has no epoch_seconds for the first epoch:\n{stdout[-2000:]}")
    return float(rows[0]["epoch_seconds"])


def images_of(limit: int) -> int:
    """Training images one epoch takes at ``limit`` (0: all 50,000)."""
    return min(limit, 50000) // CLASSES * CLASSES if limit else 50000


def summary(limit: int, base_s: float, ours_s: float) -> str:
    """The line under run.py's table: what was timed, and images/s on each side."""
    images = images_of(limit)
    return (
        f"cifar10_94: seconds of ONE epoch (training only, no start-up or test) of {images:,} training images "
        f"(--limit {limit}{', the full set' if not limit else ''}), batch 1024; images/s baseline {images / base_s:.1f}, "
        f"trainer {images / ours_s:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="the trainer side of the cifar10_94 case (run.py calls it)")
    parser.add_argument("--data", type=Path, required=True, help="what prepare_data.py wrote (holds cifar10-jpg/)")
    parser.add_argument("--limit", type=limit_argument, default=DEFAULT_LIMIT)
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from prepare_data import cifar_subset

    per_class = min(args.limit, 50000) // CLASSES if args.limit else 5000
    folder = subset_folder(args.data, args.limit)
    cifar_subset(args.data / "cifar10-jpg", folder, per_class, TEST_PER_CLASS)
    command = [PY, "-m", "trainer", *trainer_arguments(folder, args.run_dir)]
    print("trainer command:", " ".join(command), file=sys.stderr, flush=True)
    os.execv(PY, command)


if __name__ == "__main__":
    main()
