"""Bad input on the newer surfaces, on files broken here: a manifest that names another format than its file, a tune
grid with values its exporters refuse, did-you-mean over every format name, importance-matrix files that are not
one, a truncated ONNX weights file, and a stop while a child runs compilers in process groups of their own.

Artifacts come from the session's shared exports (conftest ``tiny_exports``), copied before they are broken.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import run_cli

from edgemed.errors import EdgemedError


def _error_line(proc: subprocess.CompletedProcess) -> str:
    """The one `error:` line of a refused command (and no traceback, no engine line before it)."""
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def _artifact(tiny_exports, fmt: str, dest: Path, name: str | None = None, **manifest) -> Path:
    """A copy of the shared `fmt` artifact under `dest`, its manifest's top-level keys replaced by `manifest`."""
    out, _ = tiny_exports
    folder = dest / (name or fmt)
    shutil.copytree(out / fmt, folder)
    if manifest:
        path = folder / "edgemed.json"
        data = json.loads(path.read_text())
        for key, value in manifest.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key].update(value)
            else:
                data[key] = value
        path.write_text(json.dumps(data))
    return folder


# --- a manifest against its file ------------------------------------------------------------------------------------
def test_intact_artifacts_check_out(tiny_exports):
    from edgemed.manifest import check_artifact

    out, results = tiny_exports
    exported = [r["format"] for r in results if r["status"] == "exported"]
    assert {"hf", "onnx", "gguf-q8_0", "gguf-q4_k_m"} <= set(exported)
    for fmt in exported:
        assert check_artifact(out / fmt)["format"] == fmt


def test_gguf_whose_manifest_names_another_type_is_refused(tiny_exports, tmp_path):
    from edgemed.manifest import check_artifact

    wrong = _artifact(tiny_exports, "gguf-q8_0", tmp_path, "gguf-q4_k_m", format="gguf-q4_k_m")
    with pytest.raises(EdgemedError, match=r"manifest says format gguf-q4_k_m.*header says gguf-q8_0"):
        check_artifact(wrong)
    proc = run_cli("eval", wrong, "--data", "sample", "--limit", "2", "--no-progress", timeout=300)
    assert proc.returncode == 2 and "gguf-q8_0" in _error_line(proc) and "gguf-q4_k_m" in _error_line(proc)
    proc = run_cli("bench", wrong, "--limit", "2", "--out", tmp_path / "b", timeout=300)
    assert proc.returncode == 2 and "general.file_type 7" in _error_line(proc)
    assert not (tmp_path / "b").exists()


def test_swapped_weights_and_another_models_file_are_refused(tiny_exports, tmp_path):
    from edgemed.manifest import check_artifact

    out, _ = tiny_exports
    swapped = _artifact(tiny_exports, "gguf-q4_k_m", tmp_path)
    target = next(swapped.glob("*.gguf"))
    shutil.copyfile(next((out / "gguf-q8_0").glob("*.gguf")), target)
    with pytest.raises(EdgemedError, match="is corrupt"):
        check_artifact(swapped)
    same_size = _artifact(tiny_exports, "gguf-q8_0", tmp_path, "flipped")
    gguf = next(same_size.glob("*.gguf"))
    data = bytearray(gguf.read_bytes())
    data[-100] ^= 0xFF  # one weight byte: the size is right, the sha256 is not
    gguf.write_bytes(bytes(data))
    with pytest.raises(EdgemedError, match="changed since export"):
        check_artifact(same_size)
    other = _artifact(tiny_exports, "gguf-q8_0", tmp_path, "other-model", source={"model_type": "qwen2"})
    with pytest.raises(EdgemedError, match="qwen2 model.*general.architecture llama"):
        check_artifact(other)


