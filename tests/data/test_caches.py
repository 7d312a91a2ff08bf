"""Caches and writes under a full disk: the shared feature cache checked by content, no SIGBUS, no HDF5 crash, no half-made run.

The full-disk cases run on a real small tmpfs (tests run as root here; skipped with the reason
where mounting is refused), in a subprocess where a crash (SIGBUS, SIGSEGV) must not take pytest with it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import tiny_config
from tests.datagen import write_image_folders
from tests.hostile.test_hostile_rundir import mounted_tmpfs
from trainer.errors import RunDirError

# ----------------------------------------------------------------------------- the shared feature cache


class Recorder:
    """Run events a feature pass reports: its phases and notices."""

    def __init__(self):
        self.phases: list[str] = []
        self.notices: list[str] = []

    def on_phase_start(self, description, total):
        self.phases.append(description)

    def on_progress(self, step, logs):
        pass

    def on_phase_end(self):
        pass

    def on_notice(self, text):
        self.notices.append(text)


class Splits:
    def __init__(self, x):
        self.x = x

    def split(self, name):
        return self.x, None


def tiny_backbone_model():
    """A model shaped like a frozen-backbone one: a ``features`` sub-model and a ``head`` layer."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    features = keras.Model(inputs, keras.layers.Dense(3)(inputs), name="features")
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(features(inputs)))


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone_model()


X = np.arange(40, dtype=np.float32).reshape(10, 4) / 40


def shared(model, folder: Path, events=None):
    from trainer.run.features import CachedFeatureTraining

    (folder / "run").mkdir(exist_ok=True)
    return CachedFeatureTraining(model, Splits(X), folder / "run", events or Recorder(), None, shared_dir=folder / "cache")


def truth(model) -> np.ndarray:
    return np.asarray(model.get_layer("features").predict_on_batch(X), np.float32)


def cached_files(folder: Path) -> tuple[Path, Path]:
    (npy,) = sorted((folder / "cache").glob("train-*.npy"))
    return npy, npy.with_suffix(".json")


def test_a_shared_feature_file_is_written_with_an_index_and_reused_when_intact(backbone, tmp_path):
    first = np.array(shared(backbone, tmp_path).shared_features("train", X))
    np.testing.assert_allclose(first, truth(backbone), rtol=1e-6)
    npy, index = cached_files(tmp_path)
    record = json.loads(index.read_text())
    assert record["shape"] == [10, 3] and record["dtype"] == "float32" and len(record["sha256"]) == 64
    events = Recorder()
    again = shared(backbone, tmp_path, events).shared_features("train", X)
    np.testing.assert_array_equal(np.asarray(again), first)
    assert events.phases == [] and any("reused from" in text for text in events.notices)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no partial file left


def test_a_replaced_shared_feature_file_is_recomputed_not_trained_on(backbone, tmp_path):
    """Issue 19: the cache was trusted by file name; replaced content trained on wrong features, silently."""
    shared(backbone, tmp_path).shared_features("train", X)
    npy, _ = cached_files(tmp_path)
    np.save(npy, np.full((10, 3), 7.0, np.float32))  # a valid .npy of the right shape, other values
    events = Recorder()
    features = shared(backbone, tmp_path, events).shared_features("train", X)
    np.testing.assert_allclose(np.asarray(features), truth(backbone), rtol=1e-6)
    assert events.phases == ["backbone features (train)"]  # computed again
    assert any("not reused" in text and "digest" in text and npy.name in text for text in events.notices), events.notices
    np.testing.assert_allclose(np.load(npy), truth(backbone), rtol=1e-6)  # and the cache repaired


def test_a_feature_file_forged_with_a_matching_index_is_caught_by_the_sample_check(backbone, tmp_path):
    """A file and its index rewritten together pass the digest; the backbone run again on random rows does not."""
    import hashlib

    shared(backbone, tmp_path).shared_features("train", X)
    npy, index = cached_files(tmp_path)
    forged = truth(backbone)
    forged[[0, 5, 9]] += 1.0  # 3 rows of 10: any sample of 8 rows sees one
    np.save(npy, forged)
    record = json.loads(index.read_text())
    record["sha256"] = hashlib.sha256(forged.tobytes()).hexdigest()
    index.write_text(json.dumps(record))
    events = Recorder()
    features = shared(backbone, tmp_path, events).shared_features("train", X)
    np.testing.assert_allclose(np.asarray(features), truth(backbone), rtol=1e-6)
    assert any("not reused" in text and "differ from what the backbone makes" in text for text in events.notices), events.notices


