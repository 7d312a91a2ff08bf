"""Property-based: mutated configs and random YAML are accepted or refused with ConfigError / exit 2, never a traceback."""
from __future__ import annotations

import copy

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainer.config.checks import plan_run
from trainer.config import load_config
from trainer.errors import ConfigError

BASE = {
    "name": "fuzz",
    "seed": 1,
    "data": {"dataset": "mnist", "validation": "test", "limit": 100},
    "labels": {"encoding": "auto"},
    "model": {"type": "mlp", "hidden_units": [16], "activation": "relu", "dropout": 0.0, "output": "softmax"},
    "loss": "sparse_categorical_crossentropy",
    "optimizer": {"name": "adam", "learning_rate": 0.01},
    "metrics": ["accuracy"],
    "train": {"epochs": 1, "batch_size": 32, "shuffle": True},
    "callbacks": [{"name": "early_stopping", "patience": 2}],
    "device": "cpu",
    "output": {"dir": "outputs"},
}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["mnist", "adam", "mlp", "softmax", "logits", "onehot", "sparse", "auto", "test", "none"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=6)
keys = st.one_of(st.text(max_size=10), st.sampled_from(["name", "type", "epochs", "batch_size", "dataset", "validation", "hidden_units", "learning_rate", "from_logits", "encoding", "patience"]))


def paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from paths(value, prefix + (index,))


@st.composite
def mutated_configs(draw):
    config = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        all_paths = [p for p in paths(config) if p]
        path = draw(st.sampled_from(all_paths))
        parent = config
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "insert"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(keys)] = draw(values)
        else:
            parent.append(draw(values))
        if not isinstance(config, dict) or not config:
            break
    return config


def check(config_path, overrides=()):
    """Loading and planning either succeed or raise ConfigError; nothing else."""
    try:
        plan_run(load_config(config_path, list(overrides)))
    except ConfigError as error:
        assert str(error)


FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.slow
@FUZZ
@given(config=mutated_configs())
def test_mutated_configs_load_or_raise_config_error(config, tmp_path):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    check(path)


@FUZZ
@given(text=st.one_of(st.text(max_size=80), st.text(alphabet=":-[]{}#&*!|>'\"%@`,? \n\tab01", max_size=80)))
def test_random_yaml_text_loads_or_raises_config_error(text, tmp_path):
    path = tmp_path / "random.yaml"
    path.write_text(text, encoding="utf-8")
    check(path)


@FUZZ
@given(overrides=st.lists(st.one_of(st.text(max_size=30), st.builds(lambda k, v: f"{k}={v}", st.sampled_from(
    ["train.epochs", "train.batch_size", "model.hidden_units", "model.hidden_units.0", "loss", "loss.from_logits",
     "optimizer.learning_rate", "data.validation", "callbacks.0.patience", "metrics.3", "seed", "labels", "x.y.z"]),
    st.text(max_size=12))), max_size=3))
def test_random_set_overrides_apply_or_raise_config_error(overrides, tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(BASE, sort_keys=False))
    check(path, overrides)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=mutated_configs())
def test_validate_command_exits_0_or_2(config, tmp_path):
    from typer.testing import CliRunner

    from trainer.cli import app

    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (0, 2), result.output
