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
    assert info.mixed_precision and policies == ["mixed_float16"]
    assert "NVIDIA H100" in info.description


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