def _truncate(npy: Path) -> None:
    npy.write_bytes(npy.read_bytes()[:-5])


def _bad_header(npy: Path) -> None:
    data = bytearray(npy.read_bytes())
    data[10:20] = b"{'descr': "[:10].replace(b"{", b"[")
    npy.write_bytes(bytes(data))


def _wrong_shape(npy: Path) -> None:
    np.save(npy, np.zeros((5, 6), np.float32))


def _object_array(npy: Path) -> None:
    np.save(npy, np.array([{"a": 1}] * 10, dtype=object), allow_pickle=True)


def _folder(npy: Path) -> None:
    npy.unlink()
    npy.mkdir()


def _dev_zero(npy: Path) -> None:
    npy.unlink()
    npy.symlink_to("/dev/zero")


def _index_gone(npy: Path) -> None:
    npy.with_suffix(".json").unlink()


def _index_garbled(npy: Path) -> None:
    npy.with_suffix(".json").write_text('{"kind": "trainer feature cache", "shape": [-1, 1e308]}')


def _huge_header(npy: Path) -> None:
    npy.write_bytes(b"\x93NUMPY\x02\x00" + (2**31).to_bytes(4, "little") + b"{")


DAMAGES = [_truncate, _bad_header, _wrong_shape, _object_array, _folder, _dev_zero, _index_gone, _index_garbled, _huge_header]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__.strip("_"))
def test_a_damaged_shared_feature_file_is_recomputed_with_a_notice(damage, backbone, tmp_path):
    """Issue 19: a truncated feature-cache file (.npy cut short, header damaged, wrong shape) gave a traceback."""
    shared(backbone, tmp_path).shared_features("train", X)
    npy, _ = cached_files(tmp_path)
    damage(npy)
    events = Recorder()
    features = shared(backbone, tmp_path, events).shared_features("train", X)
    np.testing.assert_allclose(np.asarray(features), truth(backbone), rtol=1e-6)
    assert events.phases == ["backbone features (train)"]
    assert any("not reused" in text for text in events.notices), events.notices


def _valid_cache(folder: Path) -> tuple[Path, Path, np.ndarray]:
    """A feature file and its index as trainer writes them, without Keras."""
    from trainer.run.features import write_features

    values = np.arange(30, dtype=np.float32).reshape(10, 3)
    folder.mkdir(parents=True, exist_ok=True)
    npy = folder / "train-0123456789abcdef01234567.npy"
    write_features(npy, (10, 3), iter([values[:4], values[4:]]), key="0123456789abcdef01234567", split="train")
    return npy, npy.with_suffix(".json"), values


MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
)


def _mutate(data: bytes, mutations) -> bytes:
    data = bytearray(data)
    for kind, position, value in mutations:
        position = position % (len(data) + 1)
        if kind == "flip" and position < len(data):
            data[position] ^= value
        elif kind == "cut":
            del data[position:]
        elif kind == "insert":
            data[position:position] = bytes([value])
    return bytes(data)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["npy", "index", "both"]), mutations=st.lists(MUTATIONS, min_size=1, max_size=4))
def test_mutated_feature_cache_files_are_refused_by_name_or_read_intact(which, mutations, tmp_path_factory):
    """Property: a mutated .npy or index record is either read back equal to what was written or a RunDirError naming it."""
    from trainer.readers.cache_files import read_feature_cache

    folder = tmp_path_factory.mktemp("cache")
    npy, index, values = _valid_cache(folder)
    for path in {"npy": [npy], "index": [index], "both": [npy, index]}[which]:
        path.write_bytes(_mutate(path.read_bytes(), mutations))
    try:
        features = read_feature_cache(npy, folder=folder, key="0123456789abcdef01234567", split="train", shape=(10, 3))
    except RunDirError as exc:
        assert npy.name in str(exc) or index.name in str(exc), str(exc)
        return
    np.testing.assert_array_equal(np.asarray(features), values)


