"""Device selection logic: GPU detection, memory growth, mixed precision, with a stand-in tf.config."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from trainer.runtime.devices import choose_kind, configure_device, wants_mixed_precision
from trainer.errors import BadInputError


class FakeConfig:
    """Records what configure_device asks of tf.config."""

    def __init__(self, gpus):
        self.gpus = [SimpleNamespace(name=f"/physical_device:GPU:{i}") for i in range(len(gpus))]
        self.details = dict(zip((g.name for g in self.gpus), gpus))
        self.growth, self.visible = [], None
        self.experimental = SimpleNamespace(set_memory_growth=self._growth, get_device_details=lambda g: self.details[g.name])

    def list_physical_devices(self, kind):
        return list(self.gpus) if kind == "GPU" else []

    def set_visible_devices(self, devices, kind):
        self.visible = (devices, kind)

    def _growth(self, gpu, on):
        self.growth.append((gpu.name, on))


H100 = {"device_name": "NVIDIA H100", "compute_capability": (9, 0)}
K80 = {"device_name": "Tesla K80", "compute_capability": (3, 7)}


def test_auto_without_gpu_is_cpu():
    info = configure_device("auto", "auto", tf_config=FakeConfig([]))
    assert info.kind == "cpu" and not info.mixed_precision


def test_gpu_requested_without_gpu_exits_2():
    with pytest.raises(BadInputError, match="sees no GPU") as error:
        configure_device("gpu", tf_config=FakeConfig([]))
    assert error.value.exit_code == 2


def test_auto_with_gpus_turns_memory_growth_on_for_each(monkeypatch):
    policies = []
    import keras

    monkeypatch.setattr(keras.mixed_precision, "set_global_policy", policies.append)
    fake = FakeConfig([H100, H100])
    info = configure_device("auto", "auto", tf_config=fake)
    assert info.kind == "gpu" and info.memory_growth
    assert fake.growth == [("/physical_device:GPU:0", True), ("/physical_device:GPU:1", True)]
    assert info.mixed_precision and policies == ["mixed_bfloat16"]  # compute capability 9.0: bfloat16, no loss scaling
    assert "NVIDIA H100" in info.description and "mixed bfloat16" in info.description


def test_old_gpu_gets_no_mixed_precision_on_auto():
    info = configure_device("auto", "auto", tf_config=FakeConfig([K80]))
    assert info.kind == "gpu" and not info.mixed_precision


def test_cpu_requested_hides_gpus():
    fake = FakeConfig([H100])
    info = configure_device("cpu", "auto", tf_config=fake)
    assert info.kind == "cpu" and fake.visible == ([], "GPU") and fake.growth == []


def test_choose_kind_and_mixed_precision_rules():
    assert choose_kind("auto", 0) == "cpu" and choose_kind("auto", 1) == "gpu" and choose_kind("cpu", 2) == "cpu"
    assert wants_mixed_precision("auto", "gpu", (7, 0)) and not wants_mixed_precision("auto", "gpu", (6, 1))
    assert not wants_mixed_precision(False, "gpu", (9, 0)) and wants_mixed_precision(True, "gpu", None)
    with pytest.raises(BadInputError, match="needs a GPU"):
        wants_mixed_precision(True, "cpu", None)


# --------------------------------------------------------------------------- devices per backend (issue 20 item 4)

from trainer.runtime.devices import (  # noqa: E402
    Gpu, DeviceInfo, choose_precision, configure_jax_device, configure_torch_device, jax_gpus, memory_note, parse_capability, torch_gpus,
)

A100 = {"device_name": "NVIDIA A100", "compute_capability": (8, 0)}
V100 = {"device_name": "Tesla V100", "compute_capability": (7, 0)}


@pytest.mark.parametrize(
    "setting, kind, capability, expected",
    [
        ("auto", "gpu", (9, 0), "mixed_bfloat16"), ("auto", "gpu", (8, 0), "mixed_bfloat16"), ("auto", "gpu", (8, 6), "mixed_bfloat16"),
        ("auto", "gpu", (7, 5), "mixed_float16"), ("auto", "gpu", (7, 0), "mixed_float16"), ("auto", "gpu", (6, 1), "float32"),
        ("auto", "gpu", None, "float32"), ("auto", "cpu", None, "float32"), (False, "gpu", (9, 0), "float32"),
        (True, "gpu", (9, 0), "mixed_bfloat16"), (True, "gpu", (7, 0), "mixed_float16"), (True, "gpu", None, "mixed_float16"),
        ("bfloat16", "cpu", None, "mixed_bfloat16"), ("bfloat16", "gpu", (7, 0), "mixed_bfloat16"),
    ],
)
def test_precision_rule(setting, kind, capability, expected):
    assert choose_precision(setting, kind, capability) == expected


@pytest.mark.parametrize("gpus, policy", [([A100], "mixed_bfloat16"), ([V100], "mixed_float16"), ([A100, V100], "mixed_float16"), ([K80], None)])
def test_tensorflow_precision_from_the_lowest_capability(monkeypatch, gpus, policy):
    import keras

    policies = []
    monkeypatch.setattr(keras.mixed_precision, "set_global_policy", policies.append)
    info = configure_device("auto", "auto", tf_config=FakeConfig(gpus))
    assert policies == ([policy] if policy else [])
    assert info.precision == (policy or "float32") and info.backend == "tensorflow"
    assert info.to_dict()["loss_scaling"] is (policy == "mixed_float16")  # Keras wraps the optimizer in a LossScaleOptimizer then


class JaxDevice(SimpleNamespace):
    pass


def jax_gpu(kind="NVIDIA H200", capability="9.0"):
    return JaxDevice(platform="gpu", device_kind=kind, compute_capability=capability, id=0)


def test_jax_devices_name_the_gpu_and_choose_bfloat16(monkeypatch):
    import keras

    policies = []
    monkeypatch.setattr(keras.mixed_precision, "set_global_policy", policies.append)
    info = configure_jax_device("auto", "auto", devices=[jax_gpu(), jax_gpu()], environ={})
    assert info.kind == "gpu" and info.backend == "jax" and info.gpus == ["NVIDIA H200", "NVIDIA H200"]
    assert info.description == "GPU x2: NVIDIA H200, NVIDIA H200 (JAX, mixed bfloat16)" and policies == ["mixed_bfloat16"]
    assert "preallocates 75%" in info.memory and not info.memory_growth


def test_jax_float16_on_volta_and_cpu_when_only_cpus(monkeypatch):
    import keras

    monkeypatch.setattr(keras.mixed_precision, "set_global_policy", lambda policy: None)
    assert configure_jax_device("auto", "auto", devices=[jax_gpu("Tesla V100-SXM2-16GB", "7.0")], environ={}).precision == "mixed_float16"
    cpu = configure_jax_device("auto", "auto", devices=[JaxDevice(platform="cpu", device_kind="cpu")], environ={})
    assert cpu.kind == "cpu" and cpu.precision == "float32" and cpu.description == "CPU (JAX, float32)" and cpu.memory == ""
    with pytest.raises(BadInputError, match="JAX sees no GPU.*jax\\[cuda13\\]"):
        configure_jax_device("gpu", "auto", devices=[JaxDevice(platform="cpu", device_kind="cpu")], environ={})
    with pytest.raises(BadInputError, match="JAX_PLATFORMS=cpu"):
        configure_jax_device("cpu", "auto", devices=[jax_gpu()], environ={})


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({}, "JAX preallocates 75% of GPU memory"),
        ({"XLA_PYTHON_CLIENT_MEM_FRACTION": ".5"}, "JAX preallocates .5 (XLA_PYTHON_CLIENT_MEM_FRACTION)"),
        ({"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}, "JAX allocates on demand (XLA_PYTHON_CLIENT_PREALLOCATE=false)"),
        ({"XLA_PYTHON_CLIENT_ALLOCATOR": "platform"}, "JAX allocates on demand (XLA_PYTHON_CLIENT_ALLOCATOR=platform)"),
    ],
)
def test_jax_memory_settings_are_read_not_set(environ, expected):
    before = dict(environ)
    assert memory_note("jax", environ).startswith(expected)
    assert environ == before


class FakeCuda:
    def __init__(self, gpus):
        self.gpus = gpus

    def is_available(self):
        return bool(self.gpus)

    def device_count(self):
        return len(self.gpus)

    def get_device_name(self, index):
        return self.gpus[index]["device_name"]

    def get_device_capability(self, index):
        return self.gpus[index]["compute_capability"]


def test_torch_devices_from_torch_cuda(monkeypatch):
    import keras

    policies = []
    monkeypatch.setattr(keras.mixed_precision, "set_global_policy", policies.append)
    info = configure_torch_device("auto", "auto", cuda=FakeCuda([V100]), environ={"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"})
    assert info.backend == "torch" and info.gpus == ["Tesla V100"] and info.precision == "mixed_float16" and policies == ["mixed_float16"]
    assert info.description == "GPU x1: Tesla V100 (PyTorch, mixed float16)"
    assert info.memory == "PyTorch caching allocator (PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True)"
    assert configure_torch_device("auto", "auto", cuda=FakeCuda([]), environ={}).description == "CPU (PyTorch, float32)"
    with pytest.raises(BadInputError, match="CUDA_VISIBLE_DEVICES"):
        configure_torch_device("cpu", "auto", cuda=FakeCuda([A100]), environ={})
    with pytest.raises(BadInputError, match="PyTorch sees no GPU"):
        configure_torch_device("gpu", "auto", cuda=FakeCuda([]), environ={})


def test_capabilities_and_gpu_lists():
    assert parse_capability("8.6") == (8, 6) and parse_capability((7, 5)) == (7, 5) and parse_capability("sm_90") == (9, 0)
    assert parse_capability("n/a") is None and parse_capability(None) is None
    assert jax_gpus([jax_gpu(capability=None), JaxDevice(platform="cpu")]) == [Gpu("NVIDIA H200", None)]
    assert torch_gpus(FakeCuda([A100])) == [Gpu("NVIDIA A100", (8, 0))]


def test_device_records_name_backend_devices_and_precision():
    info = DeviceInfo("gpu", "GPU x1: NVIDIA H200 (JAX, mixed bfloat16)", ["NVIDIA H200"], True, False, "jax", "mixed_bfloat16", "JAX preallocates 75%")
    assert info.to_dict() | {} == {
        "kind": "gpu", "description": "GPU x1: NVIDIA H200 (JAX, mixed bfloat16)", "gpus": ["NVIDIA H200"], "mixed_precision": True,
        "memory_growth": False, "backend": "jax", "precision": "mixed_bfloat16", "loss_scaling": False, "memory": "JAX preallocates 75%",
    }
    assert info.trained_on() == {"backend": "jax", "kind": "gpu", "devices": ["NVIDIA H200"], "precision": "mixed_bfloat16"}
    assert DeviceInfo("cpu", "CPU").trained_on()["devices"] == ["CPU"]


@pytest.mark.slow
def test_jax_device_check_imports_no_torch_and_torch_check_no_jax():
    """Each backend's devices come from its own package: a subprocess asks JAX and must not load torch or tensorflow."""
    import subprocess
    import sys

    code = (
        "import sys; from trainer.runtime.devices import configure_jax_device; "
        "info = configure_jax_device('auto', False, environ={}); "
        "print(info.backend, info.kind, 'tensorflow' in sys.modules, 'torch' in sys.modules)"
    )
    from tests.conftest import REPO_ROOT

    import os

    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", code.replace("configure_jax_device('auto', False, environ={})",
                          "configure_jax_device('auto', False, devices=__import__('jax').local_devices(), environ={})")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-4:] == ["jax", "cpu", "False", "False"]
