"""Folder datasets in memory against streamed from disk: peak memory and time per image of an epoch.

    python benchmarks/prepare_data.py --out /tmp/trainer-data   # once
    python benchmarks/streaming.py --data /tmp/trainer-data     # prints two Markdown tables

1. Speed: the full CIFAR-10 JPEG folder (50,000 train, 10,000 test) with each ``data.cache``
   (``memory``, ``disk``, ``none``), an MLP (the pipeline is a large share of each step), 3
   epochs; the time per image is the median over epochs 2..N of ``epoch_seconds`` / images
   from ``history.csv`` (epoch 1 also fills the disk cache and traces the step).
2. Memory: ``cifar10-bench`` (2,500 JPEGs) and the same files hard-linked ten times (25,000),
   1 epoch, peak resident memory of the whole ``trainer run`` (``os.wait4``'s rusage).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = HERE / "configs" / "cifar10_folder_mlp.yaml"


def run(data: Path, cache: str, run_dir: Path, epochs: int, env: dict) -> tuple[float, float, list[dict]]:
    """One ``trainer run``: wall seconds, peak MiB and the history rows."""
    from trainer.run.rundir import read_history

    command = [sys.executable, "-m", "trainer", "run", str(CONFIG), "--run-dir", str(run_dir),
               "--set", f"data.path={data}", "--set", f"data.cache={cache}", "--set", f"train.epochs={epochs}"]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{output[-3000:]}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024, read_history(run_dir / "history.csv")


def linked_copies(source: Path, target: Path, copies: int) -> Path:
    """``target`` holding every image of ``source`` ``copies`` times (hard links: no extra disk); tests/data/test_streaming.py uses it too."""
    for file in source.rglob("*"):
        if file.is_file():
            folder = target / file.parent.relative_to(source)
            folder.mkdir(parents=True, exist_ok=True)
            for copy in range(copies):
                os.link(file, folder / f"{copy}-{file.name}")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/tmp/trainer-data"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--only", choices=["speed", "memory"])
    args = parser.parse_args()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    scratch = Path(tempfile.mkdtemp(prefix="trainer-stream-"))
    try:
        if args.only in (None, "speed"):
            print("| data.cache | microseconds per image (epochs 2..N, median) | vs memory | peak MiB | wall s |")
            print("| --- | --- | --- | --- | --- |")
            reference = None
            for cache in ("memory", "disk", "none"):
                per_image, peaks, walls = [], [], []
                for repeat in range(args.repeats):
                    run_dir = scratch / f"speed-{cache}-{repeat}"
                    wall, peak, rows = run(args.data / "cifar10-jpg", cache, run_dir, args.epochs, env)
                    per_image += [1e6 / row["examples_per_second"] for row in rows[1:]]
                    peaks.append(peak)
                    walls.append(wall)
                    shutil.rmtree(run_dir, ignore_errors=True)
                    print(f"  {cache} run {repeat + 1}: {[round(r['epoch_seconds'], 2) for r in rows]} s/epoch, {peak:.0f} MiB", file=sys.stderr)
                value = statistics.median(per_image)
                reference = reference or value
                print(f"| {cache} | {value:.1f} | {value / reference:.2f} | {statistics.median(peaks):.0f} | {statistics.median(walls):.1f} |", flush=True)
        if args.only in (None, "memory"):
            small = args.data / "cifar10-bench"
            large = linked_copies(small, scratch / "cifar10-bench-x10", 10)
            print("\n| data.cache | peak MiB, 2,500 images | peak MiB, 25,000 (the same files x10) | ratio |")
            print("| --- | --- | --- | --- |")
            for cache in ("disk", "none", "memory"):
                peaks = []
                for data in (small, large):
                    values = [run(data, cache, scratch / f"mem-{cache}-{data.name}-{r}", 1, env)[1] for r in range(args.repeats)]
                    peaks.append(statistics.median(values))
                print(f"| {cache} | {peaks[0]:.0f} | {peaks[1]:.0f} | {peaks[1] / peaks[0]:.2f} |", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
