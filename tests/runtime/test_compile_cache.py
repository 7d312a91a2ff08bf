"""The persistent compilation cache (``trainer.runtime.compile_cache``, issue 25 item 3): where it lives, which folders
it refuses (the run goes on without it, with one notice), and a JAX run that fills it and a second run that reads it."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_config
from trainer.runtime.compile_cache import cache_root, checked_folder, count_entries

ROOT_USER = hasattr(os, "getuid") and os.getuid() == 0


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"TRAINER_CACHE": "/somewhere/cache", "XDG_CACHE_HOME": "/xdg"}, Path("/somewhere/cache")),
        ({"XDG_CACHE_HOME": "/xdg"}, Path("/xdg/trainer")),
        ({"XDG_CACHE_HOME": "relative/ignored"}, Path.home() / ".cache" / "trainer"),
        ({}, Path.home() / ".cache" / "trainer"),
        ({"TRAINER_CACHE": "off"}, None),
        ({"TRAINER_CACHE": ""}, None),
    ],
)
def test_cache_root(environ, expected):
    assert cache_root(environ) == expected


def test_a_new_cache_folder_is_created_private(tmp_path):
    folder, problem = checked_folder(tmp_path / "cache", "jax-1.0")
    assert problem is None and folder == tmp_path / "cache" / "compile" / "jax-1.0"
    for level in (tmp_path / "cache", tmp_path / "cache" / "compile", folder):
        assert stat.S_IMODE(level.stat().st_mode) == 0o700
    assert count_entries(folder) == 0  # the probe file is gone


def _file(root: Path) -> str:
    root.write_text("not a folder")
    return "not a folder"


def _link(root: Path) -> str:
    elsewhere = root.parent / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    root.symlink_to(elsewhere)
    return "symbolic link"


def _others_write(root: Path) -> str:
    root.mkdir()
    root.chmod(0o777)
    return "others may write to it (mode 777"


def _other_owner(root: Path) -> str:
    if not ROOT_USER:
        pytest.skip("giving a folder to another user needs root")
    root.mkdir(mode=0o700)
    os.chown(root, 12345, 12345)
    return "belongs to another user (uid 12345)"


def _unwritable(root: Path) -> str:
    if ROOT_USER:
        pytest.skip("root writes into a read-only folder; the full-disk case covers a failing write")
    root.mkdir(mode=0o500)
    return "cannot create it"


def _link_inside(root: Path) -> str:
    root.mkdir(mode=0o700)
    (root / "compile").symlink_to(root.parent)
    return "compile: it is a symbolic link"


BAD_FOLDERS = {"file": _file, "link": _link, "others_write": _others_write, "other_owner": _other_owner, "unwritable": _unwritable, "link_inside": _link_inside}


@pytest.mark.parametrize("kind", BAD_FOLDERS)
def test_a_bad_cache_folder_is_refused_with_the_reason(tmp_path, kind):
    root = tmp_path / "cache"
    reason = BAD_FOLDERS[kind](root)
    folder, problem = checked_folder(root, "jax-1.0")
    assert folder is None and reason in problem


def test_a_full_disk_is_found_by_the_probe(tmp_path):
    """A tmpfs of 16 KiB filled up: the folders can be made, the probe write fails (root only: mount)."""
    mount = tmp_path / "full"
    mount.mkdir()
    if not ROOT_USER or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        with open(mount / "filler", "wb") as filler:  # every block of the tmpfs
            try:
                filler.write(b"\0" * 65536)
                filler.flush()
            except OSError:
                pass
        folder, problem = checked_folder(mount / "cache", "jax-1.0")
        assert folder is None and "cannot write to it (No space left on device)" in problem
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# ---------------------------------------------------------------------- real JAX runs (subprocesses)


def _jax_run(tmp_path: Path, mnist_npz: Path, env: dict[str, str], cache: str, name: str) -> subprocess.CompletedProcess:
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(tiny_config(mnist_npz, backend="jax", train={"epochs": 1, "batch_size": 64}), sort_keys=False))
    return subprocess.run(
        [sys.executable, "-m", "trainer", "run", str(config), "--run-dir", str(tmp_path / name)],
        env={**env, "TRAINER_CACHE": cache, "COLUMNS": "400"}, capture_output=True, text=True, timeout=600,
    )


@pytest.mark.slow
def test_a_jax_run_fills_the_cache_and_the_next_run_reads_it(tmp_path, mnist_npz, subprocess_env):
    cache = tmp_path / "cache"
    first = _jax_run(tmp_path, mnist_npz, subprocess_env, str(cache), "first")
    assert first.returncode == 0, first.stderr
    folder = cache / "compile" / next(p.name for p in (cache / "compile").iterdir())
    assert folder.name.startswith("jax-")
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in (cache, cache / "compile", folder))
    entries = count_entries(folder)
    assert entries > 0
    assert "(empty: this run fills it)" in first.stdout and "compile cache: new: 0 of" in first.stdout
    second = _jax_run(tmp_path, mnist_npz, subprocess_env, str(cache), "second")
    assert second.returncode == 0, second.stderr
    assert f"({entries} programs from earlier runs)" in second.stdout
    assert "compile cache: hit:" in second.stdout and " 0 compiled (the folder holds 0 more" in second.stdout
    assert count_entries(folder) == entries


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["file", "link", "other_owner"])
def test_a_run_with_a_bad_cache_folder_completes_without_it(tmp_path, mnist_npz, subprocess_env, kind):
    root = tmp_path / "cache"
    reason = BAD_FOLDERS[kind](root)
    result = _jax_run(tmp_path, mnist_npz, subprocess_env, str(root), "run")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "notice: compile cache not used, this run compiles from scratch:" in text and reason in text
    assert "compile cache none (see the notice)" in " ".join(text.replace("│", " ").split())
    assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.slow
def test_a_corrupted_cache_entry_is_compiled_again(tmp_path, mnist_npz, subprocess_env):
    cache = tmp_path / "cache"
    assert _jax_run(tmp_path, mnist_npz, subprocess_env, str(cache), "first").returncode == 0
    folder = next((cache / "compile").iterdir())
    for entry in folder.iterdir():
        entry.write_bytes(b"garbage" * 10)
    second = _jax_run(tmp_path, mnist_npz, subprocess_env, str(cache), "second")
    assert second.returncode == 0, second.stderr
    assert "compile cache: new: 0 of" in second.stdout  # nothing read from the garbage; every program compiled again
    assert (tmp_path / "second" / "metrics.json").is_file()
