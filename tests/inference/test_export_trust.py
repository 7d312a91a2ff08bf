"""Exports as untrusted files (issue 19): the output rule, signed provenance, graph checks, manifests that disagree."""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.inference.test_export import export_root, trained  # noqa: F401 - module fixtures: one trained run for this file too

FAKE_ONNX = b"\x08\x07not really an onnx model"


def flat(result) -> str:
    return result.output.replace("\n", "")


def manifest_dict(num_classes: int = 10, shape=(28, 28, 1)) -> dict:
    return {"dataset": "mnist", "num_classes": num_classes, "class_names": [str(i) for i in range(num_classes)],
            "input_shape": list(shape), "label_encoding": "sparse", "loss": {}, "model_output": "softmax"}


def signed_export(folder: Path, content: bytes = FAKE_ONNX, name: str = "model.onnx", fmt: str = "onnx") -> Path:
    """A one-file export with its manifest and a report signed with this user's key, as trainer export writes them."""
    from trainer.inference.provenance import sign
    from trainer.readers.export_files import sha256

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    manifest = json.dumps(manifest_dict(), indent=2).encode()
    (folder / "manifest.json").write_bytes(manifest)
    signature = sign({"version": 1, "format": fmt, "file": name, "files": {name: sha256(content)}, "manifest": sha256(manifest),
                      "input_shape": [28, 28, 1], "num_classes": 10})
    report = {"format": fmt, "path": str(path), "signature": signature, "parity": {"passed": True}}
    (folder / f"export-{fmt}.json").write_text(json.dumps(report, indent=2))
    return path


# ---------------------------------------------------------------- provenance: fast, no TensorFlow


def test_predict_refuses_an_export_without_a_signed_report_before_tensorflow(cli, tmp_path):
    exported = signed_export(tmp_path / "shipped")
    (tmp_path / "shipped" / "export-onnx.json").unlink()
    np.save(tmp_path / "x.npy", np.zeros((28, 28), dtype=np.uint8))
    result = cli("predict", exported, tmp_path / "x.npy")
    assert result.exit_code == 2
    assert "cannot tell that it wrote this export" in result.text and "no export-onnx.json beside it" in result.text
    assert "--trust-export" in result.text and "Traceback" not in result.output


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda d: (d / "model.onnx").write_bytes(FAKE_ONNX + b"!"), "its files changed since it was exported (model.onnx)"),
        (lambda d: (d / "manifest.json").write_text(json.dumps(manifest_dict(3))), "manifest.json beside it changed since it was exported"),
        (lambda d: _edit_report(d, lambda r: r["signature"]["files"].update({"model.onnx": "0" * 64})), "signature does not match"),
        (lambda d: _edit_report(d, lambda r: r["signature"].update({"key_id": "0" * 16})), "another user's (or another machine's) export key"),
        (lambda d: _edit_report(d, lambda r: r.update({"signature": None})), "holds no signature"),
        (lambda d: _edit_report(d, lambda r: r["signature"].update({"file": "other.onnx"})), "report of another export"),
    ],
)
def test_predict_refuses_an_export_whose_signature_does_not_hold(tmp_path, tamper, message):
    from trainer.errors import RunDirError
    from trainer.inference.exported import check_predictor

    exported = signed_export(tmp_path / "shipped")
    check_predictor(exported)  # as written: trusted
    tamper(tmp_path / "shipped")
    with pytest.raises(RunDirError, match="cannot tell that it wrote this export") as info:
        check_predictor(exported)
    assert message in str(info.value)
    check_predictor(exported, trust_export=True)  # the user's explicit word


def test_a_report_signed_with_another_users_key_is_not_trusted(tmp_path, monkeypatch):
    from trainer.errors import RunDirError
    from trainer.inference.exported import check_predictor

    exported = signed_export(tmp_path / "shipped")  # signed with this session's key
    monkeypatch.setenv("TRAINER_CONFIG_HOME", str(tmp_path / "another-user"))
    with pytest.raises(RunDirError, match="no usable export key"):
        check_predictor(exported)


def _edit_report(folder: Path, change) -> None:
    path = folder / "export-onnx.json"
    report = json.loads(path.read_text())
    change(report)
    path.write_text(json.dumps(report))


def test_the_export_key_is_created_private_and_refused_when_others_can_read_it(tmp_path, monkeypatch):
    from trainer.inference import provenance

    monkeypatch.setenv("TRAINER_CONFIG_HOME", str(tmp_path / "config"))
    key = provenance.export_key(create=True)
    path = tmp_path / "config" / "export-key"
    assert len(key) == 32 and (path.stat().st_mode & 0o777) == 0o600
    assert provenance.export_key(create=True) == key  # created once
    path.chmod(0o644)
    with pytest.raises(provenance.KeyUnavailable, match="mode 644"):
        provenance.export_key(create=False)


