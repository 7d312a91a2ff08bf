"""Where a run's processes come from and which Keras backend drives them (standard library only).

``distribute`` in the config says *what* (``none``, ``mirrored``, ``multi_worker``); the
coordinator address, process count and process id may also come from the environment
(``TRAINER_COORDINATOR``, ``TRAINER_NUM_PROCESSES``, ``TRAINER_PROCESS_ID``) or from Slurm
(``SLURM_NTASKS``, ``SLURM_PROCID``, the first host of ``SLURM_STEP_NODELIST``/``SLURM_JOB_NODELIST``).
Everything here is a plain function of the config and an environment mapping, so it is tested
without TensorFlow; ``rendezvous`` is the bounded, catchable wait for all processes that runs
before the JAX distributed runtime starts (whose own timeout aborts the process instead).
"""
from __future__ import annotations

import importlib.util
import os
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from trainer.errors import BadInputError, ConfigError

ENV_COORDINATOR = "TRAINER_COORDINATOR"
ENV_NUM_PROCESSES = "TRAINER_NUM_PROCESSES"
ENV_PROCESS_ID = "TRAINER_PROCESS_ID"
ENV_COORDINATOR_PORT = "TRAINER_COORDINATOR_PORT"  # with Slurm: the port on the first node (default below)
ENV_CPU_DEVICES = "TRAINER_CPU_DEVICES"  # split the CPU into N logical devices (tests, trying `mirrored` without GPUs)
SLURM_DEFAULT_PORT_BASE = 20000  # the Slurm coordinator port is 20000 + job id % 10000 unless TRAINER_COORDINATOR_PORT says

BACKENDS = ("tensorflow", "jax", "torch")
JAX_INSTALL = "pip install -e '.[jax]'  (or: pip install jax==0.10.2 jaxlib==0.10.2)"
# what each backend needs importable (importlib.util.find_spec: checked without importing), and how to get it
BACKEND_PACKAGES = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib"), "torch": ("torch",)}
BACKEND_INSTALL = {
    "tensorflow": "pip install -e '.[tensorflow]'  (or: pip install 'tensorflow>=2.21,<2.22')",
    "jax": JAX_INSTALL,
    "torch": "pip install -e '.[torch]'  (or: pip install torch; a CUDA build for GPUs: https://pytorch.org/get-started/locally/)",
}


def installed_backend(find_spec: Callable[[str], Any] | None = None) -> str:
    """What ``backend: auto`` runs on: TensorFlow when installed, else JAX, else PyTorch (each is an extra of trainer's);
    with none of them, one sentence naming the three install commands. Nothing is imported."""
    find_spec = find_spec or importlib.util.find_spec  # looked up at call time (tests replace it)
    for backend in BACKENDS:
        if all(find_spec(name) is not None for name in BACKEND_PACKAGES[backend]):
            return backend
    raise BadInputError(
        "no Keras backend is installed: trainer runs on TensorFlow, JAX or PyTorch, each an extra; install one, e.g. "
        "pip install -e '.[tensorflow]' (or '.[jax]', or '.[torch]')."
    )

# what each strategy runs on: the honest table of docs/distributed.md
SUPPORTED = {
    ("none", "tensorflow"), ("none", "jax"),
    ("mirrored", "tensorflow"), ("mirrored", "jax"),
    ("multi_worker", "jax"),
    ("none", "torch"),
}
# The most training steps one call of the compiled step may run, where a backend sets a limit: Keras's
# PyTorch trainer refuses compile(steps_per_execution > 1) ("must be 1 with the PyTorch backend").
STEPS_PER_EXECUTION_LIMIT = {"torch": 1}


@dataclass
class DistributeSetup:
    """The resolved ``distribute`` block: one process's place in the run."""

    strategy: str = "none"
    backend: str = "tensorflow"
    coordinator: tuple[str, int] | None = None
    num_processes: int = 1
    process_id: int = 0
    timeout_seconds: float = 120.0
    sources: dict[str, str] = field(default_factory=dict)  # key -> "config" / "TRAINER_..." / "SLURM_..."
    notices: list[str] = field(default_factory=list)

    @property
    def is_chief(self) -> bool:
        """Process 0 alone writes the run directory."""
        return self.process_id == 0

    @property
    def multi_process(self) -> bool:
        return self.strategy == "multi_worker"

    @property
    def coordinator_address(self) -> str | None:
        return None if self.coordinator is None else f"{self.coordinator[0]}:{self.coordinator[1]}"


