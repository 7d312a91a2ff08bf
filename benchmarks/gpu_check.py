"""The GPU check: train four cases on the GPU on JAX (and PyTorch) and print one table. One command, at most 8 minutes.

For a Linux machine with an NVIDIA GPU, JAX (CUDA) and PyTorch, no TensorFlow and no network:

    python benchmarks/gpu_check.py                    # every backend found (jax, torch), on the GPU
    python benchmarks/gpu_check.py --cpu              # the same on a CPU machine (CI runs it with --tiny)
    python benchmarks/gpu_check.py --data DIR         # real data: DIR/mnist.npz, DIR/cifar-10-batches-py/, DIR/cifar10-jpg/

``--data DIR`` takes what it finds there: ``mnist.npz``, CIFAR-10's pickled ``cifar-10-batches-py/``,
and the JPEG class folders ``cifar10-jpg/{train,test}/<class>/*.jpg`` (``../shared/data/cifar10-jpg.tar.gz``
unpacked; DIR may also be that folder itself); a case whose data is not there uses synthetic data.

What the machine lacks (Keras, pydantic, typer, ...) is installed from wheels carried beside this
script in ``benchmarks/gpu-wheels/`` (``--wheels DIR``), never from the network. Make them on a
machine with network, for every Python the GPU machine may have (binary wheels are per version):

    python benchmarks/gpu_check.py --download-wheels 3.11,3.12     # pip download, once per version

(``benchmarks/gpu-wheels/`` is in .gitignore.) It needs Python >= 3.10 (trainer's own floor); a
wheels folder made for other versions than the running one is named in one line with the command
that adds this one. trainer itself runs from this checkout (PYTHONPATH).

Cases: the MNIST MLP, the CIFAR-10 CNN, a frozen-backbone head (VGG16 without downloaded weights,
features cached) and ``cifar10_94`` (configs/cifar10_94.yaml as it is, on the JPEG folders). Each
is a real ``trainer run`` in a child process; the check asserts that the header's device line names
the GPU (``GPU x1: NVIDIA ...``) and the precision that ``train.mixed_precision: auto`` chooses for
its compute capability, then prints images/s and seconds of an epoch (the mean of epochs 2 on), the
first epoch's seconds (compiling: the children share one compile cache, empty when the check starts),
for the cases with ``data.augment`` the ratio of their epoch to the same run's epoch without it (a
second, shorter run with ``data.augment: null``), accuracy and peak GPU memory (``nvidia-smi``,
sampled; JAX allocates on demand for the check: ``XLA_PYTHON_CLIENT_PREALLOCATE=false``). Synthetic
images are learnable class patterns, so their accuracy shows the run learns, not the dataset's score.
A case that cannot run says why in its row; the exit status is 1 when any case failed.
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


PYTHON_VERSIONS = ("3.11", "3.12")  # what --download-wheels fetches by default: this project's Python and the GPU machines'
AUGMENTED_CASES = ("cifar10_cnn", "cifar10_94")  # their epoch is also timed without data.augment


@dataclass
class Result:
    case: str
    backend: str
    status: str = "ok"
    device: str = ""
    images_per_second: float | None = None
    epoch_seconds: float | None = None
    first_epoch_seconds: float | None = None  # compiling included
    augment_ratio: float | None = None  # the epoch with data.augment over the epoch without it
    accuracy: float | None = None
    peak_gpu_mib: float | None = None
    peak_rss_mib: float | None = None
    synthetic: bool = True


def missing_modules(names: dict[str, str]) -> list[str]:
    return [requirement for module, requirement in names.items() if importlib.util.find_spec(module) is None]


def download_command(wheels: Path, version: str) -> list[str]:
    """The ``pip download`` of what trainer needs, as binary wheels for CPython ``version`` on x86-64 Linux (run where there is network)."""
    return [
        sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--python-version", version,
        "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux_2_28_x86_64",
        "-d", str(wheels), *NEEDED.values(),
    ]


def wheel_pythons(wheels: Path) -> set[str]:
    """The CPython versions the binary wheels in ``wheels`` are for (``cp311`` -> ``3.11``); pure-Python wheels name none."""
    found = set()
    for path in wheels.glob("*.whl"):
        for tag in re.findall(r"-cp(\d)(\d+)-", path.name):
            found.add(f"{tag[0]}.{tag[1]}")
    return found


def install_missing(wheels: Path) -> list[str]:
    """pip-install, from the carried wheels only, what trainer needs and this machine lacks; returns what was installed."""
    missing = missing_modules(NEEDED)
    if not missing:
        return []
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    remedy = f"on a machine with network: python benchmarks/{Path(__file__).name} --download-wheels {here} --wheels {wheels}"
    if not wheels.is_dir():
        raise SystemExit(f"missing {', '.join(missing)} and no wheels in {wheels}; {remedy}")
    versions = wheel_pythons(wheels)
    if versions and here not in versions:
        raise SystemExit(f"{wheels} holds wheels for Python {', '.join(sorted(versions))}, this is Python {here} (missing: {', '.join(missing)}); {remedy}")
    command = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), *missing]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"pip install from {wheels} failed (Python {here}; wheels for {', '.join(sorted(versions)) or 'no version'}); {remedy}\n"
                         f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    importlib.invalidate_caches()
    return missing


def jpeg_folders(data: Path) -> Path | None:
    """The JPEG class folders under ``data``: ``data/cifar10-jpg/`` or ``data`` itself when it holds ``train/`` and ``test/``."""
    for candidate in (data / "cifar10-jpg", data):
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    return None


def write_data(folder: Path, tiny: bool, data: Path | None) -> dict[str, tuple[Path, bool]]:
    """Each data kind -> (its path, synthetic?): the real files under ``data`` where they are, else learnable synthetic ones."""
    found: dict[str, tuple[Path, bool]] = {}
    if data is not None:
        for kind, path in (("mnist", data / "mnist.npz"), ("cifar10", data / "cifar-10-batches-py"), ("cifar10_jpg", jpeg_folders(data))):
            if path is not None and path.exists():
                found[kind] = (path, False)
    sys.path.insert(0, str(ROOT))
    from tests.datagen import write_cifar10_dir, write_image_folders, write_mnist_npz

    if "mnist" not in found:
        found["mnist"] = (write_mnist_npz(folder / "mnist.npz", n_train=256 if tiny else 20_000, n_test=64 if tiny else 2_000, seed=0), True)
    if "cifar10" not in found:
        found["cifar10"] = (write_cifar10_dir(folder, n_per_batch=40 if tiny else 2_000, n_test=64 if tiny else 2_000, seed=0), True)
    if "cifar10_jpg" not in found:
        classes = tuple(f"class{number}" for number in range(10))
        root = write_image_folders(folder / "cifar10-jpg-synthetic", classes=classes, n_per_class=8 if tiny else 500, size=(32, 32),
                                   modes=("RGB",), formats=("jpg",), seed=0)
        found["cifar10_jpg"] = (root, True)
    return found


def cifar10_94_config(folder: Path, tiny: bool) -> dict:
    """configs/cifar10_94.yaml as it is, on the JPEG class folders (``--tiny``: a narrow network, 2 epochs of batch 64)."""
    import yaml

    config = yaml.safe_load((ROOT / "configs" / "cifar10_94.yaml").read_text())
    config["name"] = "gpu_cifar10_94"
    config["data"].update({"dataset": "folder", "path": str(folder), "image_size": [32, 32], "validation": "test"})
    if tiny:
        config["model"]["widths"] = [8, 16, 16]
        config["model"]["whitening"]["sample"] = 64
        config["train"].update({"epochs": 2, "batch_size": 32})
    return config


def case_configs(data: dict[str, tuple[Path, bool]], tiny: bool) -> dict[str, dict]:
    mnist, cifar, jpegs = data["mnist"][0], data["cifar10"][0], data["cifar10_jpg"][0]
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
            "optimizer": {"name": "adam", "learning_rate": 0.002}, "train": {**train, "epochs": 2 if tiny else epochs},
        },
        "frozen_head": {
            "name": "gpu_frozen_head", "data": {"dataset": "cifar10", "path": str(cifar), "validation": "test"},
            "model": {"type": "backbone_head", "backbone": "vgg16", "weights": "none", "trainable_backbone": False, "head": {"hidden_units": [64]}},
            "optimizer": {"name": "adam", "learning_rate": 0.001}, "train": {**train, "cache_features": True},
        },
        "cifar10_94": cifar10_94_config(jpegs, tiny),
    }


CASE_DATA = {"mnist_mlp": "mnist", "cifar10_cnn": "cifar10", "frozen_head": "cifar10", "cifar10_94": "cifar10_jpg"}


def plain_config(config: dict, tiny: bool) -> dict:
    """The same case without ``data.augment`` (and no TTA), 2-3 epochs: the denominator of the augmented-over-plain ratio."""
    plain = json.loads(json.dumps(config))
    plain["name"] = f"{config['name']}_plain"
    plain["data"]["augment"] = None
    plain["train"]["epochs"] = 2 if tiny else 3
    plain.pop("evaluate", None)
    return plain


def epoch_numbers(run_dir: Path) -> tuple[float | None, float | None, float | None]:
    """(first epoch's seconds, the mean epoch seconds of epochs 2 on (the first when there is one), their mean images/s) from history.csv."""
    rows = [line.split(",") for line in (run_dir / "history.csv").read_text().splitlines()]
    header, body = rows[0], [dict(zip(rows[0], row)) for row in rows[1:]]
    if not body or "epoch_seconds" not in header:
        return None, None, None
    later = body[1:] or body
    seconds = sum(float(row["epoch_seconds"]) for row in later) / len(later)
    rates = [float(row.get("examples_per_second") or 0) for row in later]
    return float(body[0]["epoch_seconds"]), seconds, (sum(rates) / len(rates)) or None


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


def child_run(name: str, config: dict, backend: str, cpu: bool, scratch: Path, left: float) -> tuple[int | None, str, Path, float | None]:
    """One ``trainer run`` child: (exit status or None when out of time, its output, its run directory, peak GPU MiB)."""
    import yaml

    path = scratch / f"{name}-{backend}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    run_dir = scratch / f"{name}-{backend}"
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1",
               XLA_PYTHON_CLIENT_PREALLOCATE="false", TRAINER_CACHE=str(scratch / "compile-cache"))
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
            return None, output, run_dir, memory.peak
    return process.returncode, output, run_dir, memory.peak


