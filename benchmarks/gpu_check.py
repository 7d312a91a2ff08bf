"""The GPU check: train three cases on the GPU on JAX (and PyTorch) and print one table. One command, at most 8 minutes.

For a Linux machine with an NVIDIA GPU, JAX (CUDA) and PyTorch, no TensorFlow and no network:

    python benchmarks/gpu_check.py                    # every backend found (jax, torch), on the GPU
    python benchmarks/gpu_check.py --cpu              # the same on a CPU machine (CI runs it with --tiny)
    python benchmarks/gpu_check.py --data DIR         # real data: DIR/mnist.npz and DIR/cifar-10-batches-py/

What the machine lacks (Keras, pydantic, typer, ...) is installed from wheels carried beside this
script in ``benchmarks/gpu-wheels/`` (``--wheels DIR``), never from the network. Make them on a
machine with network, for the GPU machine's Python (3.11 here):

    pip download --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 \\
        -d benchmarks/gpu-wheels 'keras>=3.15,<4' 'pyyaml>=6' 'typer>=0.12' 'rich>=13' \\
        'pydantic>=2.6,<3' 'h5py>=3.10' 'pillow>=10' 'matplotlib>=3.8'

(``benchmarks/gpu-wheels/`` is in .gitignore.) trainer itself runs from this checkout (PYTHONPATH).

Cases: the MNIST MLP, the CIFAR-10 CNN, and a frozen-backbone head (VGG16 without downloaded
weights, features cached). Each is a real ``trainer run`` in a child process; the check asserts
that the header's device line names the GPU (``GPU x1: NVIDIA ...``) and the precision that
``train.mixed_precision: auto`` chooses for its compute capability, then prints images/s, epoch
seconds, accuracy and peak GPU memory (``nvidia-smi``, sampled; JAX allocates on demand for the
check: ``XLA_PYTHON_CLIENT_PREALLOCATE=false``). Without ``--data`` the images are synthetic
(learnable class patterns), so the accuracy shows the run learns, not the dataset's score. A case
that cannot run says why in its row (for example: trainer's data path still needs TensorFlow);
the exit status is 1 when any case failed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUDGET_SECONDS = 8 * 60
# import name -> requirement, for what trainer needs besides a backend (pyproject's dependencies, TensorFlow left out)
NEEDED = {
    "keras": "keras>=3.15,<4", "yaml": "pyyaml>=6", "typer": "typer>=0.12", "rich": "rich>=13", "pydantic": "pydantic>=2.6,<3",
    "numpy": "numpy>=1.26", "h5py": "h5py>=3.10", "PIL": "pillow>=10", "matplotlib": "matplotlib>=3.8",
}
BACKEND_MODULES = {"jax": "jax", "torch": "torch"}


@dataclass
class Result:
    case: str
    backend: str
    status: str = "ok"
    device: str = ""
    images_per_second: float | None = None
    epoch_seconds: float | None = None
    accuracy: float | None = None
    peak_gpu_mib: float | None = None
    peak_rss_mib: float | None = None


def missing_modules(names: dict[str, str]) -> list[str]:
    return [requirement for module, requirement in names.items() if importlib.util.find_spec(module) is None]


def install_missing(wheels: Path) -> list[str]:
    """pip-install, from the carried wheels only, what trainer needs and this machine lacks; returns what was installed."""
    missing = missing_modules(NEEDED)
    if not missing:
        return []
    if not wheels.is_dir():
        raise SystemExit(f"missing {', '.join(missing)} and no wheels in {wheels}; make them with the pip download line in {Path(__file__).name}'s docstring.")
    command = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), *missing]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"pip install from {wheels} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    importlib.invalidate_caches()
    return missing


def write_data(folder: Path, tiny: bool, data: Path | None) -> tuple[Path, Path, bool]:
    """(mnist.npz, the CIFAR-10 folder, synthetic?): the real files under ``data`` when given, else learnable synthetic ones."""
    if data is not None:
        return data / "mnist.npz", data / "cifar-10-batches-py", False
    sys.path.insert(0, str(ROOT))
    from tests.datagen import write_cifar10_dir, write_mnist_npz

    mnist = write_mnist_npz(folder / "mnist.npz", n_train=256 if tiny else 20_000, n_test=64 if tiny else 2_000, seed=0)
    cifar = write_cifar10_dir(folder, n_per_batch=40 if tiny else 2_000, n_test=64 if tiny else 2_000, seed=0)
    return mnist, cifar, True


def case_configs(mnist: Path, cifar: Path, tiny: bool) -> dict[str, dict]:
    epochs, batch = (1, 32) if tiny else (3, 128)
    train = {"epochs": epochs, "batch_size": batch, "shuffle": True}
    return {
        "mnist_mlp": {
            "name": "gpu_mnist_mlp", "data": {"dataset": "mnist", "path": str(mnist), "validation": "test"},
            "model": {"type": "mlp", "hidden_units": [64, 64]}, "optimizer": {"name": "adam", "learning_rate": 0.001}, "train": train,
        },
        "cifar10_cnn": {
            "name": "gpu_cifar10_cnn", "data": {"dataset": "cifar10", "path": str(cifar), "validation": "test", "augment": {"flip": "horizontal", "crop": 4}},
            "model": {"type": "cnn", "blocks": [8] if tiny else [32, 64, 128], "convs_per_block": 1 if tiny else 2, "batch_norm": True,
                      "head": {"hidden_units": [16] if tiny else [256], "dropout": 0.3}},
            "optimizer": {"name": "adam", "learning_rate": 0.002}, "train": train,
        },
        "frozen_head": {
            "name": "gpu_frozen_head", "data": {"dataset": "cifar10", "path": str(cifar), "validation": "test"},
            "model": {"type": "backbone_head", "backbone": "vgg16", "weights": "none", "trainable_backbone": False, "head": {"hidden_units": [64]}},
            "optimizer": {"name": "adam", "learning_rate": 0.001}, "train": {**train, "cache_features": True},
        },
    }


class GpuMemory:
    """The peak of ``nvidia-smi``'s used memory while a case runs (sampled every 0.2 s); None without nvidia-smi."""

    def __init__(self) -> None:
        self.tool = shutil.which("nvidia-smi")
        self.peak: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            try:
                out = subprocess.run([self.tool, "--query-gpu=memory.used", "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5).stdout
                used = max(float(v) for v in out.split())
            except (OSError, ValueError, subprocess.SubprocessError):
                continue
            self.peak = used if self.peak is None else max(self.peak, used)

    def __enter__(self) -> "GpuMemory":
        if self.tool:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.tool:
            self._thread.join(timeout=6)


def expected_precision(capability: str | None) -> str:
    """What ``train.mixed_precision: auto`` must choose for this GPU (trainer.runtime.devices.choose_precision, re-stated)."""
    if capability is None:
        return "float32"
    major, minor = (int(p) for p in capability.split(".")[:2])
    return "mixed bfloat16" if (major, minor) >= (8, 0) else "mixed float16" if major >= 7 else "float32"


def gpu_capability() -> tuple[str | None, str | None]:
    """(name, compute capability) of GPU 0 from nvidia-smi; (None, None) without it."""
    tool = shutil.which("nvidia-smi")
    if not tool:
        return None, None
    done = subprocess.run([tool, "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True, text=True)
    first = (done.stdout.strip().splitlines() or [""])[0]
    parts = [p.strip() for p in first.split(",")]
    return (parts[0], parts[1]) if len(parts) == 2 else (None, None)


def why_failed(output: str) -> str:
    """One line for a failed case: the first cause worth reading."""
    if re.search(r"No module named '?tensorflow", output):
        return "failed: needs TensorFlow (trainer's data path still imports it on this backend)"
    for line in reversed(output.strip().splitlines()):
        line = line.strip()
        if line.startswith(("error:", "Error", "ModuleNotFoundError", "ImportError", "RuntimeError", "ValueError")) or "Error:" in line:
            return f"failed: {line[:160]}"
    return f"failed: {output.strip().splitlines()[-1][:160] if output.strip() else 'no output'}"


def run_case(name: str, config: dict, backend: str, cpu: bool, scratch: Path, deadline: float, gpu: tuple[str | None, str | None]) -> Result:
    import yaml

    result = Result(name, backend)
    left = deadline - time.monotonic()
    if left < 20:
        result.status = "skipped: the 8-minute budget is spent"
        return result
    path = scratch / f"{name}-{backend}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    run_dir = scratch / f"{name}-{backend}"
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1",
               XLA_PYTHON_CLIENT_PREALLOCATE="false")
    if cpu:
        env.update(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    command = [sys.executable, "-m", "trainer", "run", str(path), "--run-dir", str(run_dir)]
    with GpuMemory() as memory:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=scratch)
        try:
            output, _ = process.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
            result.status = "failed: out of the 8-minute budget"
            return result
    result.peak_gpu_mib = memory.peak
    if process.returncode != 0:
        result.status = why_failed(output)
        return result
    match = re.search(r"device\s+(.+)", output)
    result.device = " ".join(match.group(1).strip(" │|\t").split()) if match else ""  # the header is drawn in a box
    want_kind = "CPU" if cpu else "GPU"
    want_precision = "float32" if cpu else expected_precision(gpu[1])
    if not result.device.startswith(want_kind) or want_precision not in result.device or (not cpu and gpu[0] and gpu[0] not in result.device):
        result.status = f"failed: device line {result.device!r} should name the {want_kind}{' ' + gpu[0] if not cpu and gpu[0] else ''} and {want_precision}"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    result.accuracy = (metrics.get("test") or {}).get("accuracy")
    rows = [line.split(",") for line in (run_dir / "history.csv").read_text().splitlines()]
    header, body = rows[0], rows[1:]
    if body and "epoch_seconds" in header:
        last = dict(zip(header, body[-1]))  # the last epoch: compiled, warm
        result.epoch_seconds = float(last["epoch_seconds"])
        result.images_per_second = float(last.get("examples_per_second") or 0) or None
    return result


def table(results: list[Result], cpu: bool, synthetic: bool) -> str:
    memory = "peak GPU MiB" if not cpu else "peak GPU MiB (n/a on --cpu)"
    lines = [
        f"| case | backend | device | images/s | epoch s | accuracy{' (synthetic data)' if synthetic else ''} | {memory} | status |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]

    def number(value, fmt):
        return format(value, fmt) if value is not None else "-"

    for r in results:
        lines.append(
            f"| {r.case} | {r.backend} | {r.device or '-'} | {number(r.images_per_second, ',.0f')} | {number(r.epoch_seconds, '.2f')} | "
            f"{number(r.accuracy, '.4f')} | {number(r.peak_gpu_mib, ',.0f')} | {r.status} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (a machine without a GPU; CI)")
    parser.add_argument("--tiny", action="store_true", help="tiny data and models: seconds per case (CI)")
    parser.add_argument("--backends", default=None, help="comma-separated: jax,torch (default: those installed)")
    parser.add_argument("--wheels", type=Path, default=HERE / "gpu-wheels", help="where the carried wheels are")
    parser.add_argument("--data", type=Path, default=None, help="a folder with mnist.npz and cifar-10-batches-py/ (default: synthetic)")
    parser.add_argument("--only", default=None, help="comma-separated case names (mnist_mlp, cifar10_cnn, frozen_head)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    deadline = started + BUDGET_SECONDS
    installed = install_missing(args.wheels)
    backends = args.backends.split(",") if args.backends else [b for b, module in BACKEND_MODULES.items() if importlib.util.find_spec(module)]
    if not backends:
        raise SystemExit("neither JAX nor PyTorch is installed: nothing to check.")
    gpu = (None, None) if args.cpu else gpu_capability()
    if not args.cpu and gpu[0] is None:
        raise SystemExit("no NVIDIA GPU visible (nvidia-smi found none); use --cpu on a CPU machine.")
    results = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        scratch = Path(folder)
        mnist, cifar, synthetic = write_data(scratch, args.tiny, args.data)
        configs = case_configs(mnist, cifar, args.tiny)
        names = args.only.split(",") if args.only else list(configs)
        for backend in backends:
            for name in names:
                results.append(run_case(name, configs[name], backend, args.cpu, scratch, deadline, gpu))
                print(f"{name} on {backend}: {results[-1].status}", file=sys.stderr, flush=True)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    machine = f"{gpu[0]} (compute capability {gpu[1]})" if gpu[0] else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    print(f"GPU check {when} on {machine}, Python {platform.python_version()}" + (f"; installed from wheels: {', '.join(installed)}" if installed else ""))
    print(table(results, args.cpu, synthetic))
    print(f"({time.monotonic() - started:.0f} s in all)")
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