def test_onnx_and_transformers_graphs_are_checked_against_the_format(tiny_exports, tmp_path):
    from edgemed.manifest import check_artifact

    as_int4 = _artifact(tiny_exports, "onnx", tmp_path, "as-int4", format="onnx-int4")
    with pytest.raises(EdgemedError, match="not a onnx-int4 graph.*MatMulNBits"):
        check_artifact(as_int4)
    as_fp = _artifact(tiny_exports, "onnx-int8", tmp_path, "as-fp", format="onnx")
    with pytest.raises(EdgemedError, match="not a onnx graph.*MatMulInteger.*looks like onnx-int8"):
        check_artifact(as_fp)
    as_bnb = _artifact(tiny_exports, "hf", tmp_path, "as-bnb", format="bnb-int8")
    with pytest.raises(EdgemedError, match="manifest says format bnb-int8"):
        check_artifact(as_bnb)


def test_gguf_file_type_table_is_llama_cpps():
    from edgemed.export.gguf.exporter import ftypes
    from edgemed.export.gguf.types import FILE_TYPES

    known = ftypes()
    assert {k: known[k] for k in FILE_TYPES if k in known} == {k: v for k, v in FILE_TYPES.items() if k in known}
    assert len(set(FILE_TYPES) & set(known)) >= 30


# --- did-you-mean over every name ---------------------------------------------------------------------------------
@pytest.mark.parametrize("typo, meant", [
    ("gguf-q5_k_mm", "gguf-q5_k_m"), ("gguf-iq4_nll", "gguf-iq4_nl"), ("gguf-q4_k_m-imatrx", "gguf-q4_k_m-imatrix"),
    ("onnx-int3", "onnx-int[48]"), ("ladderr", "ladder"), ("gguf-q6k", "gguf-q6_k"), ("gguf-iq2_xxs-imatrx",
                                                                                       "gguf-iq2_xxs-imatrix"),
])
def test_did_you_mean_knows_every_name(typo, meant):
    from edgemed.registry import get_format

    with pytest.raises(EdgemedError, match=f"did you mean '{meant}'"):
        get_format(typo)


def test_export_suggests_the_llama_cpp_type(tiny_model, tmp_path):
    proc = run_cli("export", tiny_model, "--formats", "gguf-q5_k_mm", "--out", tmp_path / "x")
    assert proc.returncode == 2 and "did you mean 'gguf-q5_k_m'?" in _error_line(proc)
    assert not (tmp_path / "x").exists()


# --- the tune grid, checked before any work -----------------------------------------------------------------------
@pytest.mark.parametrize("table, why", [
    ("[[openvino]]\nformat = 'openvino-int4'\ngroup_size = 0\n", "group_size must be a positive integer"),
    ("[[openvino]]\nformat = 'openvino-int4'\ngroup_size = '128'\n", "not '128'"),
    ("[[openvino]]\nformat = 'openvino-int4'\nratio = 1.5\n", r"ratio .* must be in \(0, 1\]"),
    ("[[openvino]]\nformat = 'openvino-int4'\nratio = -0.2\n", r"ratio .* must be in \(0, 1\]"),
    ("[[openvino]]\nformat = 'openvino-int8'\nmode = 'int4_asym'\n", "mode must be int8_asym"),
    ("[[onnx]]\nformat = 'onnx-int4'\nblock_size = 33\n", "power of two >= 16"),
    ("[[onnx]]\nformat = 'onnx-int4'\nblock_size = [32, 8]\n", "power of two >= 16"),
    ("[[onnx]]\nformat = 'onnx-int3'\n", "did you mean 'onnx-int[48]'"),
    ("[[gguf]]\ntypes = ['q4_k_mm']\n", "did you mean 'gguf-q4_k_m'"),
])
def test_grid_values_are_refused_up_front(tmp_path, table, why):
    from edgemed.bench.tune.config import TuneConfig

    space = tmp_path / "space.toml"
    space.write_text(table)
    with pytest.raises(EdgemedError, match=why):
        TuneConfig(space=space).validate()


