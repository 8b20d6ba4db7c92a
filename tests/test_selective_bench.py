"""Selective prediction in bench: rows carry the threshold and the artifact's sha256 that serve matches them by;
the recommendation's minimum-coverage constraint is decided on the coverage's interval; bench.html draws the
risk-coverage curves; serve takes its threshold from a bench.json only for the same bytes and evaluation side."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from edgemed.errors import EdgemedError
from edgemed.evaluator.selective import bench_numbers, calibrate, coverage_shortfall


def _predictions(rng, n: int, informative: bool) -> list[dict]:
    """Letter predictions whose confidence means what it says (informative) or nothing (a model near chance)."""
    conf = 0.25 + 0.75 * rng.beta(4.0, 1.0, n)  # mostly confident, as a fine-tuned model is
    right = rng.uniform(size=n) < (conf if informative else 0.3)
    return [{"probs": {"A": float(c)}, "confidence": float(c), "correct": bool(k)} for c, k in zip(conf, right,
                                                                                                  strict=True)]


def test_coverage_shortfall_is_decided_on_the_interval():
    rng = np.random.default_rng(4)
    numbers = bench_numbers(_predictions(rng, 2000, True), target_error=0.1)
    share, n = numbers["answered_share"], numbers["calibration_questions"]
    assert numbers["abstain_threshold"] is not None and 0.05 < share < 0.95 and n == 2000
    from edgemed.evaluator.metrics import wilson_interval

    lo, hi = wilson_interval(round(share * n), n)
    assert coverage_shortfall(numbers, lo - 0.01) is None  # shown: the interval lies above the minimum
    short = coverage_shortfall(numbers, hi + 0.01)
    assert short is not None and "< minimum" in short and "error <= 0.1" in short
    noise = coverage_shortfall(numbers, share)  # the minimum inside the interval: not established
    assert noise is not None and "not established" in noise
    chance = bench_numbers(_predictions(rng, 300, False), target_error=0.1)
    assert chance["abstain_threshold"] is None and "no threshold is certified" in coverage_shortfall(chance, 0.1)
    assert calibrate([p["confidence"] for p in _predictions(rng, 10, True)], [True] * 10, coverage=0.5)["rule"] \
        == "coverage"


def test_recommendation_takes_a_minimum_coverage_at_the_target_error():
    from edgemed.bench.recommend import Constraints, recommend
    from tests.test_bench_units import make

    rng = np.random.default_rng(5)
    ref = make("hf", acc=0.5, rss_mb=1200, kld=0.0)
    sharp = make("q8", acc=0.5, rss_mb=300, kld=0.01, mcnemar_p=1.0)
    blunt = make("q4", acc=0.5, rss_mb=250, kld=0.05, mcnemar_p=1.0)  # less memory: the choice without the constraint
    ref.extra = bench_numbers(_predictions(rng, 1500, True))
    sharp.extra = bench_numbers(_predictions(rng, 1500, True))
    blunt.extra = bench_numbers(_predictions(rng, 1500, False))
    assert recommend([ref, sharp, blunt], ref, Constraints())["choice"] == "q4"
    rec = recommend([ref, sharp, blunt], ref, Constraints(min_coverage=0.2))
    assert rec["choice"] == "q8", rec
    assert "no threshold is certified at error <= 0.1" in rec["rejected"]["q4"][0]
    assert "answers" in rec["why"] and "(minimum 0.2)" in rec["why"]
    rec = recommend([ref, sharp, blunt], ref, Constraints(min_coverage=0.99))
    assert rec["choice"] is None and "< minimum 0.99" in rec["rejected"]["q8"][0]


def test_bench_selective_flags_are_checked_before_work():
    from edgemed.bench.config import BenchConfig

    for kwargs, words in (({"target_error": 1.0}, "--target-error"), ({"target_coverage": 0.0}, "--target-coverage"),
                          ({"recommend_min_coverage": 1.5}, "--recommend-min-coverage"),
                          ({"target_error": 0.1, "target_coverage": 0.5}, "give one"),
                          ({"recommend_min_coverage": 0.5, "target_coverage": 0.5}, "--target-coverage")):
        with pytest.raises(EdgemedError, match=words):
            BenchConfig(**kwargs).validate()
    assert "target_error" in BenchConfig().measured and "recommend_min_coverage" not in BenchConfig().measured


def test_calibration_must_come_from_the_lineage_evaluation_side(tmp_path):
    from edgemed.serve.abstain import Calibration, match_calibrations
    from edgemed.serve.identity import ArtifactSpec

    lineage = {"prompt_style": "chatml", "style_source": "test", "train_ids": ["q1", "q2"], "eval_ids": ["q3"],
               "evaluation": {"mode": "split", "source": "sample", "seed": 0, "fraction": 0.2}}
    spec = ArtifactSpec(id="m", path=tmp_path, sha256="ab" * 32, lineage=lineage)
    block = {"threshold": 0.6, "rule": "coverage", "coverage_asked": 0.5}

    def cal(selection: str | None, sha: str = "ab" * 32) -> Calibration:
        return Calibration(sha, block, {"source": "sample", "split": "validation", "selection": selection}, "chatml",
                           tmp_path / "bench.json", "bench.json", "m")

    assert match_calibrations([spec], [cal("recorded evaluation side: the held-out side")])["m"].block is block
    with pytest.raises(EdgemedError, match="records its evaluation side as the held-out side"):
        match_calibrations([spec], [cal(None)])
    with pytest.raises(EdgemedError, match=f"sha256 {'cd' * 6}.*sha256 {'ab' * 6}"):
        match_calibrations([spec], [cal("recorded evaluation side", "cd" * 32)])
    untrained = ArtifactSpec(id="m", path=tmp_path, sha256="ab" * 32, lineage={**lineage, "train_ids": None})
    assert match_calibrations([untrained], [cal(None)])["m"].name == "m"  # nothing to hold out: any side


@pytest.fixture(scope="module")
def gguf(request) -> Path:
    pytest.importorskip("httpx", reason="the serve extra is not installed (pip install edgemed[serve])")
    from tests.test_serve import tiny_gguf

    return tiny_gguf(request)


@pytest.mark.slow  # a bench run and a server: about a minute on a busy 2-core box
def test_bench_writes_the_threshold_and_sha256_and_serve_reads_them(gguf, tmp_path, cli):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    out = tmp_path / "bench"
    proc = cli("bench", gguf, "--data", "sample", "--limit", "40", "-r", "1", "-p", "8", "-n", "4",
               "--latency-prompts", "1", "--no-fidelity", "--target-coverage", "0.5", "--inconclusive", "pass",
               "--retries", "0", "--out", out, timeout=600)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "bench.json").read_text())
    row = doc["artifacts"][0]
    extra = row["extra"]
    assert extra["artifact_sha256"] == hashlib.sha256(next(gguf.glob("*.gguf")).read_bytes()).hexdigest()
    assert extra["abstain_rule"] == "coverage" and extra["abstain_threshold"] is not None
    assert extra["answered_share"] == pytest.approx(0.5, abs=0.03) and len(extra["risk_coverage"]) >= 10
    html = (out / "bench.html").read_text()
    assert "Risk-coverage" in html and "<polyline" in html
    from tests.test_serve import KEY, Server

    s = Server(f"a={gguf}", "--calibration", out / "bench.json", "--api-key", KEY, "--threads", "1")
    try:
        meta = s.get("/v1/models").json()["data"][0]["edgemed"]["mcq_threshold"]
        assert meta["from"] == "bench.json" and meta["threshold"] == pytest.approx(extra["abstain_threshold"])
        assert meta["bench_row"] == row["name"] and meta["rule"] == "coverage"
        r = s.post("/v1/mcq", {"model": "a", "question": "Which vitamin deficiency causes scurvy?",
                               "options": ["Vitamin A", "Vitamin B12", "Vitamin C", "Vitamin D"]}).json()
        assert "bench.json" in r["threshold_source"] and r["abstained"] == (r["probability"] < meta["threshold"])
    finally:
        assert s.stop() == 0
    assert any("/v1/mcq threshold" in line and "bench.json" in line for line in s.stderr)
    other = tmp_path / "other.json"
    for change, words in ((lambda d: d["artifacts"][0]["extra"].update(artifact_sha256="0" * 64),
                           f"sha256 000000000000.*{extra['artifact_sha256'][:12]}"),
                          (lambda d: d["settings"]["question_selection"].update(trained_questions_included={"a": 2}),
                           "trained on"),
                          (lambda d: d["artifacts"][0]["extra"].pop("artifact_sha256"), "older edgemed")):
        changed = json.loads((out / "bench.json").read_text())
        change(changed)
        other.write_text(json.dumps(changed))
        proc = cli("serve", f"a={gguf}", "--calibration", other, "--port", "0", timeout=60)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        import re

        assert re.search(words, proc.stderr), proc.stderr