# ----------------------------------------------------------------------------- a full disk while features are written


def _run_script(script: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_a_full_disk_while_features_are_written_is_one_error_not_sigbus(tmp_path, subprocess_env):
    """Issue 19: features written through np.memmap on a full disk killed the process with SIGBUS."""
    with mounted_tmpfs(tmp_path / "small", "256k") as mount:
        done = _run_script(f"""
            import numpy as np
            from pathlib import Path
            from trainer.errors import TrainerError
            from trainer.run.features import write_features

            chunks = (np.ones((1024, 64), np.float32) for _ in range(4))  # 1 MiB into a 256 KiB disk
            try:
                write_features(Path({str(mount / 'train-x.npy')!r}), (4096, 64), chunks)
            except TrainerError as exc:
                print("error:", exc.message)
                raise SystemExit(exc.exit_code)
            """, subprocess_env)
        leftovers = sorted(p.name for p in mount.iterdir())
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)  # not -7 (SIGBUS)
    assert "No space left on device" in done.stdout and "train-x.npy" in done.stdout
    assert "Traceback" not in done.stderr
    assert leftovers == []  # the partial file is removed


@pytest.mark.slow
def test_a_frozen_backbone_run_on_a_full_disk_fails_with_one_message(tmp_path, mnist_npz, write_config, subprocess_env):
    config = tiny_config(mnist_npz, train={"epochs": 1, "batch_size": 32})
    config["model"] = {"type": "vgg16_head", "weights": "none", "head": {"hidden_units": [8]}}
    path = write_config(config)
    with mounted_tmpfs(tmp_path / "small", "256k") as mount:
        done = subprocess.run([sys.executable, "-m", "trainer", "run", str(path), "--run-dir", str(mount / "run")],
                              env=subprocess_env, capture_output=True, text=True, timeout=900)
        metrics = json.loads((mount / "run" / "metrics.json").read_text())
        leftovers = sorted(p.name for p in (mount / "run").iterdir())
    output = done.stdout + done.stderr
    assert done.returncode == 1, (done.returncode, output[-3000:])
    assert "No space left on device" in output and "backbone features" in output
    assert "Traceback" not in output
    assert metrics["status"] == "failed" and "No space left on device" in metrics["reason"]
    assert "features" not in leftovers  # the run's own feature cache is scratch space


# ----------------------------------------------------------------------------- model.h5 on a full disk


def _h5_writer(size: int):
    def write(handle) -> None:
        handle.create_dataset("w", data=np.ones(size, np.float32))

    return write


def test_model_h5_is_made_in_memory_before_a_byte_reaches_the_disk(tmp_path):
    """Issue 19: HDF5 can crash the process when the disk fills mid-write; it must never write to the disk itself."""
    import h5py

    from trainer.run.rundir import write_h5_atomically

    seen: list[list[str]] = []

    def write(handle) -> None:
        _h5_writer(1000)(handle)
        handle.flush()
        seen.append(sorted(p.name for p in tmp_path.iterdir()))

    write_h5_atomically(tmp_path / "model.h5", write)
    assert seen == [[]]  # while HDF5 wrote, nothing was on the disk
    with h5py.File(tmp_path / "model.h5", "r") as handle:
        np.testing.assert_array_equal(handle["w"][...], np.ones(1000, np.float32))


def test_model_h5_on_a_full_disk_is_one_oserror_even_without_the_estimate(tmp_path, capfd):
    from trainer.run.rundir import write_h5_atomically

    with mounted_tmpfs(tmp_path / "small", "256k") as mount:
        with pytest.raises(OSError) as info:
            write_h5_atomically(mount / "model.h5", _h5_writer(400_000))  # 1.6 MB, no estimate given
        assert info.value.errno == 28 and "No space left on device" in str(info.value)
        assert list(mount.iterdir()) == []
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception ignored" not in err and "HDF5" not in err, err


