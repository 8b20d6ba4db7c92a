"""The abstention threshold: its bound holds out of sample (simulated and on real MedMCQA), eval writes it, serve
reads it by the artifact's sha256, and the shipped non-medical questions are measured against it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgemed.evaluator.selective import calibrate, clopper_pearson_upper, evaluate_threshold, risk_coverage


def test_clopper_pearson_upper_matches_closed_forms():
    assert clopper_pearson_upper(0, 10, 0.05) == pytest.approx(1 - 0.05 ** (1 / 10), abs=1e-9)  # k = 0
    assert clopper_pearson_upper(10, 10, 0.05) == 1.0
    # P(Bin(20, u) <= 3) = 0.05 at the bound
    u = clopper_pearson_upper(3, 20, 0.05)
    from math import comb

    assert sum(comb(20, i) * u**i * (1 - u) ** (20 - i) for i in range(4)) == pytest.approx(0.05, abs=1e-7)


def test_risk_coverage_and_aurc_by_hand():
    rc = risk_coverage([0.9, 0.8, 0.7, 0.6], [True, False, True, False])
    # risks at k = 1..4: 0, 1/2, 1/3, 2/4 -> mean
    assert rc["aurc"] == pytest.approx((0 + 0.5 + 1 / 3 + 0.5) / 4)
    assert rc["aurc_optimal"] == pytest.approx((0 + 0 + 1 / 3 + 0.5) / 4)


@pytest.fixture(scope="module")
def gguf(request) -> Path:
    """The tiny model's gguf-q8_0 (tests.test_serve.tiny_gguf: the shared export, or one made once)."""
    pytest.importorskip("httpx", reason="the serve extra is not installed (pip install edgemed[serve])")
    from tests.test_serve import tiny_gguf

    return tiny_gguf(request)


def _calibrated_model(rng, n):
    """Confidences that mean what they say: a question answered with probability p is right with probability p."""
    conf = rng.uniform(0.25, 1.0, n)
    return conf, rng.uniform(size=n) < conf


def test_target_error_holds_out_of_sample_in_repeated_draws():
    rng = np.random.default_rng(0)
    target, trials, violations, answered = 0.10, 100, 0, []
    for _ in range(trials):
        conf, ok = _calibrated_model(rng, 2000)
        t = calibrate(conf, ok, target_error=target)["threshold"]
        held_conf, held_ok = _calibrated_model(rng, 20_000)  # a large fresh draw: its error is the true one
        out = evaluate_threshold(held_conf, held_ok, t)
        answered.append(out["coverage"])
        if out["answered"] and out["selective_error"] > target:
            violations += 1
    assert violations / trials <= 0.05 + 0.05  # delta = 0.05, with room for the trials' own noise
    assert np.mean(answered) > 0.05  # and it does answer: the bound is not met by abstaining on everything


def test_coverage_rule_and_no_certified_threshold():
    rng = np.random.default_rng(1)
    conf, ok = _calibrated_model(rng, 400)
    c = calibrate(conf, ok, coverage=0.5)
    assert c["rule"] == "coverage" and c["calibration"]["coverage"] == pytest.approx(0.5, abs=0.01)
    chance = calibrate(rng.uniform(0.25, 0.3, 400), rng.uniform(size=400) < 0.25, target_error=0.1)
    assert chance["threshold"] is None and chance["calibration"]["answered"] == 0


def test_out_of_sample_on_real_medmcqa(medmcqa, gguf):
    """Calibrate on one half of the real validation questions, check the other half: the error among answered
    questions stays within the target (its Wilson interval reaches it); a model near chance abstains."""
    from edgemed.data import load_questions
    from edgemed.evaluator.metrics import wilson_interval
    from edgemed.evaluator.run import evaluate
    from edgemed.runtimes.base import open_runtime

    questions, _ = load_questions(str(medmcqa), "validation")
    with open_runtime(gguf, threads=1) as rt:
        preds = evaluate(rt, questions, show_progress=False).predictions
    conf = np.array([p["confidence"] for p in preds])
    ok = np.array([p["correct"] for p in preds])
    half = len(preds) // 2
    t = calibrate(conf[:half], ok[:half], target_error=0.2)["threshold"]
    held = evaluate_threshold(conf[half:], ok[half:], t)
    if held["answered"]:
        lo, _ = wilson_interval(held["errors"], held["answered"])
        assert lo <= 0.2
    else:
        assert t is None  # near chance: nothing certified, every question abstained on


