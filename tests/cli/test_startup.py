"""What keeps every command's fixed costs down: optional packages Keras would import for nothing,
full garbage collections where there is no garbage, matplotlib loaded while the model trains."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from tests.conftest import tiny_config

from trainer.cli.common import unused_imports, without_unused_imports


def test_the_tensorflow_backend_skips_every_unused_package_and_jax_keeps_what_it_needs():
    assert set(unused_imports("tensorflow", {})) == {"sklearn", "pandas", "matplotlib", "scipy", "jax", "IPython"}
    jax_skips = unused_imports("jax", {})
    assert "jax" not in jax_skips and "scipy" not in jax_skips  # JAX imports scipy itself
    assert {"sklearn", "pandas", "matplotlib", "IPython"} <= set(jax_skips)
    assert unused_imports(None, {"KERAS_BACKEND": "jax"}) == jax_skips
    assert unused_imports("tensorflow", {"TRAINER_LEAN_IMPORT": "0"}) == ()


def test_a_skipped_package_already_imported_is_left_alone():
    import json as already_imported

    with without_unused_imports(("json",)):
        import json as inside

        assert inside is already_imported
    assert sys.modules["json"] is already_imported


PROBE = """
import json, sys
from trainer.cli.common import quiet_tensorflow
quiet_tensorflow()
import keras
skipped = sorted(n for n in ("sklearn", "pandas", "matplotlib", "scipy", "jax", "IPython") if n not in sys.modules)
tensorflow_loaded = "tensorflow" in sys.modules
import pandas  # the user's code may still import any of them afterwards
print(json.dumps({"skipped": skipped, "tensorflow": tensorflow_loaded, "pandas": pandas.__name__, "keras_sees_pandas": __import__("keras.src.trainers.data_adapters.array_slicing", fromlist=["x"]).pandas is not None}))
"""


def _probe(**env: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TRAINER_LEAN_IMPORT")}
    environment.update(env)
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=environment, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_tensorflow_starts_without_the_optional_packages_which_still_import_after():
    pytest.importorskip("pandas")
    lean = _probe()
    assert lean["skipped"] == ["IPython", "jax", "matplotlib", "pandas", "scipy", "sklearn"]
    assert lean["pandas"] == "pandas" and lean["keras_sees_pandas"] is False
    full = _probe(TRAINER_LEAN_IMPORT="0")
    assert full["keras_sees_pandas"] is True  # the escape hatch: Keras imports everything as usual


@pytest.mark.slow
def test_keras_on_jax_starts_without_the_optional_packages_and_without_tensorflow():
    """On JAX Keras alone imported scikit-learn, pandas, matplotlib and IPython: 2-3 s of a 25 s MNIST run."""
    pytest.importorskip("jax")
    pytest.importorskip("pandas")
    lean = _probe(KERAS_BACKEND="jax")
    assert lean["skipped"] == ["IPython", "matplotlib", "pandas", "sklearn"]  # JAX itself needs jax and scipy
    assert lean["tensorflow"] is False
    assert lean["pandas"] == "pandas" and lean["keras_sees_pandas"] is False
    assert _probe(KERAS_BACKEND="jax", TRAINER_LEAN_IMPORT="0")["keras_sees_pandas"] is True


SEED_PROBE = """
import json, random, sys
import numpy as np
import keras
from trainer.runtime.hidden_tensorflow import set_random_seed

def draws():
    return [random.random(), float(np.random.rand()), float(keras.random.uniform(()))]

