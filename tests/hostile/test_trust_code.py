"""Custom code named by a run directory resolves only to classes and functions defined in the user's module.

A crafted ``manifest.json`` names ``module:attr`` with ``factory_params``; trainer must never reach
a function the module imported (``os.system``), a path through it (``keras...``), a builtin, a
class imported from elsewhere or a non-Keras class, even when the user named the code folder
(``--code``). Fast: the run directories are written by hand; every refusal comes before the model
file is read. The legitimate round trip is ``tests/catalogue/test_catalogue.py::test_custom_loss_metric_callback_round_trip``
(slow) and ``test_a_legit_factory_and_class_resolve`` here.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_config

MANIFEST = {
    "dataset": "mnist", "num_classes": 10, "class_names": [str(i) for i in range(10)], "input_shape": [28, 28, 1],
    "label_encoding": "sparse", "loss": {"name": "sparse_categorical_crossentropy"}, "model_output": "softmax",
    "custom_objects": [], "model_type": "mlp",
}

# The user's own module: it imports os, subprocess, keras and a class from elsewhere, aliases, a lambda.
USER_MODULE = '''
import os
import subprocess
from os import system
from subprocess import Popen
import keras
from keras import ops
from keras.losses import Loss
from collections import OrderedDict

run_shell = os.system
alias_popen = Popen
shell = lambda command: os.system(command)
ready = keras.losses.MeanSquaredError()


class NotKeras:
    def __init__(self, command="true"):
        os.system(command)


class Scaled(keras.losses.Loss):
    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, y_true, y_pred):
        return self.scale * ops.mean(ops.square(y_true - y_pred), axis=-1)


AliasScaled = Scaled


def scaled_mse(scale=1.0):
    def scaled_mse_loss(y_true, y_pred):
        return scale * ops.mean(ops.square(y_true - y_pred), axis=-1)
    return scaled_mse_loss


def returns_object(command="true"):
    return OrderedDict(command=command)
'''


@pytest.fixture(autouse=True)
def forget_user_modules():
    """The user modules these tests import (my_losses, my_pkg, my_custom) and their folders leave no trace for later tests."""
    path = list(sys.path)
    yield
    sys.path[:] = path
    for name in [n for n in sys.modules if n.split(".")[0] in ("my_losses", "my_pkg", "my_custom")]:
        del sys.modules[name]


def make_run(path: Path, custom_objects: list) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump(tiny_config(None)))
    (path / "manifest.json").write_text(json.dumps({**MANIFEST, "custom_objects": custom_objects}))
    (path / "model.h5").write_bytes(b"not really a model")
    return path


@pytest.fixture
def code(tmp_path) -> Path:
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "my_losses.py").write_text(USER_MODULE)
    pkg = folder / "my_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import os\nimport sys\nsys.modules['my_pkg.evil'] = os\n")
    return folder


def shell_params(marker: Path) -> dict:
    return {"command": f"touch {marker}"}


HOSTILE = {
    # ref -> (factory_params given?, words the one message holds)
    "os-dotted": ("my_losses:os.system", True, "not a valid reference"),
    "keras-dotted": ("my_losses:keras.utils.subprocess.run", True, "not a valid reference"),
    "subprocess-dotted": ("my_losses:subprocess.run", True, "not a valid reference"),
    "imported-function": ("my_losses:system", True, "the function system from posix"),
    "aliased-builtin": ("my_losses:run_shell", True, "from posix"),
    "imported-class": ("my_losses:Popen", True, "the class Popen from subprocess"),
    "aliased-class": ("my_losses:alias_popen", True, "the class Popen from subprocess"),
    "keras-class-imported": ("my_losses:Loss", True, "from keras"),
    "module": ("my_losses:os", True, "the module os"),
    "keras-module": ("my_losses:keras", True, "the module keras"),
    "lambda": ("my_losses:shell", True, "the lambda"),
    "builtin-name": ("my_losses:print", True, "has no attribute 'print'"),
    "dunder-builtins": ("my_losses:__builtins__", True, "a dict object"),
    "instance": ("my_losses:ready", False, "a MeanSquaredError object"),
    "non-keras-class": ("my_losses:NotKeras", True, "not a Keras object"),
    "non-keras-class-no-params": ("my_losses:NotKeras", False, "not a Keras object"),
    "keras-class-with-params": ("my_losses:Scaled", True, "only a factory function is called"),
    "aliased-keras-class": ("my_losses:AliasScaled", False, "the class Scaled from my_losses"),
    "factory-returns-other": ("my_losses:returns_object", True, "returned OrderedDict"),
    "sys-modules-swap": ("my_pkg.evil:system", True, "gave the module 'os'"),
    "stdlib-module": ("os:system", True, "module 'os'"),
    "stdlib-dotted-module": ("os.path:join", True, "module 'os.path'"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest.mark.parametrize("command", ["eval", "predict"])
def test_hostile_custom_objects_are_refused_and_nothing_runs(case, command, cli, tmp_path, code, monkeypatch):
    ref, with_params, words = HOSTILE[case]
    marker = tmp_path / "pwned"
    entry = {"ref": ref, "path": str(code), **({"factory_params": shell_params(marker)} if with_params else {})}
    run = make_run(tmp_path / "run", [entry])
    monkeypatch.chdir(tmp_path)
    args = [command, run, *([tmp_path / "x.npy"] if command == "predict" else []), "--code", code]
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert not marker.exists(), f"{ref} ran a shell command"
    assert words in result.text, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 or result.output.count("error") == 1, result.output


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_custom_objects_refused_by_the_api(case, tmp_path, code, monkeypatch):
    from trainer.models.keras_objects import load_custom_objects
    from trainer.errors import BadInputError

    ref, with_params, words = HOSTILE[case]
    marker = tmp_path / "pwned"
    entry = {"ref": ref, "path": str(code), **({"factory_params": shell_params(marker)} if with_params else {})}
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInputError) as caught:
        load_custom_objects({"custom_objects": [entry]}, [code])
    assert words in caught.value.message
    assert not marker.exists()


def test_the_projects_own_my_losses_cannot_reach_os(cli, tmp_path, monkeypatch):
    """The issue's case: configs/my_losses.py imports keras; no path through it reaches a shell."""
    configs = Path(__file__).resolve().parents[2] / "configs"
    marker = tmp_path / "pwned"
    for ref in ("my_losses:keras.src.utils.io_utils.os.system", "my_losses:ops", "my_losses:keras"):
        run = make_run(tmp_path / ref.replace(":", "_"), [{"ref": ref, "path": str(configs), "factory_params": {"command": f"touch {marker}"}}])
        monkeypatch.chdir(tmp_path)
        result = cli("eval", run, "--code", configs)
        assert result.exit_code == 2, result.output
        assert not marker.exists()