def run_case(name: str, config: dict, backend: str, cpu: bool, scratch: Path, deadline: float, gpu: tuple[str | None, str | None],
             tiny: bool = False) -> Result:
    result = Result(name, backend)
    left = deadline - time.monotonic()
    if left < 20:
        result.status = "skipped: the time budget (--budget) is spent"
        return result
    code, output, run_dir, result.peak_gpu_mib = child_run(name, config, backend, cpu, scratch, left)
    if code is None:
        result.status = "failed: out of the time budget (--budget)"
        return result
    if code != 0:
        result.status = why_failed(output)
        return result
    match = re.search(r"device\s+(.+)", output)
    result.device = " ".join(match.group(1).strip(" │|\t").split()) if match else ""  # the header is drawn in a box
    want_kind = "CPU" if cpu else "GPU"
    want_precision = "float32" if cpu else expected_precision(gpu[1])
    if name == "cifar10_94" and cpu:
        want_precision = "bfloat16"  # the config asks for it explicitly, not auto
    if not result.device.startswith(want_kind) or want_precision not in result.device or (not cpu and gpu[0] and gpu[0] not in result.device):
        result.status = f"failed: device line {result.device!r} should name the {want_kind}{' ' + gpu[0] if not cpu and gpu[0] else ''} and {want_precision}"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    result.accuracy = ((metrics.get("test_tta") or metrics.get("test")) or {}).get("accuracy")
    result.first_epoch_seconds, result.epoch_seconds, result.images_per_second = epoch_numbers(run_dir)
    if name in AUGMENTED_CASES and config["data"].get("augment") and result.epoch_seconds:
        left = deadline - time.monotonic()
        if left < 20:
            return result
        code, output, plain_dir, _ = child_run(f"{name}_plain", plain_config(config, tiny), backend, cpu, scratch, left)
        if code == 0:
            plain = epoch_numbers(plain_dir)[1]
            result.augment_ratio = result.epoch_seconds / plain if plain else None
    return result