def parse_coordinator(text: str, key: str = "distribute.coordinator") -> tuple[str, int]:
    """``HOST:PORT`` (``[v6::addr]:PORT`` too) -> (host, port); the port must leave port+1 for the rendezvous."""
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\s\[\]]+):(\d+)", str(text).strip())
    if not match:
        raise ConfigError(f"{key}: {text!r} is not HOST:PORT (for example 10.0.0.5:29500 or node01:29500)")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 1 <= port <= 65534:
        raise ConfigError(f"{key}: port {port} in {text!r} is outside 1..65534 (port+1 is used too)")
    return host, port


def first_slurm_host(nodelist: str) -> str:
    """The first host of a Slurm hostlist: ``node[03-05,9],gpu1`` -> ``node03``."""
    text = nodelist.strip()
    match = re.match(r"([^,\[]*)(?:\[([^\]]*)\])?", text)
    if not match or not (match.group(1) or match.group(2)):
        raise ConfigError(f"SLURM nodelist {nodelist!r}: cannot read its first host")
    prefix, ranges = match.group(1), match.group(2)
    if ranges is None:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def _int_from(value: Any, key: str, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{key} (from {where}): {value!r} is not a whole number") from None


def resolve_distribute(section: Any, environ: Mapping[str, str], backend: str = "tensorflow") -> DistributeSetup:
    """The ``distribute`` config section completed from the environment and Slurm, then checked.

    Precedence for each of coordinator / num_processes / process_id: the config, then the
    ``TRAINER_*`` variable, then Slurm's. Only ``multi_worker`` uses them.
    """
    setup = DistributeSetup(strategy=section.strategy, backend=backend, timeout_seconds=float(section.timeout_seconds))
    if section.strategy != "multi_worker":
        given = [k for k in ("coordinator", "num_processes", "process_id") if getattr(section, k) is not None]
        if given:
            setup.notices.append(
                f"distribute.{', distribute.'.join(given)} {'are' if len(given) > 1 else 'is'} ignored: "
                f"they only apply to strategy multi_worker (this run's strategy is {section.strategy})."
            )
        return setup

    def pick(key: str, env_key: str, slurm: Callable[[], tuple[Any, str] | None]) -> tuple[Any, str] | None:
        value = getattr(section, key)
        if value is not None:
            return value, "config"
        if environ.get(env_key, "").strip():
            return environ[env_key].strip(), env_key
        return slurm()

    def slurm_count():
        return (environ["SLURM_NTASKS"], "SLURM_NTASKS") if environ.get("SLURM_NTASKS") else None

    def slurm_id():
        return (environ["SLURM_PROCID"], "SLURM_PROCID") if environ.get("SLURM_PROCID") else None

    def slurm_coordinator():
        for key in ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"):
            if environ.get(key):
                host = first_slurm_host(environ[key])
                port_text = environ.get(ENV_COORDINATOR_PORT, "").strip()
                if port_text:
                    port = _int_from(port_text, "distribute.coordinator port", ENV_COORDINATOR_PORT)
                else:
                    port = SLURM_DEFAULT_PORT_BASE + _int_from(environ.get("SLURM_JOB_ID", "0") or 0, "SLURM_JOB_ID", "SLURM_JOB_ID") % 10000
                return f"{host}:{port}", key
        return None

    coordinator = pick("coordinator", ENV_COORDINATOR, slurm_coordinator)
    count = pick("num_processes", ENV_NUM_PROCESSES, slurm_count)
    index = pick("process_id", ENV_PROCESS_ID, slurm_id)
    missing = [
        f"distribute.{key} (or {env})"
        for key, env, found in (
            ("coordinator", ENV_COORDINATOR, coordinator), ("num_processes", ENV_NUM_PROCESSES, count), ("process_id", ENV_PROCESS_ID, index),
        )
        if found is None
    ]
    if missing:
        raise ConfigError(
            f"distribute.strategy multi_worker needs {', '.join(missing)}; set it in the config, in the environment, "
            "or launch under Slurm (srun), which provides all three."
        )
    assert coordinator is not None and count is not None and index is not None
    setup.coordinator = parse_coordinator(coordinator[0], "distribute.coordinator" if coordinator[1] == "config" else coordinator[1])
    setup.num_processes = _int_from(count[0], "distribute.num_processes", count[1])
    setup.process_id = _int_from(index[0], "distribute.process_id", index[1])
    setup.sources = {"coordinator": coordinator[1], "num_processes": count[1], "process_id": index[1]}
    if setup.num_processes < 1:
        raise ConfigError(f"distribute.num_processes (from {count[1]}): {setup.num_processes} must be at least 1")
    if not 0 <= setup.process_id < setup.num_processes:
        raise ConfigError(
            f"distribute.process_id (from {index[1]}): {setup.process_id} is out of range; "
            f"with num_processes {setup.num_processes} it must be 0..{setup.num_processes - 1}"
        )
    return setup


def choose_backend(
    strategy: str, environ: Mapping[str, str], loaded_backend: str | None = None, configured: str = "auto",
    find_spec: Callable[[str], Any] | None = None,
) -> tuple[str, str | None]:
    """The Keras backend for this run and a notice when trainer picked it or the environment overrode the config.

    ``KERAS_BACKEND`` decides when set (with a notice when the config's ``backend`` says
    otherwise); then the config's ``backend``; with ``auto``, ``multi_worker`` needs JAX
    (TensorFlow's MultiWorkerMirroredStrategy fails with Keras 3's fit, keras-team/keras#20585),
    so it picks JAX, and anything else takes the first installed of TensorFlow, JAX and PyTorch
    (``installed_backend``). ``loaded_backend`` is Keras's backend
    when Keras is already imported in this process (it cannot change any more).
    """
    requested = environ.get("KERAS_BACKEND", "").strip() or None
    if requested is not None and requested not in BACKENDS:
        raise BadInputError(f"KERAS_BACKEND={requested}: trainer supports {', '.join(BACKENDS)}; set KERAS_BACKEND to one of them.")
    backend, notice = requested, None
    if backend is not None and configured not in ("auto", backend):
        notice = f"KERAS_BACKEND={backend} in the environment wins over backend: {configured} in the config."
    if backend is None and configured != "auto":
        backend = configured
    if backend is None:
        backend = "jax" if strategy == "multi_worker" else (loaded_backend or installed_backend(find_spec))
        if strategy == "multi_worker" and loaded_backend is None:
            notice = "distribute.strategy multi_worker runs on the JAX backend: KERAS_BACKEND=jax for this run."
    if loaded_backend is not None and loaded_backend != backend:
        raise BadInputError(f"Keras is already running on {loaded_backend} in this process; KERAS_BACKEND={backend} needs a new process.")
    if (strategy, backend) not in SUPPORTED:
        why = (
            "TensorFlow's MultiWorkerMirroredStrategy fails with Keras 3's fit: keras-team/keras#20585"
            if backend == "tensorflow" else "trainer spreads runs over devices on tensorflow (mirrored) and jax only"
        )
        fix = "unset KERAS_BACKEND or set KERAS_BACKEND=jax" if requested else "set backend: jax in the config (or KERAS_BACKEND=jax), or distribute.strategy: none"
        raise BadInputError(f"distribute.strategy {strategy} is not supported on the {backend} backend ({why}); {fix}.")
    return backend, notice


def check_backend_installed(backend: str, find_spec: Callable[[str], Any] | None = None) -> None:
    """Refuse (exit 2) with the install command when the backend's packages are missing; nothing is imported."""
    find_spec = find_spec or importlib.util.find_spec  # looked up at call time (tests replace it)
    missing = [name for name in BACKEND_PACKAGES[backend] if find_spec(name) is None]
    if missing:
        raise BadInputError(
            f"the {backend} backend is needed (backend: {backend}, KERAS_BACKEND or distribute.strategy) but "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed; run {BACKEND_INSTALL[backend]}"
        )


def steps_per_execution_limit(backend: str) -> int | None:
    """How many training steps one compiled call may run on ``backend`` (None: no limit of the backend's own)."""
    return STEPS_PER_EXECUTION_LIMIT.get(backend)


def check_backend_settings(config: Any, backend: str) -> None:
    """Refuse (exit 2), before anything is computed, the config settings ``backend`` cannot run: an explicit
    ``compile.steps_per_execution`` above its limit (``auto`` resolves within it)."""
    from trainer.runtime.devices import BACKEND_NAMES  # light: the standard library only

    setting = config.compile.steps_per_execution
    limit = steps_per_execution_limit(backend)
    if limit is not None and setting != "auto" and int(setting) > limit:
        raise ConfigError(
            f"compile.steps_per_execution: {setting} is more than the {BACKEND_NAMES[backend]} backend runs per call "
            f"(at most {limit}: Keras's {BACKEND_NAMES[backend]} trainer runs one step per call); set it to {limit} or auto."
        )


def check_backend(config: Any, environ: Mapping[str, str] | None = None, find_spec: Callable[[str], Any] | None = None) -> tuple[str, str | None]:
    """``trainer validate``'s check: the backend this config would run on (and its notice), its packages installed; nothing imported."""
    find_spec = find_spec or importlib.util.find_spec  # looked up at call time (tests replace it)
    environ = os.environ if environ is None else environ
    backend, notice = choose_backend(config.distribute.strategy, environ, None, config.backend, find_spec)
    check_backend_installed(backend, find_spec)
    check_backend_settings(config, backend)
    return backend, notice


def cpu_device_count(environ: Mapping[str, str]) -> int | None:
    """``TRAINER_CPU_DEVICES=N``: how many logical CPU devices to make (None: leave the CPU whole)."""
    text = environ.get(ENV_CPU_DEVICES, "").strip()
    if not text:
        return None
    count = _int_from(text, ENV_CPU_DEVICES, ENV_CPU_DEVICES)
    if count < 1:
        raise ConfigError(f"{ENV_CPU_DEVICES}: {count} must be at least 1")
    return count


def backend_environment(backend: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to set before Keras is imported: the backend, and the CPU split on JAX (``TRAINER_CPU_DEVICES``)."""
    updates: dict[str, str] = {}
    if backend == "torch":
        updates["KERAS_BACKEND"] = "torch"
    if backend == "jax":
        updates["KERAS_BACKEND"] = "jax"
        count = cpu_device_count(environ)
        flags = environ.get("XLA_FLAGS", "")
        if count is not None and "xla_force_host_platform_device_count" not in flags:
            updates["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
    return updates


def rendezvous(setup: DistributeSetup, timeout_seconds: float | None = None) -> float:
    """Meet every process on the coordinator's port+1 within the deadline; return the seconds waited.

    Process 0 listens and answers "go" once all others connected; the others retry until the
    deadline. Raises ``RunSetupError`` (exit 2) naming the address instead of hanging or aborting.
    """
    assert setup.coordinator is not None
    host, port = setup.coordinator[0], setup.coordinator[1] + 1
    timeout = setup.timeout_seconds if timeout_seconds is None else timeout_seconds
    started = time.monotonic()
    deadline = started + timeout
    where = f"distribute.coordinator {setup.coordinator_address} (from {setup.sources.get('coordinator', 'config')})"
    if setup.num_processes == 1:
        return 0.0
    if setup.is_chief:
        _gather_peers(setup.num_processes, port, deadline, timeout, where)
    else:
        _reach_chief(host, port, deadline, timeout, where)
    return time.monotonic() - started


def _gather_peers(num_processes: int, port: int, deadline: float, timeout: float, where: str) -> None:
    try:
        server = socket.create_server(("", port), reuse_port=False)
    except OSError as exc:
        raise CoordinatorError(f"{where}: process 0 cannot listen on port {port} (port+1, the rendezvous): {exc.strerror or exc}; choose another port.") from None
    peers: list[socket.socket] = []
    try:
        while len(peers) < num_processes - 1:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CoordinatorError(
                    f"{where}: only {len(peers) + 1} of {num_processes} processes arrived within {timeout:g} s "
                    "(distribute.timeout_seconds); start the others with the same coordinator and num_processes."
                )
            server.settimeout(left)
            try:
                connection, _ = server.accept()
            except socket.timeout:
                continue
            peers.append(connection)
        for connection in peers:
            connection.sendall(b"go")
    finally:
        for connection in peers:
            connection.close()
        server.close()


def _reach_chief(host: str, port: int, deadline: float, timeout: float, where: str) -> None:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CoordinatorError(
                f"{where} unreachable: process 0 did not answer on {host}:{port} (port+1) within {timeout:g} s "
                "(distribute.timeout_seconds); check the address and that process 0 is running."
            )
        try:
            with socket.create_connection((host, port), timeout=min(left, 2.0)) as connection:
                connection.settimeout(max(deadline - time.monotonic(), 0.1))
                if connection.recv(2) == b"go":
                    return
        except OSError:
            time.sleep(0.2)


class CoordinatorError(BadInputError):
    """The processes of a multi_worker run did not all meet in time (exit 2)."""
