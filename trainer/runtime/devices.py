"""Choosing the device on the backend that trains: GPU detection, memory settings and mixed precision.

Each backend is asked through its own package only (``tf.config``, ``jax.local_devices()``,
``torch.cuda``). The decisions are plain functions of what the backend reports, so they are
tested without a GPU: every ``configure_*`` takes a stand-in for the backend's device API.

``train.mixed_precision: auto`` = ``mixed_bfloat16`` on GPUs of compute capability 8.0 and newer
(Ampere, Hopper: bfloat16 needs no loss scaling), ``mixed_float16`` on 7.x (Volta, Turing: Keras
wraps the optimizer in a ``LossScaleOptimizer`` when it compiles under that policy), float32 on
older GPUs, on GPUs whose capability the backend does not report, and on CPUs.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from trainer.errors import BadInputError

# Tensor cores that make float16 pay start with Volta (compute capability 7.0); bfloat16 with Ampere (8.0).
MIXED_PRECISION_MIN_CAPABILITY = (7, 0)
BFLOAT16_MIN_CAPABILITY = (8, 0)
FLOAT32 = "float32"

# How to get a GPU build of each backend, named in the "no GPU" refusal.
GPU_INSTALL = {
    "tensorflow": "pip install 'tensorflow[and-cuda]'",
    "jax": "pip install 'jax[cuda13]'",
    "torch": "pip install torch (a CUDA build: https://pytorch.org/get-started/locally/)",
}
BACKEND_NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}


@dataclass(frozen=True)
class Gpu:
    """One GPU as a backend reports it: its name and, when known, its compute capability."""

    name: str
    capability: tuple[int, int] | None = None


@dataclass
class DeviceInfo:
    kind: str  # "gpu" or "cpu"
    description: str
    gpus: list[str] = field(default_factory=list)
    mixed_precision: bool = False
    memory_growth: bool = False
    backend: str = "tensorflow"
    precision: str = FLOAT32  # the Keras dtype policy: float32, mixed_float16 or mixed_bfloat16
    memory: str = ""  # how GPU memory is taken (TensorFlow memory growth, JAX preallocation, PyTorch's allocator)

    def to_dict(self) -> dict[str, Any]:
        """``metrics.json``'s ``device`` entry."""
        return {
            "kind": self.kind,
            "description": self.description,
            "gpus": list(self.gpus),
            "mixed_precision": self.mixed_precision,
            "memory_growth": self.memory_growth,
            "backend": self.backend,
            "precision": self.precision,
            "loss_scaling": self.precision == "mixed_float16",
            "memory": self.memory,
        }

    def trained_on(self) -> dict[str, Any]:
        """``manifest.json``'s ``trained_on`` entry: the backend, the devices and the precision of the run."""
        return {"backend": self.backend, "kind": self.kind, "devices": list(self.gpus) or ["CPU"], "precision": self.precision}


def choose_kind(requested: str, gpu_count: int, backend: str = "tensorflow") -> str:
    """``auto`` -> gpu when one is visible; ``gpu`` with none visible is the user's mistake."""
    if requested == "gpu" and gpu_count == 0:
        name = BACKEND_NAMES.get(backend, backend)
        raise BadInputError(
            f"device: gpu was requested but {name} sees no GPU on this machine; "
            f"set device: auto (or cpu), or install a CUDA-enabled {name} ({GPU_INSTALL.get(backend, '')})."
        )
    if requested == "cpu":
        return "cpu"
    return "gpu" if gpu_count else "cpu"


def parse_capability(value: Any) -> tuple[int, int] | None:
    """A compute capability as (major, minor) from ``(8, 0)``, ``"8.0"`` or ``"sm_80"``; None when unreadable."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        try:
            return int(value[0]), int(value[1])
        except (TypeError, ValueError):
            return None
    text = str(value).strip()
    match = re.fullmatch(r"(\d+)\.(\d+)", text) or re.fullmatch(r"sm_(\d+)(\d)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def lowest_capability(gpus: list[Gpu]) -> tuple[int, int] | None:
    """The capability every GPU has (the lowest); None when any GPU's is unknown."""
    capabilities = [gpu.capability for gpu in gpus]
    if not capabilities or any(c is None for c in capabilities):
        return None
    return min(capabilities)  # type: ignore[type-var]


def choose_precision(setting: Any, kind: str, capability: tuple[int, int] | None) -> str:
    """The Keras dtype policy for ``train.mixed_precision`` on this device.

    ``auto``: bfloat16 from compute capability 8.0, float16 on 7.x, float32 otherwise (CPUs, older
    or unknown GPUs). ``true``: mixed precision on a GPU (bfloat16 where it runs, else float16); on
    a CPU it is refused. ``bfloat16``: mixed bfloat16 anywhere (opt-in on CPUs). ``false``: float32.
    """
    if setting == "bfloat16":
        return "mixed_bfloat16"
    if setting is False:
        return FLOAT32
    if setting is True and kind != "gpu":
        raise BadInputError(
            "train.mixed_precision: true needs a GPU (float16 on a CPU is slower, not faster); "
            "set it to auto or false (or bfloat16 for mixed bfloat16 on a CPU)."
        )
    if kind != "gpu":
        return FLOAT32
    if capability is not None and tuple(capability) >= BFLOAT16_MIN_CAPABILITY:
        return "mixed_bfloat16"
    if setting is True or (capability is not None and tuple(capability) >= MIXED_PRECISION_MIN_CAPABILITY):
        return "mixed_float16"
    return FLOAT32


