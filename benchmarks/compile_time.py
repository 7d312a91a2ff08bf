"""What compiling costs a run, and what the persistent compilation cache gives back (issue 25 item 3).

    python benchmarks/compile_time.py --mnist /tmp/trainer-data/mnist.npz --cifar /tmp/trainer-data/cifar10-small [--backend jax]

Each case is a real ``trainer run`` subprocess; the table gives the seconds from the command's start
to the end of its first epoch (the line ``epoch 1/...`` on its output), the first epoch's own seconds
(``history.csv``) and the whole command's wall time, for:

- ``cold``: an empty cache folder (everything compiled, and written to the cache);
- ``warm``: the same command again on that folder (the programs read back);
- for cifar10_94, each with the cache off (``TRAINER_CACHE=off``): the config as it is, then with
  ``compile.steps_per_execution: 1``, without ``train.ema``, and without ``evaluate.tta``; the
  difference from the first is what that feature adds to compiling.

``--cifar`` is a class-folder copy (``train/<class>/*.jpg``, ``test/<class>/*.jpg``) of a few hundred
images, so that compiling, not training, dominates. Runs in float32 (``--bf16`` keeps the config's bfloat16).
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


def run(config: str, sets: list[str], cache: str, run_dir: Path, backend: str) -> dict[str, float]:
    """One ``trainer run``: seconds to the first epoch's end, that epoch's seconds, and the wall time."""
    env = {**os.environ, "TRAINER_CACHE": cache, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    args = [sys.executable, "-m", "trainer", "run", config, "--run-dir", str(run_dir)]
    for item in sets:
        args += ["--set", item]
    started = time.perf_counter()
    first = None
    with subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        output = []
        for line in process.stdout:
            output.append(line)
            if first is None and line.startswith("epoch 1/"):
                first = time.perf_counter() - started
        code = process.wait()
    wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"{' '.join(args)} exited {code}:\n{''.join(output[-30:])}")
    with open(run_dir / "history.csv") as handle:
        epoch_one = float(next(csv.DictReader(handle))["epoch_seconds"])
    return {"to_first_epoch_end": first or float("nan"), "epoch_1_seconds": epoch_one, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist", help="a Keras-layout mnist.npz for the small MLP case")
    parser.add_argument("--cifar", help="a class-folder copy of a few hundred CIFAR-10 JPEGs for the cifar10_94 cases")
    parser.add_argument("--backend", default="jax")
    parser.add_argument("--bf16", action="store_true", help="keep cifar10_94's bfloat16 (emulated, slow, on CPUs without it)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="compile-time-") as scratch:
        scratch = Path(scratch)
        cases = []
        if args.mnist:
            cases.append(("mnist_sparse (MLP 64-64, batch 32, 2 epochs)", str(ROOT / "configs/mnist_sparse.yaml"),
                          [f"data.path={args.mnist}", "train.epochs=2", "data.limit=2048"], True))
        if args.cifar:
            base = [f"data.path={args.cifar}", "data.dataset=folder", "data.image_size=[32, 32]", "train.epochs=2", "train.batch_size=128",
                    "model.whitening.sample=200", *([] if args.bf16 else ["train.mixed_precision=false"])]
            config = str(ROOT / "configs/cifar10_94.yaml")
            cases.append(("cifar10_94", config, base, True))
            cases += [
                ("cifar10_94, steps_per_execution 1", config, [*base, "compile.steps_per_execution=1"], False),
                ("cifar10_94, no train.ema", config, [*base, "train.ema=null"], False),
                ("cifar10_94, no evaluate.tta", config, [*base, "evaluate.tta=none"], False),
            ]
        for number, (name, config, sets, with_cache) in enumerate(cases):
            if with_cache:
                cache = str(scratch / f"cache{number}")
                rows.append((name, "cold (empty cache)", run(config, sets, cache, scratch / f"r{number}a", args.backend)))
                rows.append((name, "warm (second run)", run(config, sets, cache, scratch / f"r{number}b", args.backend)))
            rows.append((name, "cache off", run(config, sets, "off", scratch / f"r{number}c", args.backend)))
    print(f"| case | cache | to the first epoch's end | first epoch | wall |  ({args.backend}, load {os.getloadavg()[0]:.1f})")
    print("| --- | --- | --- | --- | --- |")
    for name, kind, numbers in rows:
        print(f"| {name} | {kind} | {numbers['to_first_epoch_end']:.1f} s | {numbers['epoch_1_seconds']:.1f} s | {numbers['wall']:.1f} s |")


if __name__ == "__main__":
    main()
