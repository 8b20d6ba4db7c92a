"""The ONNX int4 and OpenVINO formats on the tiny model: export, verify, eval, bench, bad files, the
torch-free OpenVINO runtime and the data-aware (AWQ) calibration text; the real SmolLM2 under the slow mark."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgemed.registry import FORMATS

NEW = ["onnx-int4", "openvino-int8", "openvino-int4"]
pytest.importorskip("openvino")
pytest.importorskip("nncf")
pytest.importorskip("onnx_ir")


@pytest.fixture(scope="module")
def exported(tiny_model, tiny_exports, tmp_path_factory):
    """hf, onnx and the new formats in one export folder: hf and onnx copied from the session's shared export (the
    run skips them as unchanged), the new formats built on that onnx artifact."""
    from conftest import copy_artifacts

    from edgemed.export.run import run_export

    out = copy_artifacts(tiny_exports[0], tmp_path_factory.mktemp("exports-int4") / "out", ["hf", "onnx"])
    results = run_export(tiny_model, ["hf", "onnx", *NEW], out, threads=2, show_progress=False)
    return out, {r["format"]: r for r in results}


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and "Traceback" not in proc.stderr, proc.stderr
    return lines[-1]


def test_new_formats_export_and_verify_within_tolerance(exported):
    from edgemed.manifest import check_files, read_manifest

    out, by = exported
    for name in NEW:
        r = by[name]
        assert r["status"] == "exported", (name, r["reason"])
        v = r["verification"]
        assert v["passed"] and v["token_parity"] and v["decoded_tokens"] >= 1, name
        assert v["max_abs_delta"] <= FORMATS[name].tolerance
        m = read_manifest(out / name)
        assert m["runtime"] == FORMATS[name].runtime and m["status"] == "verified"
        check_files(out / name, m, hashes=True)
        assert m["export"]["from"] == "onnx artifact"  # built on the onnx artifact of the same run
    assert not FORMATS["onnx-int4"].default and not FORMATS["openvino-int4"].default  # only when named


def test_onnx_int4_manifest_records_the_quantizer_settings(exported):
    from edgemed.manifest import read_manifest

    out, _ = exported
    m = read_manifest(out / "onnx-int4")
    assert m["settings"]["block_size"] == 32 and m["settings"]["algorithm"] == "rtn"
    assert m["settings"]["accuracy_level"] == 4 and m["settings"]["symmetric"] is True
    e = m["export"]
    assert e["published_as"] == "cpu-int4-rtn-block-32-acc-level-4"
    assert e["quantized_nodes"] == 2 * 7 + 1 and e["fp32_matmuls"] == []  # 7 per layer + the untied lm_head
    assert e["lm_head_quantized"] and e["lm_head_untied"] == ["/lm_head/MatMul"]
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "onnx-int4" / "model.onnx"), load_external_data=False).graph.node}
    assert "MatMulNBits" in ops


def test_openvino_manifests_record_mode_group_size_and_dataset(exported):
    from edgemed.manifest import read_manifest

    out, _ = exported
    int8 = read_manifest(out / "openvino-int8")["export"]
    assert int8["mode"] == "int8_asym" and int8["dataset"] is None and "u8" in int8["weights"]
    int4 = read_manifest(out / "openvino-int4")["export"]
    assert int4["mode"] == "int4_asym" and int4["group_size"] == 128 and int4["ratio"] == 1.0
    assert int4["dataset"] is None and "awq" not in int4  # data-free unless data_aware
    assert "u4" in int4["weights"] and "u8" in int4["weights"]  # int4 layers, int8 embedding/lm_head backup
    assert int4["stateful"]["kv_cache_variables"] == 2 * 2  # the KV cache lives in variables: 2 layers x (k, v)
    assert int8["usage_telemetry"].startswith("off") and int4["usage_telemetry"].startswith("off")


def test_eval_scores_the_new_formats(exported, cli, tmp_path):
    out, _ = exported
    for name in NEW:
        proc = cli("eval", out / name, "--limit", "3", "--threads", "2", "--out", tmp_path / name)
        assert proc.returncode == 0, (name, proc.stderr[-2000:])
        assert list((tmp_path / name).glob("*.json")), name


def test_openvino_runtime_matches_onnx_and_needs_no_torch(exported, tmp_path):
    """Letters, sequence log-probs and generation through OpenVINO with torch, transformers, optimum, nncf and
    onnxruntime unimportable (what `pip install 'edgemed[openvino]'` gives); int8 stays close to the fp32 onnx."""
    from edgemed.data import load_questions
    from edgemed.prompts import get_style
    from edgemed.runtimes.onnx import OnnxRuntime

    out, _ = exported
    qs = load_questions("sample")[0][:3]
    prompts = [get_style("chatml").prompt(q) for q in qs]
    with OnnxRuntime(out / "onnx", threads=1) as rt:
        want = rt.letter_logprobs(prompts)
    code = textwrap.dedent(f"""
        import importlib.abc, json, sys
        BANNED = ("torch", "transformers", "optimum", "nncf", "onnxruntime")
        class Forbid(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BANNED:
                    raise RuntimeError("forbidden import: " + name)
        sys.meta_path.insert(0, Forbid())
        from edgemed.runtimes.base import open_runtime
        prompts = {prompts!r}
        with open_runtime({str(out / "openvino-int8")!r}, threads=1) as rt:
            lp = rt.letter_logprobs(prompts)
            one = rt.letter_logprobs(prompts[:1], batch_size=1)
            seq = rt.sequence_logprobs(rt.tokenize(prompts[0]))
            g = rt.generate(prompts[0], max_new_tokens=3)
            info = rt.info()
        print(json.dumps({{"lp": lp.tolist(), "one": one.tolist(), "seq": list(seq.shape), "vocab": rt.vocab_size,
                          "n": g.new_tokens, "style": rt.prompt_style, "info": info,
                          "loaded": sorted(m for m in sys.modules if m.split(".")[0] in BANNED)}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["loaded"] == [] and got["style"] == "chatml" and got["n"] >= 1
    assert got["seq"] == [got["seq"][0], got["vocab"]] and got["seq"][0] > 1
    info = got["info"]
    assert info["runtime"] == "openvino" and info["threads"] == 1 and info["dtype"] in ("float32", "bfloat16")
    assert info["compile_config_set_by_edgemed"] == {"INFERENCE_NUM_THREADS": 1}
    assert info["stateful"] and info["kv_cache_variables"] == 4 and "KV_CACHE_PRECISION" in info["compiled_model"]
    lp = np.array(got["lp"])
    assert np.abs(lp[:1] - np.array(got["one"])).max() < 1e-3  # batched (left padded) = alone
    assert np.abs(lp - want).max() < 0.3


def test_generation_matches_between_runtimes(exported):
    """Prefill and the next decode step of openvino-int8 (KV cache in the request's state) track the fp32 onnx."""
    from edgemed.runtimes.onnx import OnnxRuntime
    from edgemed.runtimes.openvino import OpenVinoRuntime

    out, _ = exported
    prompt = "<|im_start|>user\nName a beta blocker.<|im_end|>\n<|im_start|>assistant\n"
    with OnnxRuntime(out / "onnx", threads=1) as rt:
        ids = rt.tokenize(prompt)
        a = rt.prefill(ids)
        a2 = rt.decode(int(np.argmax(a)))
    with OpenVinoRuntime(out / "openvino-int8", threads=1) as rt:
        b = rt.prefill(ids)
        b2 = rt.decode(int(np.argmax(a)))
    assert np.argmax(a) == np.argmax(b) and np.abs(a - b).max() < 0.5 and np.abs(a2 - b2).max() < 0.5


# --- bad files: exit 2, one line naming the file, before any work -------------------------------------------
def test_openvino_ir_without_its_bin_is_refused(exported, cli, tmp_path):
    out, _ = exported
    broken = tmp_path / "ov"
    shutil.copytree(out / "openvino-int4", broken)
    (broken / "openvino_model.bin").unlink()
    proc = cli("eval", broken, "--limit", "2", "--out", tmp_path / "e1")
    assert proc.returncode == 2 and "openvino_model.bin" in _one_error_line(proc)
    (broken / "edgemed.json").unlink()  # without a manifest the runtime's own check names it
    from edgemed.errors import EdgemedError
    from edgemed.runtimes.openvino import OpenVinoRuntime

    with pytest.raises(EdgemedError, match="openvino_model.bin is missing"):
        OpenVinoRuntime(broken)


def test_truncated_openvino_bin_and_xml_are_refused(exported, cli, tmp_path):
    from edgemed.errors import EdgemedError
    from edgemed.runtimes.openvino import OpenVinoRuntime

    out, _ = exported
    broken = tmp_path / "ov"
    shutil.copytree(out / "openvino-int8", broken)
    with open(broken / "openvino_model.bin", "r+b") as fh:
        fh.truncate(1000)
    proc = cli("eval", broken, "--limit", "2", "--out", tmp_path / "e1")
    assert proc.returncode == 2 and "openvino_model.bin" in _one_error_line(proc)
    with pytest.raises(EdgemedError, match="openvino_model.bin is truncated"):
        OpenVinoRuntime(broken)  # the runtime checks the .bin against the offsets in the .xml
    shutil.copy2(out / "openvino-int8" / "openvino_model.bin", broken / "openvino_model.bin")
    xml = broken / "openvino_model.xml"
    data = xml.read_bytes()
    xml.write_bytes(data[: len(data) // 2] + b"\0" * (len(data) - len(data) // 2))  # same size: the manifest passes
    proc = cli("eval", broken, "--limit", "2", "--out", tmp_path / "e2")
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = _one_error_line(proc)
    assert "openvino_model.xml" in line and "corrupt" in line


def test_onnx_int4_corrupt_external_data_is_refused(tiny_model, exported, cli, tmp_path):
    from edgemed.export.run import run_export

    out, _ = exported
    arts = tmp_path / "arts"
    shutil.copytree(out / "onnx", arts / "onnx")  # the sibling it builds on
    results = run_export(tiny_model, ["onnx", "onnx-int4"], arts, threads=2, show_progress=False,
                         settings={"onnx-int4": {"external_data": True}})
    assert [r["status"] for r in results] == ["skipped", "exported"], results
    art = arts / "onnx-int4"
    assert (art / "model.onnx.data").is_file()
    with open(art / "model.onnx.data", "r+b") as fh:
        fh.truncate(fh.seek(0, 2) // 2)
    proc = cli("eval", art, "--limit", "2", "--out", tmp_path / "e")
    assert proc.returncode == 2 and "model.onnx.data" in _one_error_line(proc)


def test_bad_settings_are_refused_before_work(tiny_model, tmp_path):
    from edgemed.errors import EdgemedError
    from edgemed.export.run import run_export

    for fmt, setting, word in (("onnx-int4", {"block_size": 24}, "block_size"), ("openvino-int4", {"mode": "int3"},
                                                                                 "mode")):
        out = tmp_path / fmt
        with pytest.raises(EdgemedError, match=word):
            run_export(tiny_model, ["onnx-int4", "openvino-int4"], out, verify=False, show_progress=False,
                       settings={fmt: setting})
        assert not out.exists() or not any(out.iterdir())  # refused before any work: nothing written


# --- data-aware compression: the training text, never an evaluation question -------------------------------
@pytest.fixture(scope="module")
def trained_tiny(tiny_model, tmp_path_factory):
    """The tiny model with a lineage as train/merge record it: the sample split into training and evaluation ids."""
    from edgemed.data import load_questions, split_questions
    from edgemed.lineage import Lineage, questions_sha256

    folder = tmp_path_factory.mktemp("trained") / "merged"
    shutil.copytree(tiny_model, folder)
    questions = load_questions("sample")[0]
    train, held = split_questions(questions, 0.25, 0)
    lineage = Lineage(prompt_style="chatml", style_source="train --prompt-style",
                      data={"source": "sample", "split": "train", "cop_base": "auto", "limit": None,
                            "questions": len(questions), "sha256": questions_sha256(questions)},
                      evaluation={"mode": "split", "source": "sample", "split": "train", "seed": 0, "fraction": 0.25},
                      train_ids=[q.id for q in train], eval_ids=[q.id for q in held])
    (folder / "edgemed-merge.json").write_text(json.dumps({"lineage": lineage.to_dict()}))
    return folder, lineage


def test_calibration_text_is_training_questions_with_answers(trained_tiny):
    from edgemed.export.openvino import training_texts
    from edgemed.prompts import get_style

    folder, lineage = trained_tiny
    texts, record = training_texts(folder, 16)
    assert len(texts) == record["questions"] == 16 and record["evaluation_questions"] == 0
    assert record["of_training_questions"] == len(lineage.train_ids)
    style = get_style("chatml")
    from edgemed.data import load_questions

    by_id = {q.id: q for q in load_questions("sample")[0]}
    allowed = {style.prompt(by_id[i]) + style.target(by_id[i]) for i in lineage.train_ids}
    forbidden = {style.prompt(by_id[i]) for i in lineage.eval_ids}
    assert set(texts) <= allowed
    assert not any(t.startswith(f) for t in texts for f in forbidden)


def test_awq_export_records_its_dataset_and_refuses_untrained_models(trained_tiny, tiny_model, tmp_path):
    from edgemed.export.run import run_export
    from edgemed.manifest import read_manifest

    folder, _ = trained_tiny
    results = run_export(folder, ["openvino-int4-awq"], tmp_path / "a", threads=2, show_progress=False,
                         settings={"openvino-int4-awq": {"calibration_questions": 8}})
    assert results[0]["status"] == "exported", results[0]["reason"]
    e = read_manifest(tmp_path / "a" / "openvino-int4-awq")["export"]
    assert e["awq"] is True and e["scale_estimation"] is True
    assert e["dataset"]["questions"] == 8 and e["dataset"]["evaluation_questions"] == 0 and e["calibration_tokens"] > 0
    refused = run_export(tiny_model, ["openvino-int4-awq"], tmp_path / "b", verify=False, show_progress=False)
    assert refused[0]["status"] == "failed" and refused[0]["exit_code"] == 2
    assert "training text" in refused[0]["reason"]


# --- bench -----------------------------------------------------------------------------------------------------
def test_bench_smoke_measures_the_new_formats(exported, cli, tmp_path):
    out, _ = exported
    arts = [out / n for n in ("hf", *NEW)]
    proc = cli("bench", *arts, "--limit", "3", "-r", "1", "-p", "16", "-n", "4", "--latency-prompts", "1",
               "--warmup", "0", "--threads", "2", "--out", tmp_path / "bench", timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "bench" / "bench.json").read_text())
    by = {a["name"]: a for a in doc["artifacts"]}
    for name in NEW:
        a = by[name]
        assert a["status"] == "ok", (name, a.get("error"))
        assert a["throughput"]["pp"]["avg_ts"] > 0 and a["throughput"]["tg"]["avg_ts"] > 0
        fid = a["fidelity"]
        assert fid["tokens"] > 10 and fid["kld_ci"][0] <= fid["kld_mean"] <= fid["kld_ci"][1]
        assert a["memory"]["peak_rss_bytes"] > 0 and a["bandwidth"]["weight_bytes"] > 0
    assert by["openvino-int4"]["runtime_info"]["runtime"] == "openvino"


# --- the real model --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_new_formats_verify_within_tolerance(smollm2_model, tmp_path):
    from edgemed.export.run import run_export

    results = run_export(smollm2_model, ["onnx", *NEW], tmp_path, threads=2, show_progress=False)
    for r in results:
        assert r["status"] == "exported", (r["format"], r["reason"])
        assert r["verification"]["max_abs_delta"] <= FORMATS[r["format"]].tolerance / 1.5  # headroom kept


# --- one-extra installs ----------------------------------------------------------------------------------------
_ONLY = textwrap.dedent(
    """
    import sys
    HIDDEN = set(sys.argv[1].split(","))

    class Hide:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Hide())
    from edgemed.cli.main import main
    code = main(sys.argv[2:])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in HIDDEN)
    print("LOADED", ",".join(loaded))
    sys.exit(code)
    """
)
_HEAVY = ["torch", "transformers", "peft", "accelerate", "safetensors", "bitsandbytes", "optimum", "nncf", "onnx",
          "onnx_ir", "llama_cpp", "pyarrow", "datasets", "matplotlib"]


def _only(hidden: list[str], *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _ONLY, ",".join(hidden), *map(str, args)], capture_output=True,
                          text=True, timeout=600)


def test_onnx_only_install_runs_onnx_int4_and_names_the_openvino_extra(exported, tmp_path):
    """`pip install 'edgemed[onnx]'`: onnx-int4 evaluates as onnx does; openvino artifacts exit 2 naming their extra."""
    out, _ = exported
    hidden = [*_HEAVY, "openvino"]
    info = _only(hidden, "info", "--out", tmp_path / "info")
    assert info.returncode == 0, info.stderr[-2000:]
    rows = {r["format"]: r for r in json.loads((tmp_path / "info" / "info.json").read_text())["formats"]}
    assert rows["onnx-int4"]["can_run"] and not rows["onnx-int4"]["can_export"]
    assert not rows["openvino-int8"]["can_run"] and "edgemed[openvino]" in rows["openvino-int8"]["missing_to_run"]
    ok = _only(hidden, "eval", out / "onnx-int4", "--limit", "2", "--threads", "1", "--out", tmp_path / "e")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.strip().splitlines()[-1] == "LOADED"  # nothing hidden got imported
    refused = _only(hidden, "eval", out / "openvino-int4", "--limit", "2")
    assert refused.returncode == 2 and "edgemed[openvino]" in _one_error_line(refused)


def test_openvino_only_install_evaluates_without_onnxruntime(exported, tmp_path):
    out, _ = exported
    hidden = [*_HEAVY, "onnxruntime"]
    ok = _only(hidden, "eval", out / "openvino-int4", "--limit", "2", "--threads", "1", "--out", tmp_path / "e")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.strip().splitlines()[-1] == "LOADED"  # nothing hidden got imported


def test_openvino_conversion_sends_no_telemetry_by_default(exported, tmp_path):
    """OpenVINO's converter and NNCF count a missing consent file as consent; edgemed's conversion turns both off
    for its own block (and puts the environment back), unless EDGEMED_OPENVINO_TELEMETRY=1. Run outside pytest,
    whose presence alone stubs NNCF's telemetry, with a HOME that has no consent file."""
    out, _ = exported
    code = textwrap.dedent(f"""
        import os
        from edgemed.export.openvino import telemetry_off
        with telemetry_off():
            import nncf, openvino as ov
            ov.convert_model({str(out / "onnx" / "model.onnx")!r})
        import openvino_telemetry as tm
        from nncf.telemetry import wrapper
        print(tm.Telemetry().consent, type(wrapper.telemetry).__name__, os.environ.get("CI"), os.environ.get("NNCF_CI"))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NNCF_CI", "EDGEMED_OPENVINO_TELEMETRY")}
    env["HOME"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    consent, nncf_telemetry, ci, nncf_ci = proc.stdout.split()
    assert consent == "False" and nncf_telemetry != "NNCFTelemetry" and (ci, nncf_ci) == ("None", "None")
    assert not (tmp_path / "intel").exists() or not any((tmp_path / "intel").rglob("*consent*"))
