"""Choosing the device: GPU detection, memory growth and mixed precision.

The decisions are plain functions of what TensorFlow reports, so they are tested without a GPU;
``configure_device`` applies them through ``tf.config`` (or a stand-in passed by a test).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainer.errors import BadInputError

# Tensor cores that make float16 pay start with Volta (compute capability 7.0).
MIXED_PRECISION_MIN_CAPABILITY = (7, 0)


@dataclass
class DeviceInfo:
    kind: str  # "gpu" or "cpu"
    description: str
    gpus: list[str] = field(default_factory=list)
    mixed_precision: bool = False
    memory_growth: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "description": self.description,
            "gpus": list(self.gpus),
            "mixed_precision": self.mixed_precision,
            "memory_growth": self.memory_growth,
        }


def choose_kind(requested: str, gpu_count: int) -> str:
    """``auto`` -> gpu when one is visible; ``gpu`` with none visible is the user's mistake."""
    if requested == "gpu" and gpu_count == 0:
        raise BadInputError(
            "device: gpu was requested but TensorFlow sees no GPU on this machine; "
            "set device: auto (or cpu), or install a CUDA-enabled TensorFlow (pip install 'tensorflow[and-cuda]')."
        )
    if requested == "cpu":
        return "cpu"
    return "gpu" if gpu_count else "cpu"


def wants_mixed_precision(setting: Any, kind: str, capability: tuple[int, int] | None) -> bool:
    """``auto``: on for GPUs with tensor cores (compute capability >= 7.0); ``true`` needs a GPU."""
    if setting is True:
        if kind != "gpu":
            raise BadInputError(
                "train.mixed_precision: true needs a GPU (float16 on a CPU is slower, not faster); "
                "set it to auto or false."
            )
        return True
    if setting is False:
        return False
    return kind == "gpu" and capability is not None and tuple(capability) >= MIXED_PRECISION_MIN_CAPABILITY


def cpu_has_bfloat16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512_BF16 or AMX), which oneDNN uses for bf16 convolutions."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
                cpuinfo = handle.read()
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


def configure_device(requested: str = "auto", mixed_precision: Any = "auto", tf_config: Any = None) -> DeviceInfo:
    """Apply the device choice: memory growth on every used GPU, hide GPUs for ``cpu``, set the policy."""
    if tf_config is None:
        import tensorflow as tf

        tf_config = tf.config
    gpus = list(tf_config.list_physical_devices("GPU"))
    kind = choose_kind(requested, len(gpus))
    if kind == "cpu":
        if gpus:
            tf_config.set_visible_devices([], "GPU")
        wants_mixed_precision(mixed_precision, kind, None)  # refuses `true` without a GPU
        description = "CPU" + (" (GPU hidden by device: cpu)" if gpus else "")
        bfloat16 = wants_cpu_bfloat16(mixed_precision)
        if bfloat16:  # changes numerics (8-bit mantissa); train.mixed_precision: false keeps float32
            import keras

            keras.mixed_precision.set_global_policy("mixed_bfloat16")
            description += " (mixed bfloat16)" if cpu_has_bfloat16() else " (mixed bfloat16, emulated: this CPU has no bf16 instructions)"
        return DeviceInfo("cpu", description, mixed_precision=bfloat16)
    names, capability = [], None
    for gpu in gpus:
        try:
            tf_config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError):  # already initialised: growth can no longer change
            pass
        details = tf_config.experimental.get_device_details(gpu) or {}
        names.append(details.get("device_name", getattr(gpu, "name", "GPU")))
        cap = details.get("compute_capability")
        if cap is not None:
            capability = cap if capability is None else min(capability, cap)
    policy = "bfloat16" if mixed_precision == "bfloat16" else "float16"
    use_mixed = mixed_precision == "bfloat16" or wants_mixed_precision(mixed_precision, kind, capability)
    if use_mixed:
        import keras

        keras.mixed_precision.set_global_policy(f"mixed_{policy}")
    description = f"GPU x{len(names)}: {', '.join(names)}" + (f" (mixed {policy})" if use_mixed else "")
    return DeviceInfo("gpu", description, names, use_mixed, True)
