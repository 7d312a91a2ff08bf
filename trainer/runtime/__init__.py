"""The runtime layer: which Keras backend, which devices, how a run spreads over them.

Two steps, both here so the CLI and the Python API take the same path:

- ``prepare_runtime(config)`` before Keras is imported: resolve ``distribute`` (config,
  environment, Slurm), choose the backend, and for multi_worker meet the other processes
  (bounded by ``distribute.timeout_seconds``). No TensorFlow or JAX is started.
- ``start_runtime(config, setup)`` once Keras may load: devices (memory growth, mixed
  precision) and the distribution engine.

The library never changes the process environment: ``prepare_runtime(..., set_environment=True)``
is how the CLI lets it set ``KERAS_BACKEND`` (and the JAX CPU split) before Keras is imported;
a Python caller sets ``KERAS_BACKEND`` itself, and is told so when it is needed.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Mapping

from trainer.errors import BadInputError


def loaded_keras_backend() -> str | None:
    """Keras's backend when Keras is already imported in this process (it cannot change any more), else None."""
    keras_module = sys.modules.get("keras")
    if keras_module is None or not hasattr(keras_module, "backend"):
        return None
    return keras_module.backend.backend()


def choose_keras_backend(
    strategy: str = "none", *, configured: str = "auto", set_environment: bool = False, environ: Mapping[str, str] | None = None,
) -> tuple[str, str | None]:
    """The backend for a run (``configured``: the config's ``backend``) and a notice when trainer picked it; refuses what cannot run (exit 2).

    With ``set_environment`` (the CLI) the variables Keras reads at import are set when Keras is
    not imported yet. Without it, a backend other than the one Keras will load is refused with
    what to set.
    """
    from trainer.runtime.distribute import backend_environment, check_backend_installed, choose_backend

    environ = os.environ if environ is None else environ
    loaded = loaded_keras_backend()
    backend, notice = choose_backend(strategy, environ, loaded, configured)
    check_backend_installed(backend)
    if loaded is None:
        updates = backend_environment(backend, environ)
        if set_environment:
            os.environ.update(updates)
        elif any(environ.get(key) != value for key, value in updates.items()):
            wanted = " ".join(f"{key}={value!r}" for key, value in updates.items())
            raise BadInputError(
                f"this run needs {wanted} in the environment before Keras is imported "
                f"(the {backend} backend); set it in the shell or in os.environ at the top of your script."
            )
    return backend, notice


def prepare_runtime(config: Any, *, resume: bool = False, set_environment: bool = False, on_notice: Any = None) -> Any:
    """Resolve ``config.distribute`` for this process, choose the backend and, for multi_worker, wait for every process.

    Returns a ``DistributeSetup``. The wait is bounded (``distribute.timeout_seconds``) and
    happens before TensorFlow or JAX start, so an unreachable coordinator is a clear exit 2.
    """
    from trainer.runtime.distribute import check_backend_settings, rendezvous, resolve_distribute

    backend, picked = choose_keras_backend(config.distribute.strategy, configured=config.backend, set_environment=set_environment)
    check_backend_settings(config, backend)
    setup = resolve_distribute(config.distribute, os.environ, backend)
    if picked:
        setup.notices.insert(0, picked)
    if setup.multi_process and resume:
        raise BadInputError("--resume is not supported with distribute.strategy multi_worker yet; resume with strategy none, or start a new run.")
    if setup.multi_process:
        if setup.is_chief and on_notice is not None:
            on_notice(f"process 0 of {setup.num_processes}: waiting up to {setup.timeout_seconds:g} s for the others on {setup.coordinator_address}")
        rendezvous(setup)
    return setup


def start_runtime(config: Any, setup: Any) -> tuple[Any, Any]:
    """The device and the started distribution, on Keras's backend; before any computation.

    TensorFlow: devices are configured before the strategy lists them. JAX: the distributed
    runtime starts before JAX's first use, then JAX describes its devices. The global Keras
    state a previous run in this process may have left (mixed precision policy, distribution)
    is reset first.
    """
    import keras

    from trainer.runtime.devices import configure_backend_device
    from trainer.runtime.strategy import start_distribution

    keras.mixed_precision.set_global_policy("float32")  # each run sets its own precision
    backend = keras.backend.backend()
    if backend == "jax":
        keras.distribution.set_distribution(None)
        distribution = start_distribution(setup, os.environ)
        device = configure_backend_device(backend, config.device, config.train.mixed_precision)
    else:
        device = configure_backend_device(backend, config.device, config.train.mixed_precision)
        distribution = start_distribution(setup, os.environ)
    distribution.check_batch_size(config.train.batch_size)
    return device, distribution
