"""Driving the existing engines: ``tf.distribute.MirroredStrategy`` on TensorFlow, Keras's distribution API on JAX.

``start_distribution`` turns a resolved ``DistributeSetup`` into a ``Distribution``: the scope
the model is built and compiled in, the replica count, and whether batches must be full (JAX
splits every batch evenly over its devices). Imports Keras; the backend was chosen before.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from trainer.runtime.distribute import DistributeSetup, cpu_device_count
from trainer.errors import BadInputError, ConfigError


@dataclass
class Distribution:
    setup: DistributeSetup
    replicas: int = 1
    devices: list[str] = field(default_factory=list)
    tf_strategy: Any = None
    notices: list[str] = field(default_factory=list)

    @property
    def is_chief(self) -> bool:
        return self.setup.is_chief

    @property
    def full_batches(self) -> bool:
        """JAX shards each batch evenly over the devices, so a last partial batch cannot be used."""
        return self.setup.backend == "jax" and self.replicas > 1

    def scope(self):
        """Where the model is built and compiled (MirroredStrategy's variables live there)."""
        return self.tf_strategy.scope() if self.tf_strategy is not None else contextlib.nullcontext()

    def check_batch_size(self, batch_size: int) -> None:
        if self.full_batches and batch_size % self.replicas:
            raise ConfigError(
                f"train.batch_size: {batch_size} cannot be split evenly over {self.replicas} replicas "
                f"(distribute.strategy {self.setup.strategy} on JAX); use a multiple of {self.replicas}. It is the global batch."
            )

    def summary(self) -> str:
        """``multi_worker on jax: 2 processes, 2 replicas``."""
        processes = self.setup.num_processes
        return (
            f"{self.setup.strategy} on {self.setup.backend}: {processes} process{'es' if processes > 1 else ''}, "
            f"{self.replicas} replica{'s' if self.replicas > 1 else ''}"
            + (f" (this is process {self.setup.process_id})" if processes > 1 else "")
        )

    def to_dict(self) -> dict[str, Any]:
        """``metrics.json``'s ``distribute`` entry."""
        return {
            "strategy": self.setup.strategy,
            "backend": self.setup.backend,
            "processes": self.setup.num_processes,
            "replicas": self.replicas,
            "process_id": self.setup.process_id,
            "devices": self.devices,
            "partial_batches_dropped": self.full_batches,
        }


def split_cpu_for_tensorflow(count: int) -> None:
    """``TRAINER_CPU_DEVICES``: make ``count`` logical CPUs; only possible before TensorFlow runs its first op."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or []) == count:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError:
        raise BadInputError(
            f"TRAINER_CPU_DEVICES={count}: TensorFlow was already started in this process, so its CPU can no longer be split; "
            "run trainer in a new process."
        ) from None


def start_distribution(setup: DistributeSetup, environ: Any) -> Distribution:
    """Start the engine ``setup`` asks for; before the model is built. multi_worker joins the other processes here."""
    if setup.backend == "jax":
        return _start_jax(setup)
    return _start_tensorflow(setup, environ)


def _start_tensorflow(setup: DistributeSetup, environ: Any) -> Distribution:
    if setup.strategy == "none":
        return Distribution(setup)
    import tensorflow as tf

    cpus = cpu_device_count(environ)
    if cpus is not None:
        split_cpu_for_tensorflow(cpus)
    gpus = tf.config.list_logical_devices("GPU")
    notices = []
    if gpus:
        devices = [d.name for d in gpus]
        strategy = tf.distribute.MirroredStrategy(devices)
    else:
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        if len(devices) == 1:
            notices.append("distribute.strategy mirrored: no GPU is visible, so it runs on one CPU device (one replica).")
        # NCCL (the default all-reduce) is GPU-only; on CPUs reduce on one device.
        strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    return Distribution(setup, int(strategy.num_replicas_in_sync), devices, strategy, notices)


def _start_jax(setup: DistributeSetup) -> Distribution:
    import jax
    import keras

    if setup.multi_process:
        import warnings

        # auto-sharding hides the epoch's length until the first epoch ends; Keras warns then, harmlessly
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        # rendezvous() already met every process, so this connects at once; its own timeout aborts the process.
        jax.distributed.initialize(
            coordinator_address=setup.coordinator_address,
            num_processes=setup.num_processes,
            process_id=setup.process_id,
            initialization_timeout=max(int(setup.timeout_seconds), 1),
        )
    if setup.strategy == "none":
        return Distribution(setup, 1, [str(d) for d in jax.local_devices()])
    devices = keras.distribution.list_devices()  # every process's devices when distributed
    distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=True)
    keras.distribution.set_distribution(distribution)
    notices = []
    if len(devices) == 1:
        notices.append(f"distribute.strategy {setup.strategy}: JAX sees one device, so there is one replica.")
    return Distribution(setup, len(devices), [str(d) for d in devices], None, notices)
