"""Run every benchmark case: trainer against a plain Keras baseline, side by side, in this process tree.

    python benchmarks/prepare_data.py            # once: local data from ../shared/data
    python benchmarks/run.py --repeats 3         # prints a Markdown table of medians and ratios

Each case runs the baseline command and the trainer command alternately (``--repeats`` times each),
measures the wall time of the whole command and the peak resident memory of the child process
(``os.wait4``'s rusage), and reports medians and the ratio trainer / baseline. A case names its Keras
backend (``KERAS_BACKEND``, the same for both sides): ``mnist_mlp`` runs on TensorFlow, ``mnist_mlp_jax``
is the same script and config on JAX.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import cifar10_94

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable


@dataclass
class Measurement:
    seconds: float
    peak_mib: float
    stdout: str


@dataclass
class Case:
    name: str
    baseline: list[str]
    trainer: list[str]
    target: float
    metric: str = "wall"  # "wall" or "memory"
    backend: str = "tensorflow"  # KERAS_BACKEND for both sides
    timing: Optional[Callable[[str, str, Path], float]] = None  # (side, stdout, run dir) -> the seconds compared, instead of the wall time
    summary: Optional[Callable[[float, float], str]] = None  # (baseline s, trainer s) -> a line under the table
    samples: dict[str, list[Measurement]] = field(default_factory=lambda: {"baseline": [], "trainer": []})


def measure(command: list[str], env: dict[str, str]) -> Measurement:
    """Wall time and peak RSS of one command, run to completion."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    output = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"command failed ({process.returncode}): {' '.join(command)}\n{output[-3000:]}")
    return Measurement(seconds, usage.ru_maxrss / 1024.0, output)


def cases(data: Path, scratch: Path, only: set[str] | None, limit: int = cifar10_94.DEFAULT_LIMIT) -> list[Case]:
    mnist = data / "mnist-60k2k.npz"
    cifar = data / "cifar10-bench"
    run_dir = str(scratch / "run")
    trainer = [PY, "-m", "trainer"]
    mnist_baseline = [PY, str(HERE / "baselines" / "mnist_mlp_keras.py"), str(mnist), "--epochs", "3"]
    mnist_trainer = [*trainer, "run", str(HERE / "configs" / "mnist_mlp.yaml"), "--set", f"data.path={mnist}", "--run-dir", run_dir]
    all_cases = [
        Case("mnist_mlp", mnist_baseline, mnist_trainer, 0.45),
        # The same plain script and config on JAX (a CPU machine: issue 20's target is 0.6).
        Case("mnist_mlp_jax", mnist_baseline, mnist_trainer, 0.6, backend="jax"),
        Case(
            "vgg16_head",
            [PY, str(HERE / "baselines" / "vgg16_head_keras.py"), str(cifar), "--train", "2000", "--val", "500", "--epochs", "5"],
            [*trainer, "run", str(HERE / "configs" / "cifar10_vgg16.yaml"), "--set", f"data.path={cifar}", "--run-dir", run_dir],
            0.30,
        ),
        Case(
            "cifar10_cnn",
            [PY, str(HERE / "baselines" / "cifar10_cnn_keras.py"), str(data / "cifar10-jpg"), "--epochs", "3"],
            [*trainer, "run", str(HERE / "configs" / "cifar10_cnn.yaml"), "--set", f"data.path={data / 'cifar10-jpg'}", "--run-dir", run_dir],
            0.8,
        ),
        Case(  # one epoch each, timed by the epoch itself (benchmarks/cifar10_94.py)
            "cifar10_94",
            *cifar10_94.commands(data, run_dir, limit),
            1.0,
            timing=lambda side, stdout, run: cifar10_94.epoch_seconds(side, stdout, run),
            summary=lambda base_s, ours_s: cifar10_94.summary(limit, base_s, ours_s),
        ),
        Case("help", [PY, "-c", "import tensorflow"], [*trainer, "--help"], 0.25),
        Case(
            "validate",
            [PY, "-c", "import tensorflow"],
            [*trainer, "validate", str(ROOT / "configs" / "mnist_sparse.yaml")],
            0.25,
        ),
    ]
    unknown = sorted((only or set()) - {case.name for case in all_cases})
    if unknown:
        raise SystemExit(f"unknown case(s) {', '.join(unknown)}; the cases: {' '.join(case.name for case in all_cases)}")
    return [case for case in all_cases if only is None or case.name in only]


