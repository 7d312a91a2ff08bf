"""Config loading, --set overrides and the loss/label/model agreement checks (no TensorFlow needed)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_config
from trainer.config.checks import plan_run
from trainer.config import Config, load_config, parse_override
from trainer.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_defaults_match_the_documented_contract():
    config = Config()
    assert config.data.dataset == "mnist" and config.data.validation == "test" and config.data.path is None
    assert config.labels.encoding == "auto"
    assert config.model.type == "mlp" and config.model.hidden_units == [64, 64] and config.model.output == "softmax"
    assert config.loss.name == "sparse_categorical_crossentropy" and config.optimizer.name == "adam"
    assert (config.train.epochs, config.train.batch_size, config.train.shuffle) == (10, 32, True)
    assert config.device == "auto" and config.output.dir == "outputs"


def test_resolved_config_round_trips(write_config):
    path = write_config(tiny_config("/tmp/x.npz", optimizer={"name": "sgd", "learning_rate": 0.1, "momentum": 0.9}))
    config = load_config(path)
    again = Config.model_validate(yaml.safe_load(config.to_yaml()))
    assert again.to_dict() == config.to_dict()  # (the private config_dir is where it was read from)
    assert again.optimizer.params == {"learning_rate": 0.1, "momentum": 0.9}


@pytest.mark.parametrize(
    "text, key, value",
    [
        ("train.epochs=3", ("train", "epochs"), 3),
        ("model.hidden_units=[128,64]", ("model", "hidden_units"), [128, 64]),
        ("data.validation=0.2", ("data", "validation"), 0.2),
        ("data.path=", ("data", "path"), None),
        ("name=my-run", ("name",), "my-run"),
    ],
)
def test_parse_override_reads_yaml_values(text, key, value):
    assert parse_override(text) == (key, value)


def test_set_on_a_named_spec_string_turns_it_into_a_mapping(write_config):
    config = load_config(write_config(tiny_config(None, loss="categorical_crossentropy")), ["loss.label_smoothing=0.1"])
    assert config.loss.name == "categorical_crossentropy" and config.loss.params == {"label_smoothing": 0.1}


@pytest.mark.parametrize("bad", ["train.epochs", "=3", "train..epochs=3", "model.hidden_units=[1,"])
def test_malformed_set_is_refused(write_config, bad):
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tiny_config(None)), [bad])
    assert "--set" in str(info.value)


def test_errors_name_file_line_key_and_value(write_config):
    path = write_config("name: t\ntrain:\n  epochs: -1\n  batch_size: 0\ndata:\n  validation: 1.5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert "3 problems" in text
    assert f"{path}:3: train.epochs" in text and "-1" in text
    assert f"{path}:4: train.batch_size" in text
    assert f"{path}:6: data.validation" in text and "1.5" in text and "between 0 and 1" in text


def test_unknown_key_suggests_the_closest(write_config):
    with pytest.raises(ConfigError) as info:
        load_config(write_config("train:\n  epoch: 3\n"))
    assert "unknown key 'epoch'" in str(info.value) and "did you mean 'epochs'" in str(info.value)


def test_unknown_dataset_and_activation_suggest(write_config):
    with pytest.raises(ConfigError) as info:
        load_config(write_config("data: {dataset: minst}\nmodel: {type: mlp, activation: rellu}\n"))
    text = str(info.value)
    assert "'minst'" in text and "did you mean 'mnist'" in text and "did you mean 'relu'" in text


def test_yaml_syntax_error_has_line_and_column(write_config):
    with pytest.raises(ConfigError) as info:
        load_config(write_config("train:\n  epochs: [1, 2\nname: x\n"))
    assert "YAML syntax error" in str(info.value) and ":3:" in str(info.value)


@pytest.mark.parametrize("text, message", [("", "is empty"), ("- a\n- b\n", "top level must be a mapping"), ("a: 1\na: 2\n", "appears twice")])
def test_empty_list_and_duplicate_documents(write_config, text, message):
    with pytest.raises(ConfigError) as info:
        load_config(write_config(text))
    assert message in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_auto_encoding_follows_the_loss(write_config):
    sparse = plan_run(load_config(write_config(tiny_config(None))))
    onehot = plan_run(load_config(write_config(tiny_config(None, loss="categorical_crossentropy"))))
    assert (sparse.encoding, onehot.encoding) == ("sparse", "onehot")
    assert sparse.loss_params == {"from_logits": False}


@pytest.mark.parametrize(
    "loss, encoding, needs",
    [("categorical_crossentropy", "sparse", "one-hot"), ("sparse_categorical_crossentropy", "onehot", "sparse"), ("mse", "sparse", "one-hot")],
)
def test_encoding_that_disagrees_with_the_loss_is_refused(write_config, loss, encoding, needs):
    config = load_config(write_config(tiny_config(None, loss=loss, labels={"encoding": encoding})))
    with pytest.raises(ConfigError) as info:
        plan_run(config)
    assert needs in str(info.value) and "labels.encoding" in str(info.value)


def test_softmax_with_from_logits_is_refused_and_logits_default_is_set(write_config):
    both = tiny_config(None, loss={"name": "sparse_categorical_crossentropy", "from_logits": True})
    with pytest.raises(ConfigError, match="softmax twice"):
        plan_run(load_config(write_config(both)))
    neither = tiny_config(None, model={"type": "mlp", "output": "logits"}, loss={"name": "sparse_categorical_crossentropy", "from_logits": False})
    with pytest.raises(ConfigError, match="raw scores"):
        plan_run(load_config(write_config(neither)))
    implied = plan_run(load_config(write_config(tiny_config(None, model={"type": "mlp", "output": "logits"}))))
    assert implied.loss_params["from_logits"] is True and implied.notices


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_validates(path, cli):
    result = cli("validate", path)
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_set_key_with_a_non_ascii_digit_is_a_key_not_an_index(write_config):
    """Found by hypothesis: '¹'.isdigit() is True but int('¹') fails."""
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tiny_config(None)), ["¹=1"])
    assert "unknown key '¹'" in str(info.value)


def test_set_a_parameter_of_the_default_loss_or_optimizer(write_config):
    """`--set loss.from_logits=...` with no loss in the file sets a parameter of the default loss."""
    config = tiny_config("/tmp/x.npz")
    del config["loss"], config["optimizer"]
    path = write_config(config)
    loaded = load_config(path, ["optimizer.learning_rate=0.01", "loss.ignore_class=3"])
    assert loaded.optimizer.name == "adam" and loaded.optimizer.params == {"learning_rate": 0.01}
    assert loaded.loss.name == "sparse_categorical_crossentropy" and loaded.loss.params == {"ignore_class": 3}


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seed_outside_numpys_range_is_refused(write_config, seed):
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tiny_config("/tmp/x.npz", seed=seed)))
    assert "seed" in str(caught.value) and str(seed) in str(caught.value)


def test_union_keys_give_one_problem_without_pydantic_tags(write_config):
    path = write_config(tiny_config("/tmp/x.npz", train={"mixed_precision": "maybe"}, compile={"steps_per_execution": 0}))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [problem.split(": ", 1)[1] for problem in caught.value.problems] == [
        "train.mixed_precision: Input should be 'auto' or 'bfloat16' or a valid boolean; got 'maybe'",
        "compile.steps_per_execution: Input should be 'auto' or greater than 0; got 0",
    ]


def test_problem_inside_an_overridden_list_names_the_set(write_config):
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tiny_config("/tmp/x.npz")), ["model.hidden_units=[8,0]"])
    assert caught.value.problems == ["--set model.hidden_units=[8,0]: model.hidden_units.1: Input should be greater than 0; got 0"]


def test_the_documented_config_block_of_defaults_validates(write_config):
    readme = (Path(__file__).resolve().parents[2] / "docs" / "config.md").read_text(encoding="utf-8")
    block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = load_config(write_config(block))
    assert config.to_dict() == load_config(write_config("name: mnist_sparse\n", "minimal.yaml")).to_dict()


def test_a_schedule_and_a_learning_rate_callback_are_refused_by_validate(cli, write_config):
    """Both would set the learning rate; caught without TensorFlow, before any run."""
    config = tiny_config(
        None,
        optimizer={"name": "adam", "learning_rate": {"name": "exponential_decay", "initial_learning_rate": 0.01, "decay_steps": 10, "decay_rate": 0.9}},
        callbacks=[{"name": "reduce_lr_on_plateau"}],
    )
    result = cli("validate", write_config(config))
    assert result.exit_code == 2
    assert "optimizer.learning_rate: is a schedule" in " ".join(result.output.split())


def test_a_top_level_key_named_like_a_model_type_is_an_unknown_key(write_config):
    """Found by hypothesis: a top-level key 'vgg16_head' crashed the error report (it was taken for a union tag)."""
    from trainer.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        load_config(write_config({"vgg16_head": None}))
    assert "unknown key 'vgg16_head'" in str(error.value)
