"""metrics.json is one model (``readers.run_files.MetricsRecord``): what the run writes is what every reader reads back."""
from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from trainer.errors import RunDirError
from trainer.readers.run_files import REASON_LIMIT, MetricsRecord, read_metrics_record

ROWS = [{"epoch": 1, "loss": 0.9, "accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.4, "phase": "head"},
        {"epoch": 2, "loss": 0.5, "accuracy": 0.8, "val_loss": 0.7, "val_accuracy": 0.6, "phase": "head"}]
BEST = {"monitor": "val_loss", "mode": "min", "epoch": 2, "value": 0.7, "last_epoch": 2, "last_weights": "model.h5"}


def test_what_the_run_writes_reads_back_equal(tmp_path):
    written = MetricsRecord.from_history("completed", ROWS, test={"loss": 0.71, "accuracy": 0.61, "macro_f1": 0.6}, wall_seconds=3.25, seed=4,
                                         best=BEST, ema={"decay": 0.99, "warmup": True, "every": 1}).write(tmp_path)
    assert written["train"] == {"loss": 0.5, "accuracy": 0.8, "phase": "head"} and written["validation"] == {"loss": 0.7, "accuracy": 0.6}
    assert written["epochs_completed"] == 2 and written["best"] == BEST and "reason" not in written and "test_tta" not in written
    assert json.loads((tmp_path / "metrics.json").read_text()) == written
    assert read_metrics_record(tmp_path).to_dict() == written
    assert read_metrics_record(tmp_path).best.epoch == 2


def test_a_failed_run_puts_its_reason_after_the_status_and_a_huge_one_is_cut_to_a_readable_start(tmp_path):
    written = MetricsRecord.from_history("failed", ROWS[:1], reason="x" * (REASON_LIMIT * 3)).write(tmp_path)
    assert list(written)[:2] == ["status", "reason"] and len(written["reason"]) == REASON_LIMIT and written["reason"].endswith("...")
    assert read_metrics_record(tmp_path).reason == written["reason"]


def test_a_diverged_run_round_trips_its_non_finite_numbers(tmp_path):
    MetricsRecord.from_history("failed", [{"epoch": 1, "loss": float("nan"), "val_loss": float("inf")}], reason="loss is nan").write(tmp_path)
    read = read_metrics_record(tmp_path)
    assert math.isnan(read.train["loss"]) and read.validation["loss"] == math.inf


def test_the_writer_refuses_what_a_reader_would(tmp_path):
    with pytest.raises(ValidationError):
        MetricsRecord.from_history("", ROWS)  # no status
    with pytest.raises(ValidationError):
        MetricsRecord.from_history("completed", ROWS, best={**BEST, "last_weights": "../x.h5"})
    assert not (tmp_path / "metrics.json").exists()


def test_none_when_absent_and_a_run_dir_error_naming_the_field_when_bad(tmp_path):
    assert read_metrics_record(tmp_path) is None
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "completed", "epochs_completed": -1}))
    with pytest.raises(RunDirError, match="epochs_completed"):
        read_metrics_record(tmp_path)


def test_the_manifest_written_reads_back_equal_and_an_old_one_takes_the_defaults(tmp_path):
    from trainer.readers.records import Manifest

    split = {"fraction": 0.1, "seed": 3, "validation": 5, "train": 45, "digest": "a" * 64}
    written = Manifest(dataset="folder", num_classes=2, class_names=["cat", "dog"], input_shape=[32, 32, 3], label_encoding="onehot",
                       loss={"name": "categorical_crossentropy"}, model_output="logits", validation_split=split)
    written.write(tmp_path)
    assert Manifest.read(tmp_path) == written and "test_split" not in written.to_dict() and written.to_dict()["validation_split"] == split
    old = Manifest.from_dict({"class_names": ["a", "b", "c"], "unknown_key": 1})  # before num_classes; a key it does not know
    assert (old.num_classes, old.label_encoding, old.model_output, old.dataset) == (3, "sparse", "softmax", "unknown")


def test_a_malformed_manifest_names_each_bad_field_its_value_and_what_is_allowed():
    from trainer.readers.records import Manifest

    with pytest.raises(RunDirError) as refused:
        Manifest.from_dict({"num_classes": True, "input_shape": [28, 0], "custom_objects": [{"ref": "os.system"}], "label_encoding": "x"}, "r/manifest.json")
    message = str(refused.value)
    assert message.startswith("r/manifest.json is malformed: num_classes is True, expected a whole number from 1 to 1000000;")
    assert "input_shape is [28, 0], expected a list of positive whole numbers" in message and "label_encoding is 'x', expected sparse or onehot" in message
    assert "custom_objects is [{'ref': 'os.system'}], expected a list of {ref: 'module:attr'" in message
