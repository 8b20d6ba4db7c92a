"""Inputs that are not what they claim to be: pipes, devices, deep nesting, foreign manifests, corrupt weights.
Each is answered with exit 2 and one line naming the file, before any work, and nothing is written."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _assert_exit_2(proc, *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


def test_a_pipe_given_as_data_budget_or_reference_never_blocks(cli, tmp_path):
    pipe = _fifo(tmp_path / "rows.jsonl")
    _assert_exit_2(cli("data", "check", pipe, timeout=60), "not a regular file")
    _assert_exit_2(cli("eval", "tiny-random", "--reference", pipe, timeout=60), "not a regular file")
    toml = _fifo(tmp_path / "budgets.toml")
    _assert_exit_2(cli("bench", tmp_path, "--budget", toml, "--out", tmp_path / "b", timeout=60), "budget file")
    assert not (tmp_path / "b").exists()


def test_deeply_nested_budget_and_bench_json(cli, tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    _assert_exit_2(cli("bench", tmp_path, "--budget", deep, "--out", tmp_path / "b"), "nested too deeply")
    nested = tmp_path / "bench.json"
    nested.write_text("[" * 100000 + "]" * 100000)
    _assert_exit_2(cli("report", nested, nested), "bench.json is corrupt: the bench run is nested too deeply")


def test_junit_on_a_pipe_is_refused_and_dev_null_is_written_in_place(cli, tmp_path):
    pipe = _fifo(tmp_path / "junit.xml")
    _assert_exit_2(cli("bench", tmp_path, "--junit", pipe, "--out", tmp_path / "b", timeout=60), "not a regular file")
    from edgemed.fsutil import atomic_write_text, check_output_file

    check_output_file(Path("/dev/null"), "--junit")  # accepted
    atomic_write_text(Path("/dev/null"), "<testsuites/>")
    assert Path("/dev/null").is_char_device()  # still the device, not a file renamed over it


def test_a_device_that_refuses_the_write_is_an_error_and_stays_a_device(tmp_path):
    """A private copy of /dev/full: the ENOSPC of the write is raised naming it; nothing is renamed over it."""
    import errno
    import os
    import stat

    from edgemed.fsutil import atomic_write_text

    full = tmp_path / "full"
    try:
        os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"making a /dev/full node needs root: {exc}")
    with pytest.raises(OSError) as info:
        atomic_write_text(full, "<testsuites/>")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(full)
    assert full.is_char_device() and not list(tmp_path.glob(".full.*"))


def test_a_manifest_listing_files_outside_its_folder(cli, tmp_path, tiny_model):
    art = tmp_path / "art"
    shutil.copytree(tiny_model, art)
    manifest = {"schema": 1, "format": "hf", "runtime": "transformers",
                "files": [{"path": "../../etc/hostname", "size": 1, "sha256": "0" * 64}]}
    (art / "edgemed.json").write_text(json.dumps(manifest))
    _assert_exit_2(cli("eval", art, "--limit", "2", "--no-progress"), "outside the artifact folder")


@pytest.mark.parametrize("what", ["model", "adapter"])
def test_corrupt_safetensors(cli, tmp_path, tiny_model, what):
    if what == "model":
        folder = tmp_path / "model"
        shutil.copytree(tiny_model, folder)
        (folder / "model.safetensors").write_bytes(os.urandom(4096))
        _assert_exit_2(cli("eval", folder, "--limit", "2", "--no-progress"), "corrupt")
        return
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "base_model_name_or_path": str(tiny_model), "r": 4, "lora_alpha": 8,
        "target_modules": ["q_proj"], "task_type": "CAUSAL_LM"}))
    (adapter / "adapter_model.safetensors").write_bytes(os.urandom(4096))
    _assert_exit_2(cli("merge", "--adapter", adapter, "--out", tmp_path / "merged"), "corrupt")
    assert not (tmp_path / "merged").exists()


def test_binary_or_broken_config_files(cli, tmp_path, tiny_model):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    (model / "config.json").write_bytes(b"\xff\xbd" + os.urandom(64))
    _assert_exit_2(cli("eval", model, "--limit", "2", "--no-progress"), "config.json")
    (model / "config.json").write_text("{bad")
    _assert_exit_2(cli("export", model, "--formats", "gguf-q8_0", "--out", tmp_path / "arts"), "config.json")
    assert not (tmp_path / "arts").exists()
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "edgemed-run.json").write_bytes(b"\xc9\x00" + os.urandom(32))
    (run / "adapter" / "adapter_config.json").write_text("{}")
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"x")
    _assert_exit_2(cli("merge", "--adapter", run, "--out", tmp_path / "m"), "edgemed-run.json")
    (run / "adapter" / "adapter_config.json").write_text("{bad")
    _assert_exit_2(cli("merge", "--adapter", run, "--out", tmp_path / "m"), "adapter_config.json is corrupt")
