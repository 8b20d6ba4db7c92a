"""edgemed export on the tiny model: all formats export and verify; re-runs skip; failures are contained."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edgemed.errors import EdgemedError
from edgemed.registry import FORMATS

ALL = [name for name, spec in FORMATS.items() if spec.default]  # what export makes without --formats


@pytest.fixture(scope="module")
def exported(tiny_exports):
    """Every default format, overlapped as the pipeline does: the session's shared export (conftest), read-only."""
    return tiny_exports


@pytest.fixture
def exported_copy(tiny_exports, tmp_path):
    """A private copy of the shared export, for a test that exports into it again."""
    out, results = tiny_exports
    shutil.copytree(out, tmp_path / "exports")
    return tmp_path / "exports", results


def test_all_formats_export_and_verify(exported):
    out, results = exported
    by = {r["format"]: r for r in results}
    assert list(by) == ALL
    for name, r in by.items():
        assert r["status"] == "exported", (name, r["reason"])
        v = r["verification"]
        assert v["passed"] and v["token_parity"], name
        assert v["max_abs_delta"] <= FORMATS[name].tolerance
        assert v["decoded_tokens"] >= 1
        assert (out / name / "edgemed.json").is_file()
    summary = json.loads((out / "export.json").read_text())
    assert [r["format"] for r in summary["results"]] == ALL
    assert summary["prompt_style"] == "chatml"
    gguf = [n for n in ALL if n.startswith("gguf-")]
    assert summary["overlap"]["chains"] == [gguf, ["onnx", "onnx-int8"]], summary["overlap"]


def test_overlapped_chains_make_the_same_artifacts_as_one_at_a_time(exported, tiny_model, tmp_path):
    """The GGUF chain exported beside the ONNX one (the pipeline's overlap) writes the same files and verifies them to
    the same deltas as an export that does one format at a time."""
    from edgemed.export.run import run_export
    from edgemed.fsutil import sha256_file

    out, overlapped = exported
    names = ["onnx", "gguf-f16", "gguf-q8_0"]
    plain = run_export(tiny_model, names, tmp_path, threads=2, show_progress=False)
    assert json.loads((tmp_path / "export.json").read_text())["overlap"]["chains"] == []
    by = {r["format"]: r for r in overlapped}
    for r in plain:
        name = r["format"]
        assert r["verification"]["max_abs_delta"] == by[name]["verification"]["max_abs_delta"], name
        if name.startswith("gguf-"):
            assert sha256_file(next((tmp_path / name).glob("*.gguf"))) == sha256_file(next((out / name).glob("*.gguf")))


def test_manifest_records_files_versions_and_verification(exported):
    from edgemed.fsutil import sha256_file
    from edgemed.manifest import check_files, detect_runtime, read_manifest

    out, _ = exported
    for name in ALL:
        folder = out / name
        m = read_manifest(folder)
        assert m["format"] == name and m["status"] == "verified"
        assert m["runtime"] == FORMATS[name].runtime
        assert detect_runtime(folder) == (name, FORMATS[name].runtime)
        assert m["lineage"]["prompt_style"] == "chatml"
        assert m["lineage"]["style_source"] == "chat template at export" and m["lineage"]["train_ids"] is None
        assert m["export_seconds"] >= 0 and m["created"]
        assert "python" in m["versions"] and m["source"]["sha256"]
        assert m["verification"]["passed"]
        check_files(folder, m, hashes=True)
        first = m["files"][0]
        assert sha256_file(folder / first["path"]) == first["sha256"]
        assert not [p for p in folder.iterdir() if p.name.startswith(".")], "temp files left in the artifact"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temp folders left in the export dir"


def test_gguf_manifest_has_effective_type_mix(exported):
    from edgemed.manifest import read_manifest

    out, _ = exported
    q4 = read_manifest(out / "gguf-q4_k_m")["export"]
    assert q4["file_type"] == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    # hidden size 64 is not a multiple of 256: K-quants fall back on legacy types, and the mix says so.
    assert "Q4_K" not in q4["types"] and {"Q5_0", "Q8_0"} & set(q4["types"])
    assert abs(sum(t["param_share"] for t in q4["types"].values()) - 1) < 1e-3
    f16 = read_manifest(out / "gguf-f16")["export"]
    assert "F16" in f16["types"] and f16["made_by"] == "convert_hf_to_gguf.py"
    assert read_manifest(out / "gguf-q8_0")["export"]["from"] == "gguf-f16 artifact"
    int8 = read_manifest(out / "onnx-int8")["export"]
    assert int8["from"] == "onnx artifact"
    assert int8["fp32_nodes_kept"] == 2 and int8["quantized_nodes"] > 0  # the 2 layers' down_proj stay fp32


