"""Where the time of one ``trainer`` command goes: each step of the run, the backbone's features,
each checkpoint write, with seconds since the interpreter started.

    python benchmarks/phases.py run benchmarks/configs/cifar10_vgg16.yaml --set data.path=/tmp/trainer-data/cifar10-bench --run-dir /tmp/p1

Takes the arguments of ``trainer``; the timings go to stderr as ``[  2.13] load_data 0.55 s``,
in the order things end. Only a measuring aid: it wraps functions, it changes nothing they do.
"""
from __future__ import annotations

import atexit
import functools
import sys
import time

STARTED = time.perf_counter()


def mark(text: str) -> None:
    print(f"[{time.perf_counter() - STARTED:7.2f}] {text}", file=sys.stderr, flush=True)


def timed(owner, name: str, label: str | None = None) -> None:
    original = getattr(owner, name, None)
    if original is None:  # a step renamed or gone (an older or newer trainer): say so, time the rest
        mark(f"(not timed: {getattr(owner, '__name__', owner)}.{name} does not exist)")
        return

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        begun = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            mark(f"{label or name} {time.perf_counter() - begun:.2f} s")

    setattr(owner, name, wrapper)


def main() -> None:
    from trainer.cli import entrypoint
    import importlib

    common = importlib.import_module("trainer.cli.common")
    from trainer.report import build
    from trainer.run import features, training
    from trainer.run.checkpoint import writer

    timed(common, "quiet_tensorflow", "import tensorflow and keras")
    for step in ("start_devices", "load_data", "build_and_compile", "write_run_files", "fit", "keep_last_then_use_best", "test_figures", "test_with_tta", "finish"):
        timed(training.Training, step)
    timed(features, "compute_features", "backbone features")
    timed(writer.CheckpointWriter, "_write", "checkpoint written (background thread)")
    timed(training, "write_h5_atomically", "model.h5 written")
    timed(build, "report_at_end", "report.html written")
    atexit.register(mark, "exit handlers")
    sys.argv = ["trainer", *sys.argv[1:]]
    entrypoint()


if __name__ == "__main__":
    main()