@pytest.mark.slow
def test_a_model_h5_that_fills_the_disk_never_crashes_the_process(tmp_path, mnist_npz, write_config, subprocess_env):
    """A whole run whose model.h5 does not fit, with the free-space estimate switched off: exit 1, one message."""
    path = write_config(tiny_config(mnist_npz, model={"type": "mlp", "hidden_units": [2048]}))
    with mounted_tmpfs(tmp_path / "small", "2m") as mount:  # model.h5 with Adam's state: ~20 MB
        done = _run_script(f"""
            import sys
            from trainer.run import rundir, training
            training.h5_size_estimate = lambda model: 0
            from trainer.cli import app
            sys.argv = ["trainer", "run", {str(path)!r}, "--run-dir", {str(mount / 'run')!r}]
            app()
            """, subprocess_env)
        metrics = json.loads((mount / "run" / "metrics.json").read_text())
        leftovers = sorted(p.name for p in (mount / "run").iterdir())
    output = done.stdout + done.stderr
    assert done.returncode == 1, (done.returncode, output[-3000:])
    assert "No space left on device" in output and "Traceback" not in output
    assert metrics["status"] == "failed" and "model.h5" not in leftovers
    assert not [name for name in leftovers if ".tmp" in name]


# ----------------------------------------------------------------------------- a failed start leaves nothing behind


@pytest.fixture
def broken_images(tmp_path: Path) -> Path:
    root = write_image_folders(tmp_path / "images", n_per_class=4)
    (root / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    return root


@pytest.mark.parametrize("where", ["new", "empty", "default"])
def test_a_bad_image_with_the_disk_cache_leaves_no_run_directory(where, broken_images, cli, write_config, tmp_path):
    """Issue 19: a bad image with data.cache: disk left a half-made run directory behind."""
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    config = write_config(tiny_config(
        broken_images, data={"dataset": "folder", "path": str(broken_images), "image_size": [8, 8], "cache": "disk"},
        output={"dir": str(outputs)},
    ))
    run = outputs / "run"
    if where == "empty":
        run.mkdir()
    result = cli("run", config, *(["--run-dir", run] if where != "default" else []))
    assert result.exit_code == 2, result.output
    assert "broken.png" in result.unwrapped and "Traceback" not in result.output
    if where == "empty":  # a folder the user made is emptied back, not removed
        assert run.is_dir() and list(run.iterdir()) == []
    else:
        assert list(outputs.iterdir()) == []


# ----------------------------------------------------------------------------- the data.cache: disk pixel file


@pytest.fixture
def folder_split(tmp_path: Path):
    from trainer.data.folder import load_folder

    root = write_image_folders(tmp_path / "images", n_per_class=3, size=(12, 10))
    return load_folder(root, (8, 8), "rgb", "disk").x_train


@pytest.mark.parametrize("how", ["stranger", "changed"])
def test_a_pixel_file_this_process_did_not_write_is_decoded_again(how, folder_split, tmp_path):
    """The disk pixel cache is reused only while it is the very file this process wrote (a name is not enough)."""
    from trainer.data.streaming import pixel_file

    cache = tmp_path / "cache"
    decoded = np.asarray(folder_split)
    rows = pixel_file(folder_split, cache)
    (path,) = cache.glob("*.pixels")
    if how == "stranger":
        from trainer.data import streaming

        streaming._WRITTEN.clear()  # as if another process had left it there
        path.write_bytes(b"\x07" * path.stat().st_size)
    else:
        data = bytearray(path.read_bytes())
        data[0] ^= 0xFF
        os.utime(path, ns=(0, 0))
        path.write_bytes(bytes(data))
    del rows
    again = pixel_file(folder_split, cache)
    np.testing.assert_array_equal(again.read(np.arange(len(decoded))), decoded)


def test_a_truncated_row_file_is_refused_by_name(folder_split, tmp_path):
    from trainer.data.streaming import RowFile, pixel_file

    rows = pixel_file(folder_split, tmp_path / "cache")
    os.truncate(rows.path, rows.path.stat().st_size - 1)
    with pytest.raises(RunDirError, match="truncated") as info:
        RowFile(rows.path, rows.shape, rows.dtype)
    assert rows.path.name in str(info.value)