@pytest.mark.parametrize("flag, value", [("max_size", "0"), ("max_memory", "0MB"), ("max_p95_ms", "0"),
                                         ("min_tg", 0.0), ("max_kld", float("nan"))])
def test_every_budget_bound_is_checked(flag, value):
    from edgemed.bench.tune.config import TuneConfig

    with pytest.raises(EdgemedError, match=f"--{flag.replace('_', '-')}"):
        TuneConfig(**{flag: value}).validate()


def test_tune_and_pipeline_refuse_a_bad_grid_with_nothing_written(tiny_model, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[onnx]]\nformat = 'onnx-int4'\nblock_size = 33\n")
    proc = run_cli("tune", tiny_model, "--space", bad, "--cache", tmp_path / "cache", "--out", tmp_path / "t")
    assert proc.returncode == 2 and "block_size" in _error_line(proc)
    proc = run_cli("pipeline", "--model", "tiny-random", "--max-steps", "1", "--out", tmp_path / "p", "--tune",
                   f"space={bad}")
    assert proc.returncode == 2 and "block_size must be a power of two" in _error_line(proc)
    missing = run_cli("pipeline", "--model", "tiny-random", "--out", tmp_path / "p", "--tune",
                      f"space={tmp_path / 'none.toml'}")
    assert missing.returncode == 2 and "does not exist" in _error_line(missing)
    assert not any(p.exists() for p in (tmp_path / "t", tmp_path / "cache", tmp_path / "p"))


def test_a_contender_failing_in_stage_two_is_never_replaced_in_silence():
    from edgemed.bench.tune.report import answer

    def rec(name, status, stage, size):
        return {"id": name, "status": status, "stage": stage, "size_bytes": size, "reason": f"{name} why",
                "stage1": [{}], "kld_mean": 0.1, "kld_ci": [0.05, 0.15]}

    records = [rec("gguf-q4_0", "failed", 2, 10), rec("gguf-q5_0", "meets", 2, 12), rec("gguf-q2_k", "failed", 1, 8)]
    said = answer({}, records[1], records, {"max_kld": 1.0}, "size")
    assert said["text"].startswith("NOT ESTABLISHED: gguf-q4_0") and "gguf-q4_0 why" in said["text"]
    assert said["failed_contenders"] == [{"id": "gguf-q4_0", "reason": "gguf-q4_0 why"}]
    assert "gguf-q2_k" in said["text"]  # failed in stage 1: named too
    quiet = answer({}, records[1], records[1:], {"max_kld": 1.0}, "size")
    assert not quiet["failed_contenders"] and quiet["text"].startswith("gguf-q5_0 meets")


# --- importance matrices ----------------------------------------------------------------------------------------------
def test_imatrix_files_that_are_not_one_are_named_for_what_they_are(tmp_path):
    from edgemed.export.gguf.imatrix import read_imatrix

    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(EdgemedError, match="is empty"):
        read_imatrix(empty)
    with pytest.raises(EdgemedError, match="is a directory"):
        read_imatrix(tmp_path)
    legacy = tmp_path / "imatrix.dat"
    legacy.write_bytes(b"\x03\x00\x00\x00" + b"\x00" * 64)
    with pytest.raises(EdgemedError, match="legacy .dat"):
        read_imatrix(legacy)


