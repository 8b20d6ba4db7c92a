"""edgemed tune: the grid, the pruning rules, and real searches on the tiny model (llama.cpp exports,
stage-1 KLD against the hf reference, the stage-2 bench), kept small: a space of three GGUF candidates, 12 questions.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgemed.errors import EdgemedError

SPACE = """
ladder = ["q4_0", "q5_0", "q8_0", "f16"]
[[gguf]]
types = ["q4_0", "q8_0"]
[[gguf]]
types = ["q4_0"]
overrides = [{ output = 2 }]
"""
FAST = ["--runtimes", "gguf", "--limit", "12", "-t", "1", "-p", "16", "-n", "4", "-r", "1", "--no-verify"]


def _cli(*args: object, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgemed.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and "Traceback" not in proc.stderr, proc.stderr
    return lines[-1]


# --- the grid -----------------------------------------------------------------------------------------------------
def test_bundled_grid_expands_every_family_without_hand_listing():
    from edgemed.bench.tune.space import expand, load_space

    cands = expand(load_space(None), ["gguf", "onnx", "openvino"])
    ids = [c.id for c in cands]
    assert len(ids) == len(set(ids)) >= 12
    assert "gguf-q4_0" in ids and "gguf-q4_0-imatrix" in ids  # plain and calibrated
    assert any(c.settings.get("tensor_types") for c in cands)  # per-tensor overrides
    assert any(c.settings.get("output_tensor_type") for c in cands)
    assert {c.settings.get("block_size") for c in cands if c.format == "onnx-int4"} >= {32, 128}
    ov = [c for c in cands if c.format == "openvino-int4"]
    assert {c.settings["ratio"] for c in ov} == {1.0, 0.8} and all("group_size" in c.settings for c in ov)
    assert all(c.runtime == "gguf" for c in expand(load_space(None), ["gguf"]))


def test_grid_levels_types_and_refusals(tmp_path):
    from edgemed.bench.tune.space import expand, load_space

    path = tmp_path / "s.toml"
    path.write_text('ladder = ["q4_0", "q4_1", "q5_0", "q8_0", "f16"]\n[[gguf]]\ntypes = ["q4_1", "q4_k_m", '
                    '"iq2_xxs", "q8_0"]\nimatrix = [false, true]\noverrides = [{}, { output = 1, attn_v = 2, '
                    'ffn_down = "q8_0" }]\nimatrix_chunks = 4\n')
    cands = {c.id: c for c in expand(load_space(path), ["gguf"])}
    c = cands["gguf-q4_1-imatrix+attn_v-q8_0+ffn_down-q8_0+output-q5_0+imatrix_chunks-4"]
    assert c.format == "gguf-q4_1-imatrix" and c.settings == {
        "imatrix_chunks": 4, "output_tensor_type": "q5_0", "tensor_types": ["attn_v=q8_0", "ffn_down=q8_0"]}
    assert cands["gguf-q4_k_m+imatrix_chunks-4"].settings == {"imatrix_chunks": 4}
    assert "refuses iq2_xxs without an importance matrix" in cands["gguf-iq2_xxs+imatrix_chunks-4"].skip
    assert cands["gguf-iq2_xxs-imatrix+imatrix_chunks-4"].skip is None
    assert "does not use an importance matrix" in cands["gguf-q8_0-imatrix+imatrix_chunks-4"].skip
    assert "off the ladder" in cands["gguf-q8_0+attn_v+2+ffn_down-q8_0+output-f16+imatrix_chunks-4"].skip
    assert cands["gguf-q8_0+imatrix_chunks-4"].skip is None
    assert len(cands) == 4 * 2 * 2


@pytest.mark.parametrize("text, why", [
    ("[[tflite]]\nformat = 'x'\n", "unknown table"),
    ("[[gguf]]\nimatrix = [true]\n", "give the llama.cpp types"),
    ("[[gguf]]\ntypes = []\n", "empty list"),
    ("[[gguf]]\ntypes = ['q4_0']\noverrides = [{ output = 1.5 }]\nladder = ['q4_0']\n", "number of ladder rungs"),
    ("ladder = ['q8_0', 'q4_0']\n[[gguf]]\ntypes = ['q4_0']\noverrides = [{ output = 1 }]\n", "fewest bits"),
    ("[[onnx]]\nblock_size = [32]\n", "give the format"),
    ("[[gguf\n", "not valid TOML"),
])
def test_bad_space_files_are_refused(tmp_path, text, why):
    from edgemed.bench.tune.space import check_available, expand, load_space

    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(EdgemedError, match=why):
        check_available(expand(load_space(path), ["gguf", "onnx"]))


def test_unknown_exporter_setting_is_refused():
    from edgemed.bench.tune.space import Candidate, check_available

    with pytest.raises(EdgemedError, match="unknown setting"):
        check_available([Candidate(id="x", format="onnx-int4", runtime="onnx", settings={"block": 32})])


# --- the rules ----------------------------------------------------------------------------------------------------
def _rec(name, size, lo, hi, runtime="gguf"):
    return {"id": name, "runtime": runtime, "size_bytes": size, "kld_mean": (lo + hi) / 2, "kld_ci": [lo, hi],
            "top1": 0.9, "top1_ci": [0.88, 0.92], "alive": True, "status": "measured", "sequences": 10,
            "tokens": 1000}


def test_interval_verdicts():
    from edgemed.bench.tune.rules import OUTSIDE, STRADDLES, WITHIN, lower_budget, upper_budget

    assert upper_budget((0.1, 0.2), 0.2) == WITHIN
    assert upper_budget((0.21, 0.3), 0.2) == OUTSIDE
    assert upper_budget((0.15, 0.25), 0.2) == STRADDLES
    assert lower_budget((0.9, 0.95), 0.9) == WITHIN
    assert lower_budget((0.8, 0.85), 0.9) == OUTSIDE
    assert lower_budget((0.85, 0.95), 0.9) == STRADDLES


def test_prune_outside_straddling_and_dominated():
    from edgemed.bench.tune.run import prune

    budgets = {"max_kld": 0.2}
    recs = [_rec("small-good", 80, 0.10, 0.12), _rec("big-worse", 90, 0.14, 0.16), _rec("outside", 70, 0.25, 0.3),
            _rec("straddles", 60, 0.18, 0.22), _rec("big-overlap", 95, 0.11, 0.13),
            _rec("onnx-worse", 85, 0.14, 0.16, runtime="onnx")]
    by = {r["id"]: r for r in recs}
    prune(recs, budgets, "memory", final=False)
    assert by["outside"]["status"] == "dropped" and "outside the budget: mean KLD" in by["outside"]["reason"]
    assert by["straddles"]["alive"] and by["straddles"]["pending"]  # measured further, not dropped
    assert "dominated by small-good" in by["big-worse"]["reason"]
    assert by["big-overlap"]["alive"]  # its interval overlaps small-good's: not dominance beyond noise
    assert by["onnx-worse"]["alive"]  # memory: another engine's size does not decide its memory
    prune(recs, budgets, "size", final=False)
    assert "dominated by small-good" in by["onnx-worse"]["reason"]  # size: any runtime
    prune(recs, budgets, "size", final=True)
    assert by["straddles"]["status"] == "dropped" and "not shown within" in by["straddles"]["reason"]
    assert [r["id"] for r in recs if r["alive"]] == ["small-good", "big-overlap"]


def test_prune_keeps_everything_for_latency_and_tg():
    from edgemed.bench.tune.run import prune

    recs = [_rec("a", 80, 0.10, 0.12), _rec("b", 90, 0.14, 0.16)]
    for objective in ("latency", "tg"):
        prune(recs, {}, objective, final=True)
        assert all(r["alive"] for r in recs)


def test_cluster_interval_widens_with_correlated_tokens():
    import numpy as np

    from edgemed.bench.tune.rules import cluster_interval

    values = np.repeat([0.0, 1.0] * 5, 20)  # ten sequences, each all 0 or all 1
    lo, hi = cluster_interval(values, np.repeat(np.arange(10), 20))
    naive = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert hi - lo > 4 * naive


def test_stage_two_stops_for_what_cannot_win():
    from edgemed.bench.tune.rules import cannot_beat

    assert cannot_beat(110e6, 100e6, "size") and not cannot_beat(101e6, 100e6, "size")  # 2% is a tie
    assert not cannot_beat(500e6, 100e6, "tg") and not cannot_beat(500e6, 100e6, "latency")


# --- real searches on the tiny model --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("space") / "space.toml"
    path.write_text(SPACE)
    return path


@pytest.fixture(scope="module")
def first(tiny_model, space, tmp_path_factory):
    """One tune of the three-candidate space with a budget every candidate meets; exit 0."""
    root = tmp_path_factory.mktemp("tune")
    cache = root / "cache"
    proc = _cli("tune", tiny_model, "--space", space, "--cache", cache, "--out", root / "a", "--max-kld", "1",
                "--fractions", "0.5,1", *FAST)
    return root, cache, proc


def _doc(out: Path) -> dict:
    return json.loads((out / "tune.json").read_text())


def test_budget_met_exits_0_with_the_chosen_artifact(first):
    root, _, proc = first
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = _doc(root / "a")
    by = {c["id"]: c for c in doc["candidates"]}
    assert set(by) == {"gguf-q4_0", "gguf-q8_0", "gguf-q4_0+output-q8_0"}
    assert doc["status"] == "complete" and doc["exit_code"] == 0 and doc["answer"]["met"]
    chosen = doc["choice"]
    best = root / "a" / "best" / chosen["format"]
    manifest = json.loads((best / "edgemed.json").read_text())
    assert manifest["format"] == chosen["format"] and not best.is_symlink()
    assert by[chosen["id"]]["status"] == "chosen" and by[chosen["id"]]["bench"]["fidelity"]["kld_ci"]
    for c in doc["candidates"]:  # every candidate is accounted for, with a reason
        assert c["status"] in ("chosen", "meets", "not-benched", "dropped", "duplicate", "breaks"), c
        assert c["reason"]
    assert (root / "a" / "tune.md").read_text().count("| gguf-") == 3
    assert (root / "a" / "pareto.png").stat().st_size > 10_000
    assert doc["pareto"]["stage1"]["front"]
    assert chosen["id"] in proc.stdout and "meets every budget" in doc["answer"]["text"]


def test_second_tune_with_other_budgets_reuses_the_cache(first, tiny_model, space):
    root, cache, _ = first
    doc_a = _doc(root / "a")
    kld = max(c["kld_ci"][1] for c in doc_a["candidates"] if c.get("kld_ci"))
    proc = _cli("tune", tiny_model, "--space", space, "--cache", cache, "--out", root / "b", "--max-kld", 0,
                "--fractions", "0.5,1", *FAST)
    assert proc.returncode == 1, proc.stderr[-3000:]  # nothing has a KLD interval at or below 0
    doc = _doc(root / "b")
    assert doc["exit_code"] == 1 and not doc["answer"]["met"] and doc["answer"]["nearest"]
    assert "No candidate" in doc["answer"]["text"] and "breaks" in doc["answer"]["text"]
    exported = [c for c in doc["candidates"] if c.get("key")]
    assert exported and all(c["cached"] for c in exported)  # the same files, not quantized again
    assert all(c["stage1"][0]["measured_now"] == 0 for c in doc["candidates"] if c["stage1"]) and kld > 0
    # the sequences measured before are read, not measured again
    assert not (root / "b" / "best").exists()


def test_a_damaged_cache_is_rebuilt_and_gives_the_same_answer(first, tiny_model, space):
    """A cut-short candidate and a base artifact without its manifest: both built again, the run says so, and the
    choice is the one the intact cache gave."""
    root, cache, _ = first
    doc_a = _doc(root / "a")
    by = {c["id"]: c for c in doc_a["candidates"]}
    gguf = next(Path(by["gguf-q4_0"]["path"]).glob("*.gguf"))
    with open(gguf, "r+b") as fh:
        fh.truncate(gguf.stat().st_size - 4096)
    base = next(cache.glob("base-*/gguf-f16"))
    (base / "edgemed.json").unlink()
    proc = _cli("tune", tiny_model, "--space", space, "--cache", cache, "--out", root / "d", "--max-kld", "1",
                "--fractions", "0.5,1", *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = _doc(root / "d")
    assert doc["choice"]["id"] == doc_a["choice"]["id"]
    assert set(doc["cache_rebuilt"]) == {str(gguf.parent), str(base)}
    assert "is corrupt" in doc["cache_rebuilt"][str(gguf.parent)]
    assert "damaged" in proc.stderr and "--force" not in proc.stdout + proc.stderr
    assert "built again" in doc["answer"]["text"]
    q4 = next(c for c in doc["candidates"] if c["id"] == "gguf-q4_0")
    assert not q4["cached"] and q4["rebuilt"] and q4["stage1"][0]["measured_now"] > 0


def test_straddling_interval_is_measured_further(first, tiny_model, space):
    root, cache, _ = first
    doc_a = _doc(root / "a")
    q4 = next(c for c in doc_a["candidates"] if c["id"] == "gguf-q4_0")
    budget = sum(q4["stage1"][0]["kld_ci"]) / 2  # inside the first pass's interval: it straddles
    proc = _cli("tune", tiny_model, "--space", space, "--cache", cache, "--out", root / "c", "--max-kld", budget,
                "--fractions", "0.5,1", *FAST)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    q4c = next(c for c in _doc(root / "c")["candidates"] if c["id"] == "gguf-q4_0")
    assert [m["fraction"] for m in q4c["stage1"]][-1] == 1.0 and len(q4c["stage1"]) == 2


def test_bad_input_exits_2_before_any_work(tiny_model, space, tmp_path):
    cases = [
        (["--max-kld", "-1"], "--max-kld must be a non-negative"),
        (["--min-top1-agreement", "2"], "between 0 and 1"),
        (["--max-size", "lots"], "--max-size"),
        (["--profile", "rpi9"], "unknown device profile"),
        (["--runtimes", "tflite"], "--runtimes: unknown runtime"),
        (["--space", tmp_path / "none.toml"], "does not exist"),
        (["--max-size", "0"], "--max-size 0: a budget must be more than 0"),
        (["--fractions", "0.5,0.25"], "increasing shares"),
    ]
    for extra, why in cases:
        out = tmp_path / "out"
        proc = _cli("tune", tiny_model, "--out", out, *extra)
        assert proc.returncode == 2 and why in _last_line(proc), (extra, proc.stderr)
        assert not out.exists()
    proc = _cli("tune", tmp_path / "missing", "--out", tmp_path / "out")
    assert proc.returncode == 2 and "not a folder" in _last_line(proc)
    proc = _cli("tune", tiny_model, "--out", tiny_model / "tune")
    assert proc.returncode == 2 and "inside it" in _last_line(proc)
    bad = tmp_path / "bad.toml"
    bad.write_text("[[gguf]]\ntypes = ['q4_0']\nimatrix = 'yes'\n")
    proc = _cli("tune", tiny_model, "--space", bad, "--out", tmp_path / "out")
    assert proc.returncode == 2 and "imatrix takes true/false" in _last_line(proc)


@pytest.mark.slow  # over ~20 s on 2 cores
def test_resume_after_an_interrupt(tiny_model, tmp_path):
    out = tmp_path / "r"
    one = tmp_path / "one.toml"
    one.write_text("[[gguf]]\ntypes = ['q4_0']\n")
    cmd = [sys.executable, "-m", "edgemed.cli.main", "tune", str(tiny_model), "--space", str(one), "--cache",
           str(tmp_path / "cache"), "--out", str(out), "--max-kld", "1", *FAST]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:  # stop it once one candidate is finished
        try:
            if any(c["stage1"] for c in _doc(out)["candidates"]):
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "--resume" in err
    doc = _doc(out)
    assert doc["status"] == "interrupted"
    done = {c["id"] for c in doc["candidates"] if c["stage1"]}
    assert done
    again = _cli(*cmd[3:])
    assert again.returncode == 2 and "pass --resume" in _last_line(again)
    resumed = _cli(*cmd[3:], "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    doc = _doc(out)
    assert doc["status"] == "complete" and doc["resumed"]
    for c in doc["candidates"]:
        if c["id"] in done:  # finished before the interrupt: its export and its first pass are kept
            assert c["cached"] and c["stage1"][0]["measured_now"] == 0


def test_pipeline_tune_is_checked_before_training(tmp_path):
    proc = _cli("pipeline", "--model", "tiny-random", "--out", tmp_path / "p", "--tune", "max-kld=oops")
    assert proc.returncode == 2 and "--tune max-kld=oops" in _last_line(proc)
    proc = _cli("pipeline", "--model", "tiny-random", "--out", tmp_path / "p", "--tune", "objective=size",
                "--formats", "gguf-q8_0")
    assert proc.returncode == 2 and "drop --formats" in _last_line(proc)
    assert not (tmp_path / "p" / "train").exists()