def table(results: list[Result], cpu: bool, synthetic: bool) -> str:
    memory = "peak GPU MiB" if not cpu else "peak GPU MiB (n/a on --cpu)"
    lines = [
        f"| case | backend | device | images/s | epoch s | first epoch s (compile) | augmented / plain | accuracy{' (synthetic data)' if synthetic else ''} | "
        f"{memory} | status |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]

    def number(value, fmt):
        return format(value, fmt) if value is not None else "-"

    for r in results:
        accuracy = number(r.accuracy, ".4f") + (" (synthetic)" if r.synthetic and not synthetic and r.accuracy is not None else "")
        lines.append(
            f"| {r.case} | {r.backend} | {r.device or '-'} | {number(r.images_per_second, ',.0f')} | {number(r.epoch_seconds, '.2f')} | "
            f"{number(r.first_epoch_seconds, '.2f')} | {number(r.augment_ratio, '.2f')} | {accuracy} | {number(r.peak_gpu_mib, ',.0f')} | {r.status} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (a machine without a GPU; CI)")
    parser.add_argument("--tiny", action="store_true", help="tiny data and models: seconds per case (CI)")
    parser.add_argument("--backends", default=None, help="comma-separated: jax,torch (default: those installed)")
    parser.add_argument("--wheels", type=Path, default=HERE / "gpu-wheels", help="where the carried wheels are")
    parser.add_argument("--data", type=Path, default=None,
                        help="a folder with mnist.npz, cifar-10-batches-py/ and/or cifar10-jpg/ (JPEG class folders); what is absent is synthetic")
    parser.add_argument("--only", default=None, help="comma-separated case names (mnist_mlp, cifar10_cnn, frozen_head, cifar10_94)")
    parser.add_argument("--budget", type=float, default=BUDGET_SECONDS,
                        help=f"seconds for all cases (default {BUDGET_SECONDS}: the GPU machine's 8 minutes; slower CPUs need more)")
    parser.add_argument("--download-wheels", default=None, metavar="VERSIONS",
                        help=f"on a machine with network: pip download the wheels for these Pythons (e.g. {','.join(PYTHON_VERSIONS)}) into --wheels, then stop")
    args = parser.parse_args(argv)
    if args.download_wheels:
        for version in args.download_wheels.split(","):
            subprocess.run(download_command(args.wheels, version.strip()), check=True)
        print(f"{args.wheels}: wheels for Python {', '.join(sorted(wheel_pythons(args.wheels)))}")
        return 0
    started = time.monotonic()
    deadline = started + args.budget
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
        data = write_data(scratch, args.tiny, args.data)
        configs = case_configs(data, args.tiny)
        names = args.only.split(",") if args.only else list(configs)
        unknown = [name for name in names if name not in configs]
        if unknown:
            raise SystemExit(f"--only: unknown case {', '.join(unknown)}; the cases: {', '.join(configs)}")
        for backend in backends:
            for name in names:
                results.append(run_case(name, configs[name], backend, args.cpu, scratch, deadline, gpu, args.tiny))
                results[-1].synthetic = data[CASE_DATA[name]][1]
                print(f"{name} on {backend}: {results[-1].status}", file=sys.stderr, flush=True)
        synthetic = all(r.synthetic for r in results)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    machine = f"{gpu[0]} (compute capability {gpu[1]})" if gpu[0] else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    print(f"GPU check {when} on {machine}, Python {platform.python_version()}" + (f"; installed from wheels: {', '.join(installed)}" if installed else ""))
    print(table(results, args.cpu, synthetic))
    print(f"({time.monotonic() - started:.0f} s in all)")
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