def test_a_legit_factory_and_class_resolve(tmp_path, code, monkeypatch):
    from trainer.models.keras_objects import load_custom_objects

    monkeypatch.chdir(tmp_path)
    objects = load_custom_objects({"custom_objects": [
        {"ref": "my_losses:scaled_mse", "path": str(code), "factory_params": {"scale": 10.0}},
        {"ref": "my_losses:Scaled", "path": str(code)},
    ]}, [code])
    assert objects["Scaled"].__module__ == "my_losses"
    assert objects["scaled_mse_loss"].__name__ == "scaled_mse_loss"


@pytest.mark.parametrize(
    "ref, words",
    [
        ("my_custom:os", "the module os"),
        ("my_custom:Popen", "the class Popen from subprocess"),
        ("my_custom:Outer.Inner", "not a valid reference"),
        ("my_custom:shell", "the lambda"),
    ],
)
def test_config_references_follow_the_same_rule(ref, words, cli, tmp_path, write_config):
    """A config is trusted, but a reference still names code written in the module, not what it imports."""
    folder = tmp_path
    (folder / "my_custom.py").write_text("import os\nfrom subprocess import Popen\nshell = lambda y_true, y_pred: 0\n")
    path = write_config(tiny_config(tmp_path / "none.npz", loss=ref, labels={"encoding": "onehot"}))
    result = cli("run", path, "--run-dir", tmp_path / "r")
    assert result.exit_code == 2 and words in result.text, result.output
    assert not (tmp_path / "r").exists()