# a valid export's report and manifest, mutated: always exit 2 (RunDirError), never another exception
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _mutate(document, path: list, value):
    """``document`` with the value at ``path`` (indices into nested dicts/lists, taken modulo their size) replaced."""
    if not path or not isinstance(document, (dict, list)) or not document:
        return value
    keys = list(document) if isinstance(document, dict) else list(range(len(document)))
    key = keys[path[0] % len(keys)]
    copy = dict(document) if isinstance(document, dict) else list(document)
    copy[key] = _mutate(document[key], path[1:], value)
    return copy


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    which=st.sampled_from(["export-onnx.json", "manifest.json"]),
    path=st.lists(st.integers(0, 50), min_size=0, max_size=4),
    value=JSON_VALUES,
    raw=st.one_of(st.none(), st.binary(max_size=64)),
    cut=st.one_of(st.none(), st.integers(0, 400)),
)
def test_mutated_export_reports_and_manifests_exit_2(tmp_path_factory, which, path, value, raw, cut):
    from trainer.errors import TrainerError
    from trainer.inference.exported import check_predictor

    folder = tmp_path_factory.mktemp("mutated")
    exported = signed_export(folder)
    target = folder / which
    if raw is not None:
        target.write_bytes(raw)
    else:
        text = json.dumps(_mutate(json.loads(target.read_text()), path, value))
        target.write_text(text[:cut] if cut is not None else text)
    try:
        check_predictor(exported)
    except TrainerError as exc:
        assert exc.exit_code == 2 and str(exc)


def test_mutated_reports_through_the_cli_exit_2_without_a_traceback(cli, tmp_path):
    exported = signed_export(tmp_path / "shipped")
    np.save(tmp_path / "x.npy", np.zeros((28, 28), dtype=np.uint8))
    for content in (b"{", b"[]", b'{"format": "onnx", "path": 1}', b"\xff\xfe", json.dumps({"format": "onnx", "path": "x", "signature": {"mac": "z"}}).encode()):
        (tmp_path / "shipped" / "export-onnx.json").write_bytes(content)
        result = cli("predict", exported, tmp_path / "x.npy")
        assert result.exit_code == 2 and "export-onnx.json" in result.output and "Traceback" not in result.output


# ---------------------------------------------------------------- graph checks that need no trust


def test_onnx_with_external_data_is_refused_and_the_named_file_not_read(cli, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    weights = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[784, 10])
    weights.data_location = TensorProto.EXTERNAL
    weights.external_data.add(key="location", value="/etc/shadow")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["image", "shape"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"])],
        "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 28, 28, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 10])],
        initializer=[weights, helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 784])],
    )
    exported = signed_export(tmp_path / "shipped", onnx.helper.make_model(graph).SerializeToString())
    np.save(tmp_path / "x.npy", np.zeros((28, 28), dtype=np.uint8))
    result = cli("predict", exported, tmp_path / "x.npy")
    assert result.exit_code == 2
    assert "keeps its data in another file ('/etc/shadow')" in result.text and "--trust-export" in result.text


def test_onnx_custom_operator_domain_is_refused(tmp_path):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from trainer.inference.export_checks import UnsafeExportError, check_onnx_model

    graph = helper.make_graph([helper.make_node("Evil", ["image"], ["probabilities"], domain="com.example")], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 28, 28, 1])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 10])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsafeExportError, match="custom operator com.example.Evil"):
        check_onnx_model(model.SerializeToString(), tmp_path / "m.onnx")


@pytest.mark.parametrize("data", [b"", b"\x00" * 4, b"\xff" * 64, random.Random(7).randbytes(256)], ids=["empty", "zeros", "ones", "random"])
def test_damaged_litert_and_onnx_files_are_refused_by_the_checks(tmp_path, data):
    from trainer.errors import RunDirError
    from trainer.inference.export_checks import check_litert_model, check_onnx_model

    for check in (check_litert_model, check_onnx_model):
        try:
            check(data, tmp_path / "m")
        except RunDirError:
            pass


# ---------------------------------------------------------------- with a trained run (slow)


def _evil_savedmodel(folder: Path, marker: Path) -> Path:
    """A SavedModel whose serving function writes ``marker`` (tf.io.write_file in a tf.function), with a manifest beside it."""
    import tensorflow as tf

    class Evil(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32, name="image")])
        def serve(self, image):
            tf.io.write_file(str(marker), "written by an exported graph")
            return {"output_0": tf.nn.softmax(tf.reshape(image, [-1, 784])[:, :10])}

    module = Evil()
    path = folder / "savedmodel"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    (folder / "manifest.json").write_text(json.dumps(manifest_dict()))
    return path