set_random_seed(7, tf_data=False)
ours = draws()
set_random_seed(7, tf_data=False)
again = draws()
tensorflow_loaded = "tensorflow" in sys.modules
keras.utils.set_random_seed(7)  # Keras's own (imports TensorFlow where it is installed)
print(json.dumps({"tensorflow": tensorflow_loaded, "repeat": ours == again, "as_keras": ours == draws()}))
"""


@pytest.mark.slow
def test_seeding_on_jax_does_not_start_tensorflow_and_matches_keras():
    """keras.utils.set_random_seed imports TensorFlow wherever it is installed (4-5 s on JAX here) to seed it for tf.data."""
    pytest.importorskip("jax")
    environment = dict(os.environ, KERAS_BACKEND="jax")
    done = subprocess.run([sys.executable, "-c", SEED_PROBE], capture_output=True, text=True, env=environment, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"tensorflow": False, "repeat": True, "as_keras": True}


def test_an_h5_write_costs_no_full_garbage_collection(tmp_path, monkeypatch):
    import gc

    import h5py

    from trainer.run import rundir

    collections: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda *args: collections.append(1) or 0)
    rundir.write_h5_atomically(tmp_path / "model.h5", lambda handle: handle.attrs.update(ok=1))
    with h5py.File(tmp_path / "model.h5", "r") as handle:
        assert handle.attrs["ok"] == 1

    def fails(handle):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        rundir.write_h5_atomically(tmp_path / "other.h5", fails)
    assert collections == []  # HDF5 writes into memory: no half-open file on disk to collect
    assert not (tmp_path / "other.h5").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["model.h5"]
    assert gc.isenabled()


def test_after_first_epoch_calls_once_per_fit():
    from trainer.run.recorder import after_first_epoch

    calls: list[int] = []
    callback = after_first_epoch(lambda: calls.append(1))
    for epoch in range(3):
        callback.on_epoch_end(epoch, {})
    assert calls == [1]


def test_preload_loads_matplotlib_for_the_curves(tmp_path):
    from trainer.inference.plots import preload, write_curves

    preload()
    assert "matplotlib.figure" in sys.modules and "matplotlib.ticker" in sys.modules
    path = write_curves([{"epoch": 1, "loss": 1.0, "val_loss": 1.2}, {"epoch": 2, "loss": 0.5, "val_loss": 0.9}], tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


TF_LOADED_PROBE = """
import sys
from trainer.cli import app
try:
    app(sys.argv[1:])
except SystemExit as done:
    code = done.code
print("TENSORFLOW_LOADED", "tensorflow" in sys.modules, file=sys.stderr)
raise SystemExit(code)
"""


@pytest.mark.slow
def test_a_jax_run_eval_and_predict_never_start_an_installed_tensorflow(tmp_path, mnist_npz, write_config, subprocess_env):
    """TensorFlow installed (the default install) but JAX chosen: nothing of it loads (4-5 s saved; the run's .h5 save imported it).

    One run, then eval and predict of it, each its own process (one run serves all three).
    """
    pytest.importorskip("jax")
    import numpy as np

    config = write_config(tiny_config(mnist_npz))
    run_dir = tmp_path / "run"
    subprocess_env["KERAS_BACKEND"] = "jax"
    np.save(tmp_path / "x.npy", np.zeros((3, 28, 28), np.uint8))
    commands = {
        "run": ["run", str(config), "--run-dir", str(run_dir)],
        "eval": ["eval", str(run_dir)],
        "predict": ["predict", str(run_dir), str(tmp_path / "x.npy"), "--output", str(tmp_path / "predictions.csv")],
    }
    for command, args in commands.items():
        done = subprocess.run([sys.executable, "-c", TF_LOADED_PROBE, *args], capture_output=True, text=True, env=subprocess_env, timeout=300)
        assert done.returncode == 0, (command, done.stdout[-2000:] + done.stderr[-2000:])
        assert "Traceback" not in done.stderr, command
        assert "TENSORFLOW_LOADED False" in done.stderr, command


EXIT_PROBE = """
import atexit, sys
import keras  # noqa: F401 - the backend's modules are loaded, as at the end of a run

class Finalised:
    def __del__(self, _write=__import__("os").write):
        _write(2, b"MODULE TEARDOWN\\n")

kept = Finalised()
atexit.register(lambda: sys.stderr.write("EXIT HANDLERS\\n"))
from trainer.cli import entrypoint
sys.argv = ["trainer", "--version"]
entrypoint()
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_the_console_script_skips_module_teardown_once_keras_is_loaded_on_any_backend(backend, subprocess_env):
    """The interpreter's module teardown after the exit handlers: about a second with TensorFlow, 0.7 s with JAX here."""
    pytest.importorskip(backend)
    subprocess_env["KERAS_BACKEND"] = backend
    done = subprocess.run([sys.executable, "-c", EXIT_PROBE], capture_output=True, text=True, env=subprocess_env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "EXIT HANDLERS" in done.stderr  # atexit still runs
    assert "MODULE TEARDOWN" not in done.stderr