def test_rerun_skips_unchanged_and_refuses_changed_settings(exported_copy, tiny_model):
    from edgemed.export.run import exit_code, run_export

    out, _ = exported_copy
    before = (out / "bnb-int8" / "edgemed.json").read_text()
    again = run_export(tiny_model, None, out, threads=2, show_progress=False)
    assert {r["status"] for r in again} == {"skipped"}
    assert exit_code(again) == 0
    changed = run_export(tiny_model, ["bnb-int8"], out, settings={"bnb-int8": {"llm_int8_threshold": 5.0}},
                         show_progress=False)
    assert changed[0]["status"] == "failed" and "--force" in changed[0]["reason"]
    assert exit_code(changed) == 2
    assert (out / "bnb-int8" / "edgemed.json").read_text() == before  # untouched
    forced = run_export(tiny_model, ["bnb-int8"], out, force=True, threads=2,
                        settings={"bnb-int8": {"llm_int8_threshold": 5.0}}, show_progress=False)
    assert forced[0]["status"] == "exported"
    assert json.loads((out / "bnb-int8" / "edgemed.json").read_text())["settings"]["llm_int8_threshold"] == 5.0


def test_one_failing_format_does_not_lose_the_others(tiny_model, tmp_path):
    from edgemed.export.run import exit_code, run_export

    results = run_export(tiny_model, ["hf", "onnx-int8"], tmp_path, verify=False, show_progress=False,
                         settings={"onnx-int8": {"weight_type": "int3"}})
    by = {r["format"]: r for r in results}
    assert by["hf"]["status"] == "exported"
    assert by["onnx-int8"]["status"] == "failed" and "weight_type" in by["onnx-int8"]["reason"]
    assert not (tmp_path / "onnx-int8").exists()
    assert exit_code(results) == 2
    assert json.loads((tmp_path / "export.json").read_text())["results"][1]["status"] == "failed"


def test_failed_verification_places_nothing(tiny_model, tmp_path, monkeypatch):
    from edgemed.export.run import exit_code, run_export

    monkeypatch.setitem(FORMATS, "hf", dataclasses.replace(FORMATS["hf"], tolerance=-1.0))
    results = run_export(tiny_model, ["hf"], tmp_path, threads=2, show_progress=False)
    assert results[0]["status"] == "failed" and "tolerance" in results[0]["reason"]
    assert exit_code(results) == 1
    assert not (tmp_path / "hf").exists()
    assert not list(tmp_path.glob(".hf*"))


def test_token_mismatch_is_reported(exported):
    from edgemed.export.verify import Reference, verify

    out, _ = exported
    ids = [[1, 2, 3]] * 8
    ref = Reference("chatml", ["Question: x\nAnswer:"] * 6, ["12 apples", "x"], np.zeros((6, 4)), ids, [0, 1, 2, 3])
    result = verify(out / "gguf-f16", ref, tolerance=100.0, threads=2)
    assert not result["passed"] and not result["token_parity"]
    assert "token ids differ" in result["error"] and result["token_mismatch"]["text"] == 0


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "edgemed.cli.main", "export", *map(str, args)],
                          capture_output=True, text=True, timeout=600, **kw)


def _one_error_line(proc):
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and "Traceback" not in proc.stderr, proc.stderr
    return lines[-1]


