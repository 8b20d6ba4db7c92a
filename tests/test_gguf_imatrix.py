"""Calibrated GGUF (gguf-<type>-imatrix) and the llama.cpp type ladder, on the tiny model with real tools.

llama-imatrix and llama-quantize are llama.cpp's own, built once from the installed llama-cpp-python's sources
(edgemed.export.gguf.tools; the first test that needs them builds all four tools, then they are cached per machine).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgemed.errors import EdgemedError

CHUNKS = 6  # of llama-imatrix's 512-token chunks: the sample's training side holds ~40


def _cli(*args: object, timeout: float = 900, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgemed.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def _error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and "Traceback" not in proc.stderr, proc.stderr
    return lines[-1]


@pytest.fixture(scope="module")
def merged(tiny_merged) -> Path:
    """tiny-random trained on the bundled sample (lineage: train/eval ids, chatml style) and merged: the session's
    shared merge (conftest), read-only."""
    return tiny_merged


@pytest.fixture(scope="module")
def calibrated(merged, tmp_path_factory) -> tuple[Path, list[dict]]:
    """gguf-f16, gguf-q4_k_m-imatrix and gguf-q4_0-imatrix exported from `merged` (the matrix computed once)."""
    from edgemed.export.run import run_export

    out = tmp_path_factory.mktemp("calibrated")
    settings = {f: {"imatrix_chunks": CHUNKS} for f in ("gguf-q4_k_m-imatrix", "gguf-q4_0-imatrix")}
    results = run_export(merged, ["gguf-f16", "gguf-q4_k_m-imatrix", "gguf-q4_0-imatrix"], out, threads=2,
                         settings=settings, show_progress=False)
    return out, results


def test_ladder_and_calibrated_names_resolve():
    from edgemed.export.gguf.types import LADDER_TYPES
    from edgemed.registry import expand_formats, get_format, gguf_tolerance, spec_of

    ladder = expand_formats(["ladder"])
    assert ladder[0] == "gguf-f16"
    for t in LADDER_TYPES:
        assert f"gguf-{t}" in ladder
        assert (f"gguf-{t}-imatrix" in ladder) == (t != "q8_0")  # q8_0's quantizer ignores a matrix
    for name in ladder:
        spec = get_format(name)
        assert spec.runtime == "llama.cpp" and spec_of(name).runtime == "llama.cpp"
    assert get_format("gguf-q2_k-imatrix").tolerance == gguf_tolerance("q2_k") == 4.0
    assert expand_formats(["hf", "ladder", "gguf-f16"])[:2] == ["hf", "gguf-f16"]  # no duplicates, order kept


@pytest.mark.parametrize("name,why", [
    ("gguf-iq2_xxs", "refuses iq2_xxs without an importance matrix"),
    ("gguf-q2_k_s", "refuses q2_k_s without an importance matrix"),
    ("gguf-iq1_m", "refuses iq1_m without"),
    ("gguf-q8_0-imatrix", "does not use an importance matrix"),
])
def test_types_llama_cpp_would_refuse_are_refused_up_front(merged, tmp_path, name, why):
    proc = _cli("export", merged, "--out", tmp_path / "out", "--formats", f"gguf-f16,{name}")
    assert proc.returncode == 2 and why in _error_line(proc) and name in _error_line(proc)
    assert not (tmp_path / "out").exists()


def test_pipeline_accepts_the_ladder_and_refuses_a_bad_name_before_training(tmp_path):
    proc = _cli("pipeline", "--model", "tiny-random", "--formats", "ladder,gguf-iq2_xs", "--out", tmp_path / "p")
    assert proc.returncode == 2 and "refuses iq2_xs without" in _error_line(proc)
    assert not (tmp_path / "p" / "train").exists()


def test_matrix_text_is_the_training_side_with_answers(merged):
    from edgemed.data import load_questions
    from edgemed.export.gguf.imatrix import training_text
    from edgemed.lineage import read_lineage
    from edgemed.prompts import get_style, question_block

    lineage = read_lineage(merged)
    text, info = training_text(merged)
    questions = {q.id: q for q in load_questions("sample", "train")[0]}
    style = get_style(lineage.prompt_style)
    assert lineage.prompt_style == "chatml" and text.count("<|im_start|>assistant") == len(lineage.train_ids)
    for i in lineage.train_ids:
        assert style.prompt(questions[i]) + style.target(questions[i]) in text
    for i in lineage.eval_ids:
        assert question_block(questions[i]) not in text
    assert info["questions"] == len(lineage.train_ids) and info["evaluation_questions"] == 0
    assert info["ids_sha256"] == hashlib.sha256("\n".join(lineage.train_ids).encode()).hexdigest()
    assert info["sha256"] == hashlib.sha256(text.encode()).hexdigest() and info["with_answers"]


def test_calibrated_export_records_the_matrix_and_its_provenance(calibrated, merged):
    from edgemed.gguf_header import read_header
    from edgemed.lineage import read_lineage

    out, results = calibrated
    assert [r["status"] for r in results] == ["exported"] * 3, [r["reason"] for r in results]
    m = json.loads((out / "gguf-q4_k_m-imatrix" / "edgemed.json").read_text())
    rec = m["export"]["imatrix"]
    assert m["status"] == "verified" and m["export"]["made_by"] == "llama-quantize"
    assert m["settings"] == {"imatrix_ctx": 512, "imatrix_chunks": CHUNKS}
    assert rec["made_by"] == "llama-imatrix" and rec["chunks"] == CHUNKS and rec["chunk_size"] == 512
    assert rec["tokens_used"] == CHUNKS * 512 < rec["text_tokens"]
    assert "--parse-special" in rec["command"] and rec["command"][0] == "llama-imatrix"
    lineage = read_lineage(merged)
    assert rec["text"]["source"] == lineage.data["source"] and rec["text"]["questions"] == len(lineage.train_ids)
    matrix = out / "gguf-q4_k_m-imatrix" / rec["file"]
    assert hashlib.sha256(matrix.read_bytes()).hexdigest() == rec["sha256"]
    assert rec["file"] in [f["path"] for f in m["files"]]
    # tiny's 64-wide rows: q4_K falls back to q5_0, which weighs by the matrix; its q8_0 token embedding does not
    assert rec["reach"]["param_share"] > 0 and rec["reach"]["weighted_types_without_matrix"] == []
    assert rec["command"][rec["command"].index("-m") + 1] == "model-f16.gguf"
    kv = read_header(out / "gguf-q4_k_m-imatrix" / m["export"]["file"])["kv"]
    assert kv["quantize.imatrix.file"] == rec["file"] and kv["quantize.imatrix.chunks_count"] == CHUNKS
    other = json.loads((out / "gguf-q4_0-imatrix" / "edgemed.json").read_text())["export"]["imatrix"]
    assert other["reused_from"] == "gguf-q4_k_m-imatrix" and other["sha256"] == rec["sha256"]


def test_calibrated_file_differs_from_plain_and_runs(calibrated, merged, tmp_path):
    from edgemed.export.run import run_export
    from edgemed.runtimes.base import open_runtime

    out, _ = calibrated
    (plain,) = run_export(merged, ["gguf-q4_k_m"], out, threads=2, show_progress=False)
    assert plain["status"] == "exported"
    a = next((out / "gguf-q4_k_m").glob("*.gguf")).read_bytes()
    b = next((out / "gguf-q4_k_m-imatrix").glob("*.gguf")).read_bytes()
    assert a != b and abs(len(a) - len(b)) / len(a) < 0.02  # same types, other rounding
    with open_runtime(out / "gguf-q4_k_m-imatrix", threads=1) as rt:
        assert rt.letter_logprobs(["Question: x\nAnswer:"]).shape == (1, 4)


def test_given_matrix_and_tensor_type_overrides(calibrated, merged, tmp_path):
    from edgemed.export.gguf.exporter import tensor_types

    out, _ = calibrated
    given = out / "gguf-q4_k_m-imatrix" / "model-q4_k_m.imatrix"
    shutil.copytree(out / "gguf-f16", tmp_path / "o" / "gguf-f16")  # a sibling f16 at a relative path
    proc = _cli("export", merged, "--out", "o", "--formats", "gguf-q5_k_m-imatrix", "--imatrix", given,
                "--gguf-output-type", "q8_0", "--gguf-tensor-type", "ffn_down=q8_0", "--threads", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "o" / "gguf-q5_k_m-imatrix" / "edgemed.json").read_text())
    assert m["settings"]["imatrix"] == str(given.resolve()) and len(m["settings"]["imatrix_sha256"]) == 64
    assert m["export"]["imatrix"]["made_by"] == "given (--imatrix)" and m["export"]["from"] == "gguf-f16 artifact"
    assert m["export"]["quantize"]["overrides"] == {"output_tensor_type": "q8_0", "tensor_types": ["ffn_down=q8_0"]}
    assert "--tensor-type" in m["export"]["quantize"]["command"]
    from gguf import GGUFReader

    downs = {t.tensor_type.name for t in GGUFReader(str(tmp_path / "o" / "gguf-q5_k_m-imatrix" /
                                                          m["export"]["file"])).tensors if "ffn_down" in t.name}
    assert downs == {"Q8_0"} and "Q8_0" in tensor_types(tmp_path / "o" / "gguf-q5_k_m-imatrix" /
                                                       m["export"]["file"])["types"]


def test_truncated_or_foreign_matrix_is_refused_before_any_work(calibrated, merged, tmp_path):
    out, _ = calibrated
    real = (out / "gguf-q4_k_m-imatrix" / "model-q4_k_m.imatrix").read_bytes()
    cut = tmp_path / "cut.imatrix"
    cut.write_bytes(real[: len(real) // 2])
    model = next((out / "gguf-f16").glob("*.gguf"))
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x07\x00\x00\x00not a matrix")
    for bad, why in ((cut, "past the end of the file"), (model, "not 'imatrix'"), (junk, "no GGUF header")):
        proc = _cli("export", merged, "--out", tmp_path / "out", "--formats", "gguf-q4_k_m-imatrix", "--imatrix", bad)
        line = _error_line(proc)
        assert proc.returncode == 2 and str(bad) in line and why in line, line
        assert not (tmp_path / "out").exists()
    proc = _cli("export", merged, "--out", tmp_path / "out", "--formats", "gguf-q4_k_m", "--imatrix", cut)
    assert proc.returncode == 2 and "gguf-<type>-imatrix" in _error_line(proc)


def test_matrix_of_another_model_is_refused(calibrated, tmp_path):
    from edgemed.export.gguf.imatrix import check_fits, read_imatrix

    out, _ = calibrated
    matrix = out / "gguf-q4_k_m-imatrix" / "model-q4_k_m.imatrix"
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"hidden_size": 576, "intermediate_size": 1536,
                                                   "num_hidden_layers": 30, "num_attention_heads": 9}))
    with pytest.raises(EdgemedError, match="computed for another model"):
        check_fits(matrix, read_imatrix(matrix), other)


def test_model_without_training_lineage_needs_a_given_matrix(tiny_model, tmp_path):
    proc = _cli("export", tiny_model, "--out", tmp_path / "out", "--formats", "gguf-q4_k_m-imatrix")
    assert proc.returncode == 2
    result = json.loads((tmp_path / "out" / "export.json").read_text())["results"][0]
    assert result["status"] == "failed" and "--imatrix FILE" in result["reason"]
    assert not (tmp_path / "out" / "gguf-q4_k_m-imatrix").exists()


def test_malformed_gguf_header_is_refused_naming_the_file(calibrated, tmp_path):
    import struct

    out, _ = calibrated
    real = next((out / "gguf-f16").glob("*.gguf")).read_bytes()
    cases = {
        "counts.gguf": b"GGUF" + struct.pack("<IQQ", 3, 5, 2**40) + b"\xff" * 100,
        "version.gguf": b"GGUF" + struct.pack("<IQQ", 99, 0, 0) + b"\0" * 16,
        "cut.gguf": real[: len(real) // 3],
        "magic.gguf": b"GGML" + real[4:200],
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        proc = _cli("eval", path, "--out", tmp_path / f"eval-{name}", "--limit", "1", timeout=300)
        line = _error_line(proc)
        assert proc.returncode == 2 and str(path) in line, (name, line)
        assert "GGUF" in line


def test_build_without_cmake_or_compiler_says_what_to_install(monkeypatch, tmp_path):
    from edgemed.export.gguf import tools as llama_tools

    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no cmake, no cc, no c++
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    assert llama_tools.missing_build_tools() == ["cmake", "a C compiler", "a C++ compiler"]
    with pytest.raises(EdgemedError, match="needs cmake and a C compiler and a C.. compiler") as exc:
        llama_tools.ensure_tools(force=True)
    assert exc.value.exit_code == 2 and "apt-get install cmake build-essential" in str(exc.value)


def test_build_script_prints_the_tools_with_bench_and_perplexity_last(calibrated):
    script = Path(__file__).resolve().parents[1] / "scripts" / "build_llama_tools.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [Path(x).name for x in lines] == ["llama-imatrix", "llama-quantize", "llama-bench", "llama-perplexity"]
    assert all(Path(x).is_file() for x in lines)


def test_info_lists_the_types_and_their_matrix_use(tmp_path):
    proc = _cli("info", "--out", tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {r["type"]: r for r in json.loads((tmp_path / "info.json").read_text())["gguf_types"]}
    assert rows["q4_k_m"]["imatrix"] == "benefits" and rows["q4_k_m"]["ladder"]
    assert rows["iq2_xxs"]["imatrix"] == "needs" and rows["iq2_xxs"]["formats"] == ["gguf-iq2_xxs-imatrix"]
    assert rows["q8_0"]["imatrix"] == "ignores" and rows["q8_0"]["formats"] == ["gguf-q8_0"]
    assert "llama.cpp types" in proc.stdout