def wants_mixed_precision(setting: Any, kind: str, capability: tuple[int, int] | None) -> bool:
    """Whether ``choose_precision`` turns mixed precision on (``true`` on a CPU is refused)."""
    return choose_precision(setting, kind, capability) != FLOAT32


def cpu_has_bfloat16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512_BF16 or AMX), which oneDNN uses for bf16 convolutions."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
                cpuinfo = handle.read(1 << 20)
        except OSError:
            return False
    flags = set(cpuinfo.split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def wants_cpu_bfloat16(setting: Any) -> bool:
    """``train.mixed_precision: bfloat16`` on a CPU: mixed bfloat16 (2-3x faster convolutions on CPUs with bf16 instructions).

    Opt-in, not part of ``auto``: it changes numerics, and a bfloat16 model does not export to
    ONNX or LiteRT as is.
    """
    return setting == "bfloat16"


def memory_note(backend: str, environ: Mapping[str, str] | None = None) -> str:
    """How the backend takes GPU memory, as the run reports it. JAX's settings are the user's: read, never set."""
    environ = os.environ if environ is None else environ
    if backend == "tensorflow":
        return "memory growth"
    if backend == "jax":
        preallocate = environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "").strip().lower()
        fraction = environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "").strip()[:16]
        allocator = environ.get("XLA_PYTHON_CLIENT_ALLOCATOR", "").strip()
        if preallocate in ("false", "0") or allocator == "platform":
            return "JAX allocates on demand" + (" (XLA_PYTHON_CLIENT_ALLOCATOR=platform)" if allocator == "platform" else " (XLA_PYTHON_CLIENT_PREALLOCATE=false)")
        share = f"{fraction} (XLA_PYTHON_CLIENT_MEM_FRACTION)" if fraction else "75%"
        return f"JAX preallocates {share} of GPU memory; XLA_PYTHON_CLIENT_PREALLOCATE=false allocates on demand"
    if backend == "torch":
        conf = environ.get("PYTORCH_CUDA_ALLOC_CONF", "").strip()[:120]
        return "PyTorch caching allocator" + (f" (PYTORCH_CUDA_ALLOC_CONF={conf})" if conf else "")
    return ""


def describe(kind: str, backend: str, gpus: list[Gpu], precision: str, note: str = "") -> str:
    """The header's device line: ``GPU x1: NVIDIA H200 (JAX, mixed bfloat16)`` / ``CPU (TensorFlow, float32)``."""
    name = BACKEND_NAMES.get(backend, backend)
    where = (f"GPU x{len(gpus)}: {', '.join(gpu.name for gpu in gpus)}" if kind == "gpu" else "CPU") + note
    numbers = precision.replace("mixed_", "mixed ") if precision != FLOAT32 else FLOAT32
    return f"{where} ({name}, {numbers})"


def apply_precision(precision: str) -> None:
    """Set Keras's global dtype policy (``start_runtime`` resets it to float32 before each run)."""
    if precision != FLOAT32:
        import keras

        keras.mixed_precision.set_global_policy(precision)


# ----------------------------------------------------------------------------- per backend


def tensorflow_gpus(tf_config: Any) -> list[Gpu]:
    """TensorFlow's physical GPUs with their names and capabilities (``get_device_details``)."""
    gpus = []
    for gpu in tf_config.list_physical_devices("GPU"):
        details = tf_config.experimental.get_device_details(gpu) or {}
        gpus.append(Gpu(str(details.get("device_name", getattr(gpu, "name", "GPU"))), parse_capability(details.get("compute_capability"))))
    return gpus


def jax_gpus(devices: list[Any]) -> list[Gpu]:
    """JAX's local GPU devices (``jax.local_devices()``); ``compute_capability`` is a string like ``"9.0"`` on CUDA."""
    return [
        Gpu(str(getattr(d, "device_kind", "GPU")), parse_capability(getattr(d, "compute_capability", None)))
        for d in devices if getattr(d, "platform", "") == "gpu"
    ]


def torch_gpus(cuda: Any) -> list[Gpu]:
    """PyTorch's CUDA devices (``torch.cuda``): names and capabilities."""
    if not cuda.is_available():
        return []
    return [Gpu(str(cuda.get_device_name(i)), parse_capability(cuda.get_device_capability(i))) for i in range(cuda.device_count())]