def test_non_model_folder_is_refused(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hi")
    proc = _cli(tmp_path / "notes", "--out", tmp_path / "out", "--formats", "hf")
    assert proc.returncode == 2
    assert "not a model folder" in _one_error_line(proc)
    assert not (tmp_path / "out").exists()


def test_missing_shard_and_truncated_weights_are_refused(tiny_model, tmp_path):
    broken = tmp_path / "sharded"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").rename(broken / "model-00001-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                            "b": "model-00002-of-00002.safetensors"}}
    (broken / "model.safetensors.index.json").write_text(json.dumps(index))
    proc = _cli(broken, "--out", tmp_path / "out", "--formats", "gguf-f16")
    assert proc.returncode == 2 and "model-00002-of-00002.safetensors" in _one_error_line(proc)

    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_model, truncated)
    weights = truncated / "model.safetensors"
    with open(weights, "r+b") as fh:
        fh.truncate(weights.stat().st_size // 2)
    proc = _cli(truncated, "--out", tmp_path / "out", "--formats", "gguf-f16")
    assert proc.returncode == 2 and "truncated" in _one_error_line(proc)
    assert not (tmp_path / "out").exists()


def test_unknown_format_is_refused_with_a_suggestion(tiny_model, tmp_path):
    proc = _cli(tiny_model, "--out", tmp_path / "out", "--formats", "hf,gguf-q4km")
    assert proc.returncode == 2 and "did you mean 'gguf-q4_k_m'" in _one_error_line(proc)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # over ~20 s on 2 cores
def test_any_llama_cpp_type_exports_as_gguf_type(tiny_model, tmp_path):
    from edgemed.export.run import run_export
    from edgemed.manifest import read_manifest
    from edgemed.runtimes.base import open_runtime

    (r,) = run_export(tiny_model, ["gguf-q6_k"], tmp_path, threads=2, show_progress=False)
    assert r["status"] == "exported" and r["verification"]["passed"], r["reason"]
    m = read_manifest(tmp_path / "gguf-q6_k")
    assert m["runtime"] == "llama.cpp" and m["export"]["file_type"] == 18  # LLAMA_FTYPE_MOSTLY_Q6_K
    with open_runtime(tmp_path / "gguf-q6_k", threads=1) as rt:
        assert rt.letter_logprobs(["Question: x\nAnswer:"]).shape == (1, 4)


def test_missing_converter_is_reported_with_the_fix(monkeypatch, tmp_path):
    from edgemed.export.gguf.exporter import GgufExporter

    monkeypatch.setenv("EDGEMED_HF2GGUF", str(tmp_path / "nowhere"))
    reason = GgufExporter("gguf-f16").available()
    assert reason and "scripts/setup.sh" in reason and "EDGEMED_HF2GGUF" in reason


@pytest.mark.slow  # over ~20 s on 2 cores
def test_killed_export_leaves_nothing_that_looks_complete(tiny_model, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "edgemed.cli.main", "export", str(tiny_model), "--out", str(out),
                             "--formats", "gguf-f16", "--threads", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob(".gguf-f16.*.partial/*.gguf")):
        time.sleep(0.05)
    assert list(out.glob(".gguf-f16.*.partial")), "the export never got under way"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "gguf-f16").exists()
    # a re-run removes the stale temp folder and completes the artifact
    done = _cli(tiny_model, "--out", out, "--formats", "gguf-f16", "--threads", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "gguf-f16" / "edgemed.json").is_file()
    assert not list(out.glob(".gguf-f16*"))


def test_prompt_style_comes_from_the_merge_record_else_the_template(tiny_model, tmp_path):
    from edgemed.export.base import source_lineage

    assert source_lineage(tiny_model).prompt_style == "chatml"  # from chat_template.jinja
    folder = tmp_path / "merged"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text("{}")
    assert source_lineage(folder).prompt_style == "plain"
    lineage = {"prompt_style": "llama3", "style_source": "train --prompt-style", "train_ids": ["a"], "eval_ids": []}
    (folder / "edgemed-merge.json").write_text(json.dumps({"lineage": lineage}))
    assert source_lineage(folder).prompt_style == "llama3" and source_lineage(folder).train_ids == ["a"]
    (folder / "edgemed-merge.json").write_text(json.dumps({"lineage": {**lineage, "prompt_style": "vicuna"}}))
    with pytest.raises(EdgemedError, match="vicuna"):  # an unknown recorded style is refused, never re-detected
        source_lineage(folder)


def test_gguf_converter_takes_relative_paths(tiny_model, tmp_path, monkeypatch):
    """`edgemed pipeline --out runs/x` hands the converter relative paths; it runs in another cwd."""
    import shutil
    from pathlib import Path

    from edgemed.export.gguf.exporter import convert

    shutil.copytree(tiny_model, tmp_path / "model")
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path)
    convert(Path("model"), Path("out") / "model.gguf")
    with open(tmp_path / "out" / "model.gguf", "rb") as fh:
        assert fh.read(4) == b"GGUF"


def test_sigterm_during_export_removes_the_partial_and_says_so(tiny_model, tmp_path):
    """SIGTERM unwinds like Ctrl-C: the temp folder is removed, the child converter killed, a clear message, 143."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "edgemed.cli.main", "export", str(tiny_model), "--out", str(out),
                             "--formats", "gguf-f16", "--threads", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob(".gguf-f16.*.partial")):
        time.sleep(0.05)
    assert list(out.glob(".gguf-f16.*.partial")), "the export never got under way"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert not list(out.glob(".gguf-f16*")) and not (out / "gguf-f16").exists()


def test_export_bad_threads_and_out_exit_2_before_the_work(tiny_model, tmp_path):
    (tmp_path / "a-file").write_text("x")
    for args, needle in ((["--threads", "0", "--out", tmp_path / "o"], "--threads"),
                         (["--threads", "1000000", "--out", tmp_path / "o"], "--threads 1000000"),
                         (["--out", tmp_path / "a-file"], "is a file"),
                         (["--out", tiny_model], "is the merged model folder or inside it"),
                         (["--out", tiny_model / "exports"], "is the merged model folder or inside it")):
        proc = _cli(tiny_model, "--formats", "gguf-f16", *map(str, args))
        assert proc.returncode == 2 and needle in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists() and not (tiny_model / "exports").exists()
    assert not (tiny_model / "export.json").exists()
