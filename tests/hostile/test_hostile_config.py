"""Hostile and odd configs: YAML bombs, numbers in scientific notation, defaults, names, huge integers, NUL bytes.

All fast: nothing here trains or imports TensorFlow.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from trainer.config import load_config
from trainer.config.loading import MAX_CONFIG_BYTES, MAX_DEPTH, run_name_from
from trainer.errors import BadInputError, ConfigError

BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(9)
)
ALIAS_CHAIN = "a0: &a0 [1]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 300))

BOMBS = {
    "recursive-list": ("name: x\nmodel: &m\n  hidden_units: [*m]\n", "recursive alias"),
    "recursive-map": ("name: x\ndata: &d {path: *d}\n", "recursive alias"),
    "billion-laughs": (BILLION_LAUGHS, "aliases are expanded"),
    "alias-chain-depth": (ALIAS_CHAIN, "deeper than"),
    "deep-flow": ("name: " + "[" * 100_000 + "]" * 100_000 + "\n", "deeper than"),
    "deep-block": ("".join(" " * i + f"k{i}:\n" for i in range(300)), "deeper than"),
    "many-values": ("name: x\nmetrics: [" + ", ".join(["accuracy"] * 20_000) + "]\n", "values"),
    "many-aliases": ("a: &a 1\nb: [" + ", ".join(["*a"] * 2_000) + "]\n", "aliases"),
}


@pytest.mark.parametrize("case", sorted(BOMBS))
def test_yaml_bombs_are_refused_fast(case, write_config, cli):
    text, expected = BOMBS[case]
    path = write_config(text)
    started = time.perf_counter()
    result = cli("validate", path)
    elapsed = time.perf_counter() - started
    assert result.exit_code == 2, result.output
    assert ": refused:" in result.output and expected in " ".join(result.output.split())
    assert str(path) in result.output
    assert "Traceback" not in result.output
    # an exponential blow-up takes minutes; 10 s leaves room for a loaded 2-core machine (3.9 s seen at load 5)
    assert elapsed < 10.0, f"{case} took {elapsed:.1f}s"


def test_a_huge_config_file_is_refused_before_parsing(write_config, cli):
    path = write_config("name: x\n# " + "padding " * (MAX_CONFIG_BYTES // 8) + "\n")
    result = cli("validate", path)
    assert result.exit_code == 2
    assert f"larger than {MAX_CONFIG_BYTES:,} bytes" in result.output


def test_anchors_and_moderate_nesting_still_load(write_config):
    """The limits stop bombs, not configs: anchors and aliases used as people use them are fine."""
    text = (
        "name: ok\n"
        "callbacks:\n"
        "  - {name: early_stopping, monitor: &watched val_loss, patience: 2}\n"
        "  - {name: reduce_lr_on_plateau, monitor: *watched}\n"
    )
    config = load_config(write_config(text))
    assert [spec.params["monitor"] for spec in config.callbacks] == ["val_loss", "val_loss"]
    assert MAX_DEPTH >= 16


@pytest.mark.parametrize(
    "line, key, expected",
    [
        ("optimizer: {name: adam, learning_rate: 1e-3}", ("optimizer", "learning_rate"), 0.001),
        ("optimizer: {name: sgd, learning_rate: 5E-2, momentum: 9e-1}", ("optimizer", "momentum"), 0.9),
        ("data: {validation: 2e-1}", ("data", "validation"), 0.2),
        ("train: {epochs: 1e1}", ("train", "epochs"), 10),
        ("train: {batch_size: 3.2e1}", None, "batch_size"),  # 32.0 is a float: an integer field refuses it by name
        ("model: {type: mlp, dropout: 25e-2}", ("model", "dropout"), 0.25),
    ],
)
def test_numbers_in_scientific_notation_are_numbers(line, key, expected, write_config):
    path = write_config(f"name: sci\n{line}\n")
    if key is None:
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert expected in str(info.value)
        return
    config = load_config(path)
    section = getattr(config, key[0])
    value = section.params[key[1]] if hasattr(section, "params") else getattr(section, key[1])
    assert value == pytest.approx(expected) and not isinstance(value, str)


def test_scientific_notation_in_set_values(write_config):
    config = load_config(write_config("name: sci\n"), ["optimizer.learning_rate=1e-4", "train.epochs=2e0"])
    assert config.optimizer.params["learning_rate"] == pytest.approx(1e-4)
    assert config.train.epochs == 2


def test_validate_refuses_a_learning_rate_that_is_text(write_config, cli):
    result = cli("validate", write_config("name: lr\noptimizer: {name: adam, learning_rate: 'fast'}\n"))
    assert result.exit_code == 2
    assert "optimizer.learning_rate" in result.output and "'fast'" in result.output


def test_a_model_section_without_type_is_an_mlp(write_config):
    config = load_config(write_config("name: m\nmodel: {hidden_units: [16]}\n"))
    assert config.model.type == "mlp" and config.model.hidden_units == [16]


def test_set_into_a_missing_model_section_is_an_mlp(write_config):
    config = load_config(write_config("name: m\n"), ["model.hidden_units=[8]"])
    assert config.model.type == "mlp" and config.model.hidden_units == [8]


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["data.image_size=[8,8]"], "--set data.image_size=[8,8]"),
        (["model.dropout=2"], "--set model.dropout=2"),
        (["train.epochs=0"], "--set train.epochs=0"),
    ],
)
def test_errors_caused_by_a_set_name_the_set(overrides, expected, write_config):
    path = write_config("name: s\nseed: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    text = str(info.value)
    assert expected in text
    assert f"{path}:1" not in text


@pytest.mark.parametrize("file_name, expected", [("my run.yaml", "my-run"), ("é tude ü.yaml", "e-tude-u"), ("日本.yaml", "run")])
def test_a_config_file_name_that_is_not_a_run_name_still_runs(file_name, expected, write_config, cli):
    path = write_config("seed: 1\n", name=file_name)
    assert load_config(path).name == expected
    result = cli("validate", path)
    assert result.exit_code == 0, result.output


def test_run_name_from_keeps_valid_characters():
    assert run_name_from("exp_1.v2-a") == "exp_1.v2-a"
    assert run_name_from("..") == "run"


@pytest.mark.parametrize(
    "line, key",
    [
        ("train: {epochs: 1000000000000000000000000000000}", "train.epochs"),
        ("train: {batch_size: 99999999999999999999}", "train.batch_size"),
        ("seed: 18446744073709551616", "seed"),
        ("data: {limit: 100000000000000000000}", "data.limit"),
        ("train: {steps_per_epoch: 4294967296}", "train.steps_per_epoch"),
        ("model: {hidden_units: [100000000000]}", "model.hidden_units"),
        ("data: {dataset: folder, path: /tmp, image_size: [100000, 100000]}", "data.image_size"),
    ],
)
def test_integers_too_large_for_their_field_are_refused(line, key, write_config, cli):
    result = cli("validate", write_config(f"name: big\n{line}\n"))
    assert result.exit_code == 2, result.output
    assert key in result.output and "less than" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("line, key", [('data: {path: "/tmp/a\\0b.npz"}', "data.path"), ('output: {dir: "out\\0"}', "output.dir")])
def test_nul_bytes_in_config_paths_are_refused(line, key, write_config, cli):
    result = cli("validate", write_config(f"name: nul\n{line}\n"))
    assert result.exit_code == 2, result.output
    assert key in result.output and "NUL byte" in result.output


def test_nul_byte_in_the_config_path_is_refused(cli, tmp_path):
    result = cli("validate", str(tmp_path / "a\x00b.yaml"))
    assert result.exit_code == 2 and "null byte" in result.output  # click refuses it as a path
    with pytest.raises(BadInputError, match="NUL byte"):
        load_config(str(tmp_path / "a\x00b.yaml"))


@pytest.mark.parametrize(
    "callback, expected",
    [
        ("{name: early_stopping, monitor: val_acuracy}", "callbacks.0.monitor: no metric named 'val_acuracy' is logged (did you mean 'val_accuracy'?)"),
        ("{name: early_stopping, patience: -1}", "callbacks.0.patience: must be a whole number from 0"),
        ("{name: early_stopping, patience: '3'}", "callbacks.0.patience: must be a whole number"),
        ("{name: early_stopping, restore_best_weights: 'yes'}", "callbacks.0.restore_best_weights: must be true or false; got 'yes'"),
        ("{name: early_stopping, mode: maximum}", "callbacks.0.mode: must be auto, min or max"),
        ("{name: learning_rate_scheduler, schedule: step, every: 0}", "callbacks.0.every: must be a whole number from 1"),
        ("{name: learning_rate_scheduler, schedule: exponential, rate: 0}", "callbacks.0.rate: must be a number > 0"),
        ("{name: learning_rate_scheduler, schedule: steps}", "callbacks.0.schedule: unknown value 'steps'; valid: exponential, module:function, step, time_based (did you mean 'step'?)"),
        ("{name: reduce_lr_on_plateau, factor: 1.5}", "callbacks.0.factor: must be a number > 0 and < 1; got 1.5"),
        ("{name: reduce_lr_on_plateau, monitor: val_auc}", "no metric named 'val_auc' is logged"),
        ("{name: csv_logger, separator: ''}", "callbacks.0.separator: must be a single character"),
        ("{name: model_checkpoint, save_freq: 0}", "callbacks.0.save_freq: must be a whole number from 1"),
        ("{name: model_checkpoint, filepath: best.weights}", "callbacks.0.filepath: must end in .keras or .h5"),
        ("{name: tensorboard, update_freq: often}", "callbacks.0.update_freq"),
        ("{name: terminate_on_nan, raise_eror: true}", "did you mean 'raise_error'?"),
    ],
)
def test_callback_parameters_are_checked_at_validation(callback, expected, write_config, cli):
    result = cli("validate", write_config(f"name: cb\ncallbacks: [{callback}]\n"))
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output


def test_monitor_of_validation_values_without_a_validation_split(write_config, cli):
    result = cli("validate", write_config("name: cb\ndata: {validation: none}\ncallbacks: [early_stopping]\n"))
    assert result.exit_code == 2
    assert "no metric named 'val_loss' is logged (there is no validation split: data.validation is none)" in result.output


def test_monitor_of_named_and_top_k_metrics(write_config, cli):
    text = (
        "name: cb\nmetrics: [accuracy, {name: top_k_accuracy, k: 3}, auc]\n"
        "callbacks: [{name: early_stopping, monitor: val_top_3_accuracy}, {name: reduce_lr_on_plateau, monitor: val_auc}]\n"
    )
    result = cli("validate", write_config(text))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "path, expected",
    [
        ("../escape.csv", "points outside the run directory"),
        ("logs/../../escape.csv", "points outside the run directory"),
        ("/tmp/elsewhere.csv", "is an absolute path"),
        ("~/x.csv", "is an absolute path"),
        (".", "points outside the run directory (or at the run directory itself)"),
        ("history.csv", "is one of trainer's own files"),
        ("metrics.json", "is one of trainer's own files"),
        ("model.h5", "is one of trainer's own files"),
        ("checkpoint-epoch0003.weights.h5", "is one of trainer's own files"),
        (".trainer.lock", "is one of trainer's own files"),
        ("./config.yaml", "is one of trainer's own files"),
    ],
)
@pytest.mark.parametrize("callback, param", [("csv_logger", "filename"), ("json_log", "filename"), ("model_checkpoint", "filepath"), ("tensorboard", "log_dir")])
def test_callback_files_stay_inside_the_run_directory(callback, param, path, expected, write_config, cli):
    result = cli("validate", write_config(f"name: cb\ncallbacks: [{{name: {callback}, {param}: '{path}'}}]\n"))
    assert result.exit_code == 2, result.output
    assert f"callbacks.0.{param}" in result.output


def test_callback_files_inside_the_run_directory_are_fine(write_config, cli):
    text = "name: cb\ncallbacks: [{name: csv_logger, filename: logs/epochs.csv}, {name: json_log, filename: my-history.jsonl}]\n"
    assert cli("validate", write_config(text)).exit_code == 0


def test_trainer_run_files_list_matches_the_modules_that_write_them():
    from trainer.inference.plots import CURVES_FILE
    from trainer.paths import TRAINER_RUN_FILES
    from trainer.run import checkpoint, features, rundir

    own = {rundir.CONFIG_FILE, rundir.MODEL_FILE, rundir.HISTORY_FILE, rundir.METRICS_FILE, rundir.MANIFEST_FILE,
           checkpoint.CHECKPOINT_FILE, checkpoint.LOCK_FILE, features.FEATURES_DIR, CURVES_FILE}
    assert own <= set(TRAINER_RUN_FILES)


@pytest.mark.parametrize(
    "optimizer, expected",
    [
        ("{name: adam, learning_rate: 'fast'}", "optimizer.learning_rate"),
        ("{name: adam, learning_rate: -1}", "optimizer.learning_rate: must be a number > 0"),
        ("{name: sgd, momentum: '0.9'}", "optimizer.momentum: must be a number"),
        ("{name: sgd, nesterov: 1}", "optimizer.nesterov: must be true or false"),
        ("{name: adam, clipnorm: 1, clipvalue: 1}", "clipnorm and clipvalue cannot be used together"),
        ("{name: adam, beta1: 0.9}", "did you mean 'beta_1'?"),
    ],
)
def test_optimizer_parameters_are_checked_at_validation(optimizer, expected, write_config, cli):
    result = cli("validate", write_config(f"name: opt\noptimizer: {optimizer}\n"))
    assert result.exit_code == 2, result.output
    assert expected in result.output


@pytest.mark.parametrize(
    "schedule, expected",
    [
        ("{name: exponential_decay, initial_learning_rate: 0.1, decay_steps: 0, decay_rate: 0.9}", "optimizer.learning_rate.decay_steps: must be a number > 0; got 0"),
        ("{name: cosine_decay_restarts, initial_learning_rate: 0.1, first_decay_steps: 0}", "first_decay_steps: must be a number > 0"),
        ("{name: cosine_decay, initial_learning_rate: 0.1}", "cosine_decay needs decay_steps"),
        ("{name: cosine_decay, initial_learning_rate: '1e-3', decay_steps: 10}", "initial_learning_rate: must be a number"),
        ("{name: polynomial_decay, initial_learning_rate: 0.1, decay_steps: 5, cycle: 1}", "cycle: must be true or false"),
        ("{name: piecewise_constant_decay, boundaries: [10, 5], values: [0.1, 0.01]}", "needs one more value than boundaries"),
        ("{name: cosine_decy, initial_learning_rate: 0.1}", "did you mean 'cosine_decay'?"),
    ],
)
def test_learning_rate_schedules_are_checked_at_validation(schedule, expected, write_config, cli):
    result = cli("validate", write_config(f"name: s\noptimizer: {{name: sgd, learning_rate: {schedule}}}\n"))
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split())


@pytest.mark.parametrize(
    "metric, expected",
    [
        ("{name: auc, curve: XYZ}", "metrics.1.curve: must be 'ROC' or 'PR'; got 'XYZ'"),
        ("{name: auc, num_thresholds: 1}", "metrics.1.num_thresholds: must be a whole number from 2"),
        ("{name: top_k_accuracy, k: 0}", "metrics.1.k: must be a whole number from 1"),
        ("{name: precision, thresholds: 2}", "metrics.1.thresholds: must be a number from 0 to 1"),
        ("{name: f1_score, average: median}", "metrics.1.average: must be null or 'micro' or 'macro' or 'weighted'"),
        ("{name: recall, top_kk: 1}", "did you mean 'top_k'?"),
    ],
)
def test_metric_parameters_are_checked_at_validation(metric, expected, write_config, cli):
    result = cli("validate", write_config(f"name: m\nmetrics: [accuracy, {metric}]\n"))
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split())


def test_sparse_only_metric_parameter_follows_the_label_encoding(write_config, cli):
    text = "name: m\nmetrics: [{{name: top_k_accuracy, from_sorted_ids: false}}]\nloss: {loss}\n"
    assert cli("validate", write_config(text.format(loss="sparse_categorical_crossentropy"))).exit_code == 0
    result = cli("validate", write_config(text.format(loss="categorical_crossentropy")))
    assert result.exit_code == 2 and "from_sorted_ids" in result.output


def test_parameter_tables_match_keras_signatures():
    """The Keras-free tables name exactly the parameters Keras's classes take."""
    import keras

    from trainer.catalogue.callbacks import CALLBACKS, callback_class
    from trainer.catalogue.optimizers import OPTIMIZERS, keras_params
    from trainer.catalogue.params import CALLBACK_PARAMS, COMMON_OPTIMIZER, OPTIMIZER_PARAMS

    for name, info in CALLBACKS.items():
        assert set(CALLBACK_PARAMS[name]) == set(keras_params(callback_class(info))), name
    for name, cls in OPTIMIZERS.items():
        assert set(OPTIMIZER_PARAMS[name]) | set(COMMON_OPTIMIZER) == set(keras_params(getattr(keras.optimizers, cls))), name
    from trainer.catalogue.optimizers import REQUIRED, SCHEDULES, keras_defaults
    from trainer.catalogue.params import SCHEDULE_TABLES

    from trainer.catalogue.metrics import METRICS, metric_class
    from trainer.catalogue.params import METRIC_PARAMS, SPARSE_ONLY

    for name in METRICS.names(with_aliases=False):
        for encoding in ("sparse", "onehot"):
            expected = set(keras_params(metric_class(name, encoding, "metrics.0"))) - {"name"}
            extra = set(SPARSE_ONLY.get(name, {})) if encoding == "sparse" else set()
            assert set(METRIC_PARAMS[name]) | extra == expected, (name, encoding)
    for name, cls in SCHEDULES.items():
        defaults = keras_defaults(getattr(keras.optimizers.schedules, cls))
        assert set(SCHEDULE_TABLES[name]) == set(defaults), name
        assert {p for p, (_, required) in SCHEDULE_TABLES[name].items() if required} == {p for p, d in defaults.items() if d is REQUIRED}, name
