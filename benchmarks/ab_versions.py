"""Two checkouts of trainer, the same ``trainer run``, alternately: is the newer one slower? (issue 25's no-regression check)

    git worktree add /tmp/base 2bc3f4f
    python benchmarks/ab_versions.py --old /tmp/base --new . --backend tensorflow --runs 8

Each run is ``python -m trainer run benchmarks/configs/mnist_mlp.yaml`` (or ``--config``) started in
that checkout's folder, so it imports that checkout's trainer; the order alternates (old, new; then
new, old) so a drift of the machine hits both sides alike. Prints each wall time, the medians and
new / old. Compare only numbers from one run of this script on one machine.
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


def wall_seconds(checkout: Path, config: str, data: Path, backend: str) -> float:
    scratch = Path(tempfile.mkdtemp(prefix="trainer-ab-"))
    try:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "trainer", "run", config, "--set", f"data.path={data}", "--run-dir", str(scratch / "run")],
            cwd=checkout, env=dict(os.environ, KERAS_BACKEND=backend), capture_output=True, text=True,
        )
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if done.returncode != 0:
        raise SystemExit(f"trainer run in {checkout} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="the older checkout (a git worktree)")
    parser.add_argument("--new", type=Path, default=HERE.parent, help="the newer checkout (default: this one)")
    parser.add_argument("--backend", default="tensorflow", choices=["tensorflow", "jax", "torch"])
    parser.add_argument("--runs", type=int, default=6, help="runs of each side")
    parser.add_argument("--config", default="benchmarks/configs/mnist_mlp.yaml", help="relative to each checkout")
    parser.add_argument("--data", type=Path, default=Path("/tmp/trainer-data/mnist-60k2k.npz"), help="benchmarks/prepare_data.py's file")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"old": [], "new": []}
    for index in range(args.runs):
        order = ("old", "new") if index % 2 == 0 else ("new", "old")
        for side in order:
            seconds = wall_seconds(getattr(args, side).resolve(), args.config, args.data.resolve(), args.backend)
            times[side].append(seconds)
            print(f"{side} {seconds:.2f} s", flush=True)
    medians = {side: statistics.median(values) for side, values in times.items()}
    for side, values in times.items():
        print(f"{side}: median {medians[side]:.2f} s of {sorted(round(v, 2) for v in values)}")
    print(f"new / old (medians): {medians['new'] / medians['old']:.3f}")


if __name__ == "__main__":
    main()
