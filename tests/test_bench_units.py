"""Pure parts of the bench: statistics, units, Pareto front, recommendation, profiles, JUnit, process isolation."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from edgemed.bench.compare_runs import pair, regressions
from edgemed.bench.isolate import run_child
from edgemed.bench.junit import to_junit
from edgemed.bench.plot import pareto_front
from edgemed.bench.profiles import estimate, get_profile, load_profiles
from edgemed.bench.recommend import recommend
from edgemed.bench.results import Accuracy, ArtifactResult, Bandwidth, Failure, Latency, Memory, Throughput
from edgemed.bench.stats import percentile, stdev, summarize
from edgemed.bench.units import parse_ms, parse_ratio, parse_size
from edgemed.errors import EdgemedError


def make(name: str, fmt: str = "hf", acc: float = 0.5, p95: float = 100.0, rss_mb: float = 500.0,
         tps: float = 20.0, weights: int = 10**8, ok: bool = True) -> ArtifactResult:
    """A result record as a worker would produce it (the data the functions under test consume)."""
    r = ArtifactResult(name=name, path=f"/x/{name}", format=fmt, runtime="transformers")
    if not ok:
        r.status, r.failure = "failed", Failure("crash", "crashed: killed by SIGSEGV", None, "SIGSEGV")
        return r
    r.accuracy = Accuracy(accuracy=acc, n=100, ci_low=acc - 0.1, ci_high=acc + 0.1)
    r.latency = Latency.from_samples({"answer_ms": [p95 * 0.5] * 19 + [p95 * 1.2], "ttft_ms": [p95 / 2],
                                      "tpot_ms": [10.0], "generate_ms": [300.0]})
    r.latency.answer_ms["p95"] = p95
    r.throughput = Throughput.from_samples({"decode_tokens_per_s": [tps], "prefill_tokens_per_s": [500.0]}, 80, 16)
    r.memory = Memory(peak_rss_sampled_bytes=int(rss_mb * 1e6), peak_rss_os_bytes=int(rss_mb * 1e6))
    r.bandwidth = Bandwidth(weight_bytes=weights, effective_gbps=weights * tps / 1e9, machine_copy_gbps=20.0,
                            fraction_of_copy=weights * tps / 1e9 / 20.0)
    return r


# --- statistics ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("q", [0, 10, 50, 90, 95, 100])
def test_percentile_matches_numpy_linear(q):
    xs = [5.0, 1.0, 9.5, 3.25, 7.0, 2.0, 8.0]
    assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def test_summary_and_stdev():
    s = summarize([1.0, 2.0, 3.0, 4.0, None], scale=1000)
    assert s["count"] == 4 and s["median"] == 2500 and s["min"] == 1000 and s["max"] == 4000
    assert s["stdev"] == pytest.approx(float(np.std([1000, 2000, 3000, 4000], ddof=1)))
    assert summarize([])["median"] is None and stdev([3.0]) == 0.0 and percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


# --- units -----------------------------------------------------------------------------------------------
def test_units():
    assert parse_size("4GB") == 4 * 10**9 and parse_size("3.5GiB") == int(3.5 * 2**30)
    assert parse_size("800 MB") == 800 * 10**6 and parse_size(1024) == 1024
    assert parse_ms("800ms") == 800 and parse_ms("1.5s") == 1500 and parse_ms("250") == 250
    assert parse_ratio("10%") == pytest.approx(0.1) and parse_ratio("0.25") == 0.25
    for bad, fn in (("4 gigs", parse_size), ("fast", parse_ms), ("ten", parse_ratio), ("-5%", parse_ratio)):
        with pytest.raises(EdgemedError):
            fn(bad)


# --- Pareto front and recommendation ---------------------------------------------------------------------------
def test_pareto_front():
    pts = [("a", 100, 0.5), ("b", 50, 0.4), ("c", 120, 0.45), ("d", 50, 0.4), ("e", 200, 0.6)]
    assert set(pareto_front(pts)) == {"a", "b", "d", "e"}  # c is slower and less accurate than a


def test_recommend_most_accurate_that_fits_and_why_not_the_others():
    results = [
        make("big", acc=0.60, p95=900, rss_mb=5000),
        make("fast", acc=0.40, p95=100, rss_mb=400),
        make("good", acc=0.55, p95=500, rss_mb=1500),
        make("broken", ok=False),
    ]
    rec = recommend(results, max_memory_bytes=parse_size("4GB"), max_p95_ms=800)
    assert rec["choice"] == "good"
    assert "peak memory" in rec["rejected"]["big"][0] and "p95 latency" in rec["rejected"]["big"][1]
    assert "less accurate" in rec["rejected"]["fast"][0]
    assert "failed to run" in rec["rejected"]["broken"][0]
    assert rec["ranked"] == ["good", "fast"]
    # without constraints the most accurate one wins; with impossible ones nothing does
    assert recommend(results)["choice"] == "big"
    assert recommend(results, max_memory_bytes=10**6)["choice"] is None


def test_recommend_breaks_accuracy_ties_by_agreement_with_the_reference():
    faithful, drifting = make("faithful", acc=0.5, p95=300), make("drifting", acc=0.5, p95=100)
    faithful.accuracy.agreement, drifting.accuracy.agreement = 0.95, 0.50
    rec = recommend([drifting, faithful])
    assert rec["ranked"] == ["faithful", "drifting"]
    assert "agreement 0.500" in rec["rejected"]["drifting"][0]


# --- profiles ---------------------------------------------------------------------------------------------------
def test_profiles_fit_and_estimate():
    profiles = load_profiles()
    assert {"rpi4-4gb", "rpi5-8gb", "jetson-orin-nano-8gb"} <= set(profiles)
    assert get_profile("rpi5").name == "rpi5-8gb"
    with pytest.raises(EdgemedError, match="did you mean"):
        get_profile("rpi55")
    rpi4 = get_profile("rpi4-4gb")
    small, huge = make("small", rss_mb=500, tps=40, weights=2 * 10**8), make("huge", rss_mb=6000)
    rows = {r["artifact"]: r for r in estimate(rpi4, [small, huge])["artifacts"]}
    assert rows["small"]["fits_memory"] is True and rows["huge"]["fits_memory"] is False
    bound = rpi4.bandwidth_gbps * 1e9 / 2e8
    assert rows["small"]["est_max_decode_tokens_per_s"] == pytest.approx(bound)
    frac = small.bandwidth.fraction_of_copy
    assert rows["small"]["est_decode_tokens_per_s"] == pytest.approx(bound * frac)


# --- baseline regressions --------------------------------------------------------------------------------------
def test_regressions_against_a_baseline():
    before = [make("hf", p95=100, tps=20), make("q8", fmt="gguf-q8_0", p95=50, tps=50)]
    after = [make("hf", p95=130, tps=20), make("q8-renamed", fmt="gguf-q8_0", p95=52, tps=49)]
    assert [(b.name, a.name) for b, a in pair(before, after)] == [("hf", "hf"), ("q8", "q8-renamed")]
    checks = regressions(before, after, 0.10, "baseline prev.json")
    broken = [(c.artifact, c.key) for c in checks if not c.passed]
    assert broken == [("hf", "baseline:answer_p95_ms"), ("hf", "baseline:ttft_ms")]
    assert all(c.passed for c in regressions(before, after, 0.5, "x"))


# --- JUnit --------------------------------------------------------------------------------------------------------
def test_junit_one_case_per_artifact_and_budget():
    results = [make("hf"), make("bad", ok=False)]
    checks = [{"artifact": "hf", "key": "max_p95_latency_ms", "passed": False, "message": "p95 too slow",
               "limit": 10, "measured": 100, "source": "b.toml:2"},
              {"artifact": "hf", "key": "min_accuracy", "passed": True, "message": "ok", "limit": 0.1,
               "measured": 0.5, "source": "b.toml:3"}]
    root = ET.fromstring(to_junit(results, checks))
    suite = root.find("testsuite")
    assert suite.get("tests") == "4" and suite.get("failures") == "2"
    failed = {(c.get("classname"), c.get("name")) for c in suite.iter("testcase") if c.find("failure") is not None}
    assert failed == {("edgemed-bench.hf", "max_p95_latency_ms"), ("edgemed-bench.bad", "runs")}


# --- process isolation (real child processes) ---------------------------------------------------------------
def test_child_segfault_is_reported_not_raised(tmp_path):
    out = run_child([sys.executable, "-c", "import ctypes; ctypes.string_at(0)"], tmp_path / "segv.log")
    assert not out.ok and out.signal_name == "SIGSEGV" and "SIGSEGV" in out.describe()


def test_child_timeout_kills_the_whole_group(tmp_path):
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); " \
           "print('started', flush=True); time.sleep(60)"
    out = run_child([sys.executable, "-c", code], tmp_path / "hang.log", timeout_s=2)
    assert out.timed_out and not out.ok and "timed out" in out.describe()
    assert out.wall_s < 30


def test_child_exit_code_and_peak_memory(tmp_path):
    # this (parent) process holds 700 MB; Linux would carry that high-water mark into a directly spawned child
    ballast = bytearray(700 * 10**6)
    ballast[::4096] = b"x" * len(ballast[::4096])
    # the child holds ~300 MB resident for a moment, then exits 5
    code = ("import time; b = bytearray(300 * 10**6); b[::4096] = b'x' * len(b[::4096]); time.sleep(0.5); "
            "raise SystemExit(5)")
    out = run_child([sys.executable, "-c", code], tmp_path / "mem.log")
    assert out.exit_code == 5 and out.signal is None and not out.ok
    assert out.peak_rss_sampled >= 300e6 and out.ru_maxrss >= 300e6
    # the launcher keeps the parent's own footprint out of the child's accounting
    assert out.ru_maxrss < 600e6 and out.peak_rss_sampled < 600e6
    del ballast
