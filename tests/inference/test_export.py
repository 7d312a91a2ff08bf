"""`trainer export` to SavedModel, ONNX and LiteRT: parity with Keras, the report, predict on exports, refusals."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import tiny_config
from tests.datagen import write_mnist_npz

FORMATS = ("savedmodel", "onnx", "litert")
EXPORT_NAMES = {"savedmodel": "savedmodel", "onnx": "model.onnx", "litert": "model.tflite"}

# each model type trains once; mlp exports into its run directory, the others to a folder of their own (--output)
MODEL_CONFIGS = {
    "mlp": {"model": {"type": "mlp", "hidden_units": [16], "output": "logits"},
            "loss": {"name": "sparse_categorical_crossentropy", "from_logits": True}},
    "vgg16_head": {"model": {"type": "vgg16_head", "weights": "none", "head": {"hidden_units": [8], "dropout": 0.0}}},
    "cnn": {"model": {"type": "cnn", "blocks": [4, 8], "batch_norm": True, "head": {"hidden_units": [8], "dropout": 0.0}}},
    # airbench: the custom PatchWhitening layer (its filters set by the first training batch), GELU, frozen-scale BN, logit scale
    "resnet": {"model": {"type": "resnet", "variant": "airbench", "widths": [4, 8, 8]}},
}


def flat(result) -> str:
    return result.output.replace("\n", "")


@pytest.fixture(scope="module")
def export_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    data = write_mnist_npz(root / "mnist.npz", n_train=96, n_test=48, seed=0)
    np.save(root / "inputs.npy", np.load(data)["x_test"][:16])
    return root


@pytest.fixture(scope="module")
def trained(export_root):
    """model type -> (run directory, top-1 classes of ``trainer predict RUN inputs.npy``), trained on first use."""
    from typer.testing import CliRunner

    from trainer.cli import app

    runs: dict[str, tuple[Path, list[int]]] = {}

    def get(model_type: str) -> tuple[Path, list[int]]:
        if model_type not in runs:
            sections = dict(MODEL_CONFIGS[model_type])
            config = tiny_config(export_root / "mnist.npz", **sections)
            config["model"] = sections["model"]  # replaced, not merged into tiny_config's MLP
            path = export_root / f"{model_type}.yaml"
            path.write_text(yaml.safe_dump(config))
            run_dir = export_root / f"run-{model_type}"
            runner = CliRunner()
            assert runner.invoke(app, ["run", str(path), "--run-dir", str(run_dir)], catch_exceptions=False).exit_code == 0
            predictions = export_root / f"predict-{model_type}.json"
            result = runner.invoke(app, ["predict", str(run_dir), str(export_root / "inputs.npy"), "--output", str(predictions)])
            assert result.exit_code == 0, result.output
            runs[model_type] = run_dir, [r["predicted"] for r in json.loads(predictions.read_text())]
        return runs[model_type]

    return get


# every format for every model, but the 14.7M-parameter VGG16 head only as a SavedModel: ONNX and LiteRT convert the
# traced graph, where a nested backbone is no different from the CNN's layers (~35 s of CI saved)
EXPORT_CASES = [(m, f) for m in MODEL_CONFIGS for f in FORMATS if not (m == "vgg16_head" and f != "savedmodel")]


@pytest.mark.slow
@pytest.mark.parametrize("model_type, export_format", EXPORT_CASES)
def test_export_matches_keras_and_predicts_the_same_classes(cli, trained, export_root, model_type, export_format, tmp_path):
    run_dir, run_classes = trained(model_type)
    if model_type == "mlp":
        args, exported = [], run_dir / EXPORT_NAMES[export_format]
    else:
        exported = export_root / f"shipped-{model_type}" / EXPORT_NAMES[export_format]
        args = ["--output", exported]
    result = cli("export", run_dir, "--format", export_format, *args)
    assert result.exit_code == 0, result.output
    report = json.loads((exported.parent / f"export-{export_format}.json").read_text())
    assert report["parity"]["passed"] is True
    assert report["parity"]["examples"] == 48 and report["parity"]["split"] == "test"
    assert report["parity"]["top1_agreement"] == 1.0
    assert report["parity"]["max_abs_probability_difference"] <= 1e-4
    assert report["parity"]["exported_accuracy"] == report["parity"]["keras_accuracy"]
    # the model's outputs vary across examples far more than the export differs from it: the check means something
    assert report["parity"]["max_abs_probability_difference"] * 100 < report["parity"]["keras_output_spread"]
    assert "note" not in report["parity"]
    if "run_model_dtypes" in report["parity"]:  # trained in mixed precision: exported as a float32 copy
        assert report["parity"]["top1_agreement_with_mixed_precision_model"] == 1.0
        assert report["parity"]["max_abs_difference_to_mixed_precision_model"] < 1e-2
    assert report["input"]["shape"] == [None, 28, 28, 1] and report["input"]["dtype"] == "float32"
    assert report["output"]["shape"] == [None, 10]
    assert report["output"]["softmax_added"] is (model_type == "mlp")
    assert report["file_size_bytes"] > 1000 and report["warning"] is None
    assert (exported.parent / "manifest.json").is_file()

    predictions = tmp_path / "predictions.json"
    result = cli("predict", exported, export_root / "inputs.npy", "--output", predictions)
    assert result.exit_code == 0, result.output
    records = json.loads(predictions.read_text())
    assert [r["predicted"] for r in records] == run_classes
    assert all(abs(sum(t["probability"] for t in r["top_k"]) - 1) < 1 for r in records)


@pytest.mark.slow
def test_export_outside_the_parity_bounds_exits_1_and_keeps_the_file_with_a_warning(cli, trained, monkeypatch):
    import trainer.inference.export as export

    run_dir, _ = trained("mlp")
    monkeypatch.setattr(export, "MAX_PROBABILITY_DIFFERENCE", -1.0)  # no export can be that close
    result = cli("export", run_dir, "--format", "savedmodel", "--output", run_dir / "suspect")
    assert result.exit_code == 1
    assert "PARITY CHECK FAILED" in flat(result) and "top-1 agreement 100.00%" in flat(result)
    report = json.loads((run_dir / "export-savedmodel.json").read_text())
    assert report["parity"]["passed"] is False and "do not ship it" in report["warning"]
    assert (run_dir / "suspect" / "saved_model.pb").is_file()


@pytest.mark.slow
def test_python_api_export_returns_the_report(trained, tmp_path):
    import trainer

    run_dir, _ = trained("mlp")
    report = trainer.export(run_dir, "savedmodel", tmp_path / "api" / "savedmodel")
    assert report["parity"]["passed"] is True and report["format"] == "savedmodel"
    assert Path(report["report_path"]) == tmp_path / "api" / "export-savedmodel.json"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "tflite"], "--format: unknown value 'tflite'; valid: litert, onnx, savedmodel"),
        (["--format", "onnx", "--output", "model.tflite"], "a onnx export is one .onnx file; got '.tflite'"),
        (["--format", "litert", "--output", "model"], "a litert export is one .tflite file"),
        (["--format", "savedmodel", "--output", "notes/keep.txt"], "--output notes/keep.txt: a SavedModel is a folder, but notes/keep.txt is a file"),
    ],
)
def test_export_refuses_bad_arguments_before_starting_tensorflow(cli, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("not a SavedModel")
    result = cli("export", tmp_path, *args)
    assert result.exit_code == 2
    assert message in flat(result)


@pytest.mark.parametrize("export_format, module, extra", [("onnx", "onnxruntime", "onnx"), ("litert", "ai_edge_litert", "litert")])
def test_missing_extra_exits_2_with_the_install_command(cli, tmp_path, monkeypatch, export_format, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # find_spec reports a module set to None as absent
    result = cli("export", tmp_path, "--format", export_format)
    assert result.exit_code == 2
    assert f"pip install -e '.[{extra}]'" in flat(result)


def test_predict_on_an_export_without_its_manifest_names_the_file(cli, tmp_path):
    (tmp_path / "shipped").mkdir()
    (tmp_path / "shipped" / "model.onnx").write_bytes(b"not a model")
    np.save(tmp_path / "x.npy", np.zeros((28, 28), dtype=np.uint8))
    result = cli("predict", tmp_path / "shipped" / "model.onnx", tmp_path / "x.npy")
    assert result.exit_code == 2
    assert "manifest.json is missing" in flat(result)