def cpu_description() -> str:
    """The CPU's model name and whether it has AVX-512 (oneDNN's and XLA's fast paths depend on it), from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    fields = {key.strip(): value.strip() for key, value in (line.split(":", 1) for line in text.splitlines() if ":" in line)}
    model = fields.get("model name", "unknown CPU")
    flags = fields.get("flags", "").split()
    avx512 = sorted(flag for flag in flags if flag.startswith("avx512"))
    return f"{model}, {'AVX-512 (' + ' '.join(avx512) + ')' if avx512 else 'no AVX-512'}"


def accuracy_of(case: Case, side: str, measurement: Measurement, scratch: Path) -> float | None:
    """Test (or validation) accuracy each side reported, to check that speed did not cost accuracy."""
    if side == "baseline":
        for line in reversed(measurement.stdout.splitlines()):
            if line.startswith("{"):
                values = json.loads(line)
                return values.get("test_accuracy", values.get("val_accuracy"))
        return None
    metrics_file = scratch / "run" / "metrics.json"
    if not metrics_file.exists():
        return None
    metrics = json.loads(metrics_file.read_text())
    return (metrics.get("test") or {}).get("accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/tmp/trainer-data"), help="what prepare_data.py wrote")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="case names: mnist_mlp mnist_mlp_jax vgg16_head cifar10_cnn cifar10_94 help validate")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--limit", type=cifar10_94.limit_argument, default=cifar10_94.DEFAULT_LIMIT,
                        help="cifar10_94: training images of the timed epoch (0: all 50,000)")
    args = parser.parse_args()

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    load_before = os.getloadavg()
    scratch = Path(tempfile.mkdtemp(prefix="trainer-bench-"))
    rows, raw = [], {}
    try:
        for case in cases(args.data, scratch, set(args.only) if args.only else None, args.limit):
            accuracies: dict[str, list[float]] = {"baseline": [], "trainer": []}
            for repeat in range(args.repeats):
                order = ("baseline", "trainer") if repeat % 2 == 0 else ("trainer", "baseline")
                for side in order:
                    shutil.rmtree(scratch / "run", ignore_errors=True)
                    result = measure(case.baseline if side == "baseline" else case.trainer, dict(env, KERAS_BACKEND=case.backend))
                    case.samples[side].append(result)
                    if case.timing is not None:
                        result.seconds = case.timing(side, result.stdout, scratch / "run")
                    accuracy = accuracy_of(case, side, result, scratch)
                    if accuracy is not None:
                        accuracies[side].append(accuracy)
                    print(f"{case.name:13s} {side:8s} run {repeat + 1}: {result.seconds:7.2f} s  {result.peak_mib:7.0f} MiB", file=sys.stderr)
            base_s = statistics.median(m.seconds for m in case.samples["baseline"])
            ours_s = statistics.median(m.seconds for m in case.samples["trainer"])
            base_m = statistics.median(m.peak_mib for m in case.samples["baseline"])
            ours_m = statistics.median(m.peak_mib for m in case.samples["trainer"])
            acc = {k: statistics.median(v) for k, v in accuracies.items() if v}
            rows.append((case, base_s, ours_s, base_m, ours_m, acc))
            raw[case.name] = {
                "baseline_seconds": [m.seconds for m in case.samples["baseline"]],
                "trainer_seconds": [m.seconds for m in case.samples["trainer"]],
                "baseline_peak_mib": [m.peak_mib for m in case.samples["baseline"]],
                "trainer_peak_mib": [m.peak_mib for m in case.samples["trainer"]],
                "accuracy": acc,
            }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    load_after = os.getloadavg()
    print(f"\nMachine: {platform.machine()}, {cpu_description()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"medians of {args.repeats} runs each; load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after\n")
    print("| case | baseline s | trainer s | ratio (target) | peak MiB baseline / trainer (ratio) | accuracy baseline / trainer |")
    print("| --- | --- | --- | --- | --- | --- |")
    for case, base_s, ours_s, base_m, ours_m, acc in rows:
        ratio = ours_s / base_s
        verdict = "ok" if ratio <= case.target else "MISSED"
        accuracy = f"{acc['baseline']:.4f} / {acc['trainer']:.4f}" if len(acc) == 2 else "-"
        print(
            f"| {case.name} | {base_s:.2f} | {ours_s:.2f} | {ratio:.2f} (<= {case.target}, {verdict}) | "
            f"{base_m:.0f} / {ours_m:.0f} ({ours_m / base_m:.2f}) | {accuracy} |"
        )
    for case, base_s, ours_s, *_ in rows:
        if case.summary is not None:
            print(f"\n{case.summary(base_s, ours_s)}")
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2))


if __name__ == "__main__":
    main()