def _foreign_matrix(path: Path) -> Path:
    """A llama-imatrix-shaped GGUF for a model with 4096-wide rows and 40 layers."""
    import numpy as np
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), arch="llama")  # general.architecture is written; the type says what it is
    w.add_type("imatrix")
    for layer in (0, 39):
        w.add_tensor(f"blk.{layer}.attn_q.weight.in_sum2", np.ones(4096, dtype=np.float32))
        w.add_tensor(f"blk.{layer}.attn_q.weight.counts", np.ones(1, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_a_matrix_for_another_model_is_refused_before_any_work(tiny_model, tmp_path):
    matrix = _foreign_matrix(tmp_path / "other.imatrix.gguf")
    out = tmp_path / "exports"
    proc = run_cli("export", tiny_model, "--formats", "gguf-q4_k_m-imatrix", "--imatrix", matrix, "--out", out)
    assert proc.returncode == 2 and "computed for another model" in _error_line(proc)
    assert not out.exists()


# --- an engine's own stderr ---------------------------------------------------------------------------------------
def test_truncated_onnx_weights_give_one_edgemed_line(tiny_exports, tmp_path):
    import onnx

    folder = _artifact(tiny_exports, "onnx", tmp_path, "ext")
    model = onnx.load(str(folder / "model.onnx"))
    (folder / "model.onnx").unlink()
    for extra in folder.glob("model.onnx*data"):
        extra.unlink()
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, location="model.onnx_data",
                    size_threshold=0)
    data = folder / "model.onnx_data"
    with open(data, "r+b") as fh:
        fh.truncate(data.stat().st_size // 2)
    (folder / "edgemed.json").unlink()  # no manifest to catch the size: onnxruntime meets the file
    proc = run_cli("eval", folder, "--data", "sample", "--limit", "2", "--no-progress", timeout=300)
    assert proc.returncode == 2, proc.stderr
    line = _error_line(proc)
    assert "[E:onnxruntime" not in proc.stderr and "onnxruntime could not load" in line
    log = Path(line.rsplit("onnxruntime's own log: ", 1)[1].rstrip(")"))
    assert "onnxruntime" in log.read_text()
    log.unlink()


# --- a stop reaches every process -------------------------------------------------------------------------------------
def _session(sid: int) -> list[int]:
    """Live processes of session `sid` (zombies, already dead, left out)."""
    from edgemed.process.child import session_members

    alive = []
    for pid in session_members(sid):
        try:
            state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != b"Z":
            alive.append(pid)
    return alive


def _groups(pids: list[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            out.add(os.getpgid(pid))
        except ProcessLookupError:
            continue
    return out


def test_a_stop_kills_compilers_in_groups_of_their_own(tmp_path):
    """A real cmake + ninja build under run_child (ninja runs each build command in a process group of its own, as
    it does llama.cpp's compilers), the parent stopped by SIGTERM while two commands run: nothing is left."""
    if not (shutil.which("cmake") and shutil.which("ninja")):
        pytest.fail("cmake and ninja are needed (apt-get install cmake ninja-build)")
    src = tmp_path / "src"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(slow NONE)\n"
        "add_custom_command(OUTPUT a.txt COMMAND sleep 120 COMMAND touch a.txt)\n"
        "add_custom_command(OUTPUT b.txt COMMAND sleep 120 COMMAND touch b.txt)\n"
        "add_custom_target(slow ALL DEPENDS a.txt b.txt)\n")
    script = tmp_path / "build.py"
    script.write_text(textwrap.dedent(f"""
        import signal, subprocess, sys
        from pathlib import Path
        from edgemed.process.child import run_child
        from edgemed.errors import Terminated
        def stop(signum, frame):
            raise Terminated(signum)
        signal.signal(signal.SIGTERM, stop)
        b = Path({str(tmp_path / 'build')!r})
        subprocess.run(["cmake", "-S", {str(src)!r}, "-B", str(b), "-G", "Ninja"], check=True, capture_output=True)
        try:
            run_child(["cmake", "--build", str(b), "-j", "2"], b / "build.log",
                      watch=lambda pid: (print(pid, flush=True), lambda: None)[1])
        except Terminated:
            sys.exit(143)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    sid = int(proc.stdout.readline())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_groups(_session(sid)) - {sid}) < 2:
        time.sleep(0.05)  # until both build commands run, each in a group other than the build's own
    running = _session(sid)
    assert len(_groups(running) - {sid}) == 2, running
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    time.sleep(0.3)
    assert _session(sid) == [], [Path(f"/proc/{p}/cmdline").read_bytes() for p in _session(sid)]