def configure_device(requested: str = "auto", mixed_precision: Any = "auto", tf_config: Any = None) -> DeviceInfo:
    """TensorFlow: memory growth on every used GPU, GPUs hidden for ``device: cpu``, the precision policy."""
    if tf_config is None:
        import tensorflow as tf

        tf_config = tf.config
    physical = list(tf_config.list_physical_devices("GPU"))
    kind = choose_kind(requested, len(physical), "tensorflow")
    if kind == "cpu":
        if physical:
            tf_config.set_visible_devices([], "GPU")
        precision = choose_precision(mixed_precision, kind, None)  # refuses `true` without a GPU
        note = " (GPU hidden by device: cpu)" if physical else ""
        if precision == "mixed_bfloat16" and not cpu_has_bfloat16():
            note += " (bf16 emulated: this CPU has no bf16 instructions)"
        apply_precision(precision)
        return DeviceInfo("cpu", describe("cpu", "tensorflow", [], precision, note), mixed_precision=precision != FLOAT32, precision=precision)
    for gpu in physical:
        try:
            tf_config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError):  # already initialised: growth can no longer change
            pass
    return _configured("gpu", "tensorflow", tensorflow_gpus(tf_config), mixed_precision, memory_growth=True)


def _configured(kind: str, backend: str, gpus: list[Gpu], mixed_precision: Any, note: str = "",
                environ: Mapping[str, str] | None = None, memory_growth: bool = False) -> DeviceInfo:
    """The precision chosen for these GPUs and set as Keras's policy; the DeviceInfo every backend reports."""
    precision = choose_precision(mixed_precision, kind, lowest_capability(gpus))
    apply_precision(precision)
    return DeviceInfo(
        kind, describe(kind, backend, gpus, precision, note), [g.name for g in gpus], precision != FLOAT32, memory_growth,
        backend, precision, memory_note(backend, environ) if gpus else "",
    )


def configure_jax_device(requested: str = "auto", mixed_precision: Any = "auto", devices: list[Any] | None = None,
                         environ: Mapping[str, str] | None = None) -> DeviceInfo:
    """JAX: its own local devices; preallocation is left to the user (``XLA_PYTHON_CLIENT_*``) and reported."""
    processes = ""
    if devices is None:
        import jax

        devices = list(jax.local_devices())
        if jax.process_count() > 1:
            processes = f", process {jax.process_index()} of {jax.process_count()}"
        hide_gpus_from_tensorflow()
    gpus = jax_gpus(devices)
    kind = choose_kind(requested, len(gpus), "jax")
    if kind == "cpu" and gpus:
        raise BadInputError("device: cpu with JAX GPUs visible: JAX picks its devices itself; set JAX_PLATFORMS=cpu to keep it off the GPUs.")
    cpu_note = f" x{len(devices)}" if kind == "cpu" and len(devices) > 1 else ""  # TRAINER_CPU_DEVICES splits the CPU
    return _configured(kind, "jax", gpus, mixed_precision, cpu_note + processes, environ)


def configure_torch_device(requested: str = "auto", mixed_precision: Any = "auto", cuda: Any = None,
                           environ: Mapping[str, str] | None = None) -> DeviceInfo:
    """PyTorch: ``torch.cuda``'s devices (Keras trains on ``cuda`` whenever PyTorch sees one)."""
    if cuda is None:
        import torch

        cuda = torch.cuda
        hide_gpus_from_tensorflow()
    gpus = torch_gpus(cuda)
    kind = choose_kind(requested, len(gpus), "torch")
    if kind == "cpu" and gpus:
        raise BadInputError("device: cpu with CUDA GPUs visible: Keras on PyTorch trains on the GPU whenever PyTorch sees one; set CUDA_VISIBLE_DEVICES= (empty) to keep it on the CPU.")
    return _configured(kind, "torch", gpus, mixed_precision, environ=environ)


def hide_gpus_from_tensorflow(find_spec: Any = None) -> None:
    """On JAX or PyTorch, keep TensorFlow off the GPUs (and their memory) when something has imported it.

    The data path of those backends does not import TensorFlow (``trainer.data.batches``), so
    usually nothing is done; TensorFlow imported by other code would take most of the GPU's memory
    at its first op. ``find_spec`` is kept for callers; TensorFlow is never imported here.
    """
    import contextlib
    import sys

    tf = sys.modules.get("tensorflow")
    if tf is None or not hasattr(tf, "config"):
        return
    with contextlib.suppress(RuntimeError):  # already initialised: nothing to change any more
        tf.config.set_visible_devices([], "GPU")


def configure_backend_device(backend: str, requested: str = "auto", mixed_precision: Any = "auto") -> DeviceInfo:
    """The device on ``backend``, asking only that backend's package."""
    if backend == "jax":
        return configure_jax_device(requested, mixed_precision)
    if backend == "torch":
        return configure_torch_device(requested, mixed_precision)
    return configure_device(requested, mixed_precision)
