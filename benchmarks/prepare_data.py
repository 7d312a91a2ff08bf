"""Build local dataset files from ../shared/data for hand runs and benchmarks (never committed).

    python benchmarks/prepare_data.py --out /tmp/trainer-data

writes
  mnist-8k2k.npz       the official MNIST test digits split 8,000 train / 2,000 test
  mnist-60k2k.npz      the same 8,000 training digits tiled to 60,000 (speed checks at full size)
  cifar10-jpg/         the CIFAR-10 JPEG class folders, unpacked
  cifar10-bench/       200 train + 50 test images a class (the VGG16 benchmark case: 2,000 / 500)
  cifar10-1k/          100 train + 20 test images a class (the 6-epoch vs 1-epoch check)
"""
from __future__ import annotations

import argparse
import os
import sys
import tarfile
from pathlib import Path

import numpy as np

from trainer.data.formats import read_idx

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def mnist_splits(shared: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    images = read_idx(shared / "mnist-t10k" / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(shared / "mnist-t10k" / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return images[:8000], labels[:8000], images[8000:], labels[8000:]


def cifar_subset(source: Path, target: Path, train_per_class: int, test_per_class: int) -> None:
    """A smaller folder dataset of the first images of each class (hard links, no copies)."""
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for class_dir in sorted((source / split).iterdir()):
            out = target / split / class_dir.name
            out.mkdir(parents=True, exist_ok=True)
            for image in sorted(class_dir.iterdir())[:count]:
                link = out / image.name
                if not link.exists():
                    os.link(image, link)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/trainer-data"))
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--no-cifar", action="store_true", help="skip unpacking CIFAR-10")
    args = parser.parse_args()
    if not (args.shared / "mnist-t10k").is_dir():
        print(
            f"error: {args.shared / 'mnist-t10k'} not found; this script reads the project's shared data "
            "(../shared/data beside the checkout). Point --shared at the folder that holds mnist-t10k/ "
            "and cifar10-jpg.tar.gz.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    args.out.mkdir(parents=True, exist_ok=True)

    x_train, y_train, x_test, y_test = mnist_splits(args.shared)
    np.savez(args.out / "mnist-8k2k.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    reps = int(np.ceil(60000 / len(x_train)))
    np.savez(
        args.out / "mnist-60k2k.npz",
        x_train=np.tile(x_train, (reps, 1, 1))[:60000],
        y_train=np.tile(y_train, reps)[:60000],
        x_test=x_test,
        y_test=y_test,
    )
    print(f"wrote {args.out / 'mnist-8k2k.npz'} and {args.out / 'mnist-60k2k.npz'}")
    if not args.no_cifar and not (args.out / "cifar10-jpg").exists():
        with tarfile.open(args.shared / "cifar10-jpg.tar.gz") as archive:
            archive.extractall(args.out, filter="data")
        print(f"unpacked {args.out / 'cifar10-jpg'}")
    if not args.no_cifar:
        cifar_subset(args.out / "cifar10-jpg", args.out / "cifar10-bench", 200, 50)
        cifar_subset(args.out / "cifar10-jpg", args.out / "cifar10-1k", 100, 20)
        print(f"wrote {args.out / 'cifar10-bench'} and {args.out / 'cifar10-1k'}")


if __name__ == "__main__":
    main()