@pytest.mark.slow
def test_predict_refuses_a_savedmodel_whose_graph_writes_a_file(cli, tmp_path):
    from trainer.inference.provenance import sign
    from trainer.readers.export_files import export_digests, sha256

    marker = tmp_path / "written-by-the-export"
    exported = _evil_savedmodel(tmp_path / "handed", marker)
    np.save(tmp_path / "x.npy", np.zeros((2, 28, 28), dtype=np.uint8))
    result = cli("predict", exported, tmp_path / "x.npy")
    assert result.exit_code == 2 and "cannot tell that it wrote this export" in result.text
    assert not marker.exists()

    # even signed with this user's key (a report forged on this machine), the static check refuses the WriteFile op
    signature = sign({"version": 1, "format": "savedmodel", "file": "savedmodel", "files": export_digests(exported),
                      "manifest": sha256((tmp_path / "handed" / "manifest.json").read_bytes()), "input_shape": [28, 28, 1], "num_classes": 10})
    (tmp_path / "handed" / "export-savedmodel.json").write_text(json.dumps({"format": "savedmodel", "path": str(exported), "signature": signature}))
    result = cli("predict", exported, tmp_path / "x.npy")
    assert result.exit_code == 2
    assert "op 'WriteFile'" in result.text and "--trust-export" in result.text
    assert not marker.exists()

    result = cli("predict", exported, tmp_path / "x.npy", "--trust-export")  # the user's explicit word: it runs
    assert result.exit_code == 0, result.output
    assert marker.exists()


@pytest.mark.slow
def test_savedmodel_export_never_replaces_a_folder_it_did_not_write(cli, trained, tmp_path):
    run_dir, _ = trained("mlp")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "saved_model.pb").write_bytes(b"someone else's model")
    (foreign / "notes.txt").write_text("keep me")
    result = cli("export", run_dir, "--format", "savedmodel", "--output", foreign)
    assert result.exit_code == 2 and "is not a file trainer wrote" in result.text
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt", "saved_model.pb"]
    assert not (tmp_path / "export-savedmodel.json").exists() and not (tmp_path / "manifest.json").exists()


@pytest.mark.slow
def test_savedmodel_export_to_the_working_directory_is_refused(cli, trained, tmp_path, monkeypatch):
    run_dir, _ = trained("mlp")
    work = tmp_path / "work"
    work.mkdir()
    (work / "saved_model.pb").write_bytes(b"not trainer's")
    (work / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(work)
    result = cli("export", run_dir, "--format", "savedmodel", "--output", ".")
    assert result.exit_code == 2 and "is the working directory" in result.text
    assert sorted(p.name for p in work.iterdir()) == ["saved_model.pb", "thesis.tex"]


@pytest.mark.slow
def test_reexport_replaces_its_own_export_but_not_a_changed_one(cli, trained, tmp_path):
    run_dir, _ = trained("mlp")
    out = tmp_path / "shipped" / "savedmodel"
    assert cli("export", run_dir, "--format", "savedmodel", "--output", out).exit_code == 0
    report = json.loads((tmp_path / "shipped" / "export-savedmodel.json").read_text())
    assert report["signature"]["algorithm"] == "hmac-sha256" and "saved_model.pb" in report["signature"]["files"]
    result = cli("export", run_dir, "--format", "savedmodel", "--output", out)  # trainer's own: replaced
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "shipped").iterdir()) == ["export-savedmodel.json", "manifest.json", "savedmodel"]
    (out / "extra.txt").write_text("added by hand")  # no longer exactly what trainer wrote
    result = cli("export", run_dir, "--format", "savedmodel", "--output", out)
    assert result.exit_code == 2 and "is not a file trainer wrote" in result.text
    assert (out / "extra.txt").read_text() == "added by hand"


@pytest.mark.slow
def test_onnx_export_never_replaces_a_foreign_manifest(cli, trained, tmp_path):
    run_dir, _ = trained("mlp")
    folder = tmp_path / "deploy"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"app": "someone else\'s manifest"}')
    result = cli("export", run_dir, "--format", "onnx", "--output", folder / "x.onnx")
    assert result.exit_code == 2 and "manifest.json" in result.text and "is not a file trainer wrote" in result.text
    assert (folder / "manifest.json").read_text() == '{"app": "someone else\'s manifest"}'
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json"]


@pytest.mark.slow
@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_unwritable_export_target_exits_2_and_leaves_nothing(cli, trained, tmp_path, where):
    run_dir, _ = trained("mlp")
    (tmp_path / "a-file").write_text("x")
    output = tmp_path / "a-file" / "model.tflite" if where == "under-a-file" else Path("/proc/trainer-no-such/model.tflite")
    before = sorted(os.listdir(run_dir))
    result = cli("export", run_dir, "--format", "litert", "--output", output)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "cannot be written" in result.text and str(output) in result.unwrapped
    assert sorted(os.listdir(run_dir)) == before and sorted(os.listdir(tmp_path)) == ["a-file"]


@pytest.mark.slow
def test_predict_refuses_a_manifest_that_disagrees_with_the_export(cli, trained, export_root, tmp_path):
    run_dir, _ = trained("mlp")
    out = tmp_path / "shipped" / "savedmodel"
    assert cli("export", run_dir, "--format", "savedmodel", "--output", out).exit_code == 0
    (tmp_path / "shipped" / "manifest.json").write_text(json.dumps(manifest_dict(num_classes=3)))
    result = cli("predict", out, export_root / "inputs.npy")
    assert result.exit_code == 2 and "manifest.json beside it changed since it was exported" in result.text
    result = cli("predict", out, export_root / "inputs.npy", "--trust-export")  # trusted, but still checked against the signature
    assert result.exit_code == 2
    assert "num_classes 3 disagrees with the exported model" in result.text and "Traceback" not in result.output