def test_eval_writes_the_threshold_and_serve_reads_it(gguf, tmp_path, cli):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    art = gguf
    out = tmp_path / "eval"
    proc = cli("eval", art, "--data", "sample", "--target-coverage", "0.5", "--out", out, "--no-progress",
               "--threads", "1", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "abstention threshold (coverage 0.5): answer when p >=" in proc.stdout
    block = json.loads((out / "results.json").read_text())["selective"]
    assert block["rule"] == "coverage" and block["threshold"] is not None and block["aurc"] is not None
    import hashlib

    assert block["artifact_sha256"] == hashlib.sha256(next(art.glob("*.gguf")).read_bytes()).hexdigest()
    from tests.test_serve import KEY, Server

    s = Server(f"a={art}", "--calibration", out / "results.json", "--api-key", KEY, "--threads", "1")
    try:
        from edgemed.data import load_questions
        from edgemed.serve.abstain import NON_MEDICAL

        questions, _ = load_questions(str(NON_MEDICAL))
        assert len(questions) >= 30
        abstained = 0
        for q in questions:
            r = s.post("/v1/mcq", {"model": "a", "question": q.question, "options": list(q.options)}).json()
            assert r["threshold"] == pytest.approx(block["threshold"]) and "results.json" in r["threshold_source"]
            assert r["abstained"] == (r["probability"] < block["threshold"])
            abstained += r["abstained"]
        print(f"non-medical questions abstained on: {abstained}/{len(questions)}")
    finally:
        assert s.stop() == 0
    other = tmp_path / "other.json"
    doc = json.loads((out / "results.json").read_text())
    doc["selective"]["artifact_sha256"] = "0" * 64
    other.write_text(json.dumps(doc))
    proc = cli("serve", art, "--calibration", other, "--port", "0", timeout=60)
    assert proc.returncode == 2 and "calibrated on an artifact" in proc.stderr
    doc = json.loads((out / "results.json").read_text())
    doc["selective"]["calibrated_on"]["trained_questions_included"] = {"a": 3}
    other.write_text(json.dumps(doc))
    proc = cli("serve", art, "--calibration", other, "--port", "0", timeout=60)
    assert proc.returncode == 2 and "trained on" in proc.stderr
    doc = json.loads((out / "results.json").read_text())
    assert doc["selective"]["prompt_style"] == doc["prompt_style"]
    doc["selective"]["prompt_style"] = "plain"  # as if eval had been given another --prompt-style
    other.write_text(json.dumps(doc))
    proc = cli("serve", art, "--calibration", other, "--port", "0", "--threads", "1", timeout=120)
    assert proc.returncode == 2 and "prompt style" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_numbers_are_the_selective_block_flattened():
    from edgemed.evaluator.selective import bench_numbers

    rng = np.random.default_rng(2)
    conf, ok = _calibrated_model(rng, 3000)
    preds = [{"probs": {"A": c}, "confidence": float(c), "correct": bool(k)} for c, k in zip(conf, ok, strict=True)]
    numbers = bench_numbers(preds)
    block = calibrate(conf, ok, target_error=0.1)
    assert numbers["abstain_threshold"] == block["threshold"] is not None
    assert numbers["answered_share"] == block["calibration"]["coverage"]
    assert numbers["answered_error_low"] <= numbers["answered_error"] <= numbers["answered_error_high"]
    assert numbers["aurc"] == pytest.approx(risk_coverage(conf, ok)["aurc"]) and bench_numbers([]) == {}
