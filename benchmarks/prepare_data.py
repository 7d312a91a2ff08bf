"""Build local dataset files from ../shared/data for hand runs and benchmarks (never committed).

    python benchmarks/prepare_data.py --out /tmp/trainer-data

writes
  mnist-8k2k.npz       the official MNIST test digits split 8,000 train / 2,000 test
  mnist-60k2k.npz      the same 8,000 training digits tiled to 60,000 (speed checks at full size)
  cifar10-jpg/         the CIFAR-10 JPEG class folders, unpacked
"""
from __future__ import annotations

import argparse
import tarfile
from pathlib import Path

import numpy as np

from trainer.data.formats import read_idx

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def mnist_splits(shared: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    images = read_idx(shared / "mnist-t10k" / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(shared / "mnist-t10k" / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return images[:8000], labels[:8000], images[8000:], labels[8000:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/trainer-data"))
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--no-cifar", action="store_true", help="skip unpacking CIFAR-10")
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
