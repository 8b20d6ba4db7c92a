"""Pure parts of the bench: statistics, units, Pareto front, recommendation, profiles, JUnit, process isolation,
the worker's typed result and how a metric is added."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np
import pytest

from edgemed.bench.measure.stats import percentile, stdev, summarize
from edgemed.bench.profiles import estimate, get_profile, load_profiles
from edgemed.bench.recommend import Constraints, recommend
from edgemed.bench.render.junit import to_junit
from edgemed.bench.render.plot import pareto_front
from edgemed.bench.report.compare import pair, regressions
from edgemed.bench.results import Accuracy, ArtifactResult, Bandwidth, Failure, Latency, Memory, Throughput
from edgemed.bench.units import parse_ms, parse_ratio, parse_size
from edgemed.errors import EdgemedError
from edgemed.process.isolate import measure_child


def make(name: str, fmt: str = "hf", acc: float = 0.5, p95: float = 100.0, rss_mb: float = 500.0,
         tps: float = 20.0, weights: int = 10**8, ok: bool = True, kld: float | None = None,
         mcnemar_p: float | None = None, size_mb: float = 100.0) -> ArtifactResult:
    """A result record as a worker would produce it (the data the functions under test consume)."""
    r = ArtifactResult(name=name, path=f"/x/{name}", format=fmt, runtime="transformers")
    if not ok:
        r.status, r.failure = "failed", Failure("crash", "crashed: killed by SIGSEGV", None, "SIGSEGV")
        return r
    r.accuracy = Accuracy(accuracy=acc, n=100, ci_low=acc - 0.1, ci_high=acc + 0.1, mcnemar_p=mcnemar_p,
                          accuracy_diff=None if mcnemar_p is None else acc - 0.5)
    r.latency = Latency.from_raw({"samples": {"answer_ms": [p95 * 0.5 + i * 0.01 for i in range(19)] + [p95 * 1.2],
                                              "ttft_ms": [p95 / 2], "generate_ms": [300.0]}})
    r.latency.answer_ms["p95"] = p95
    r.latency.answer_ms["median"] = p95 * 0.5
    r.throughput = Throughput(pp={"avg_ts": 500.0, "stddev_ts": 5.0}, tg={"avg_ts": tps, "stddev_ts": 0.5})
    r.size_bytes = int(size_mb * 1e6)
    if kld is not None:
        r.fidelity = {"kld_mean": kld, "kld_ci": [kld * 0.9, kld * 1.1], "top1_agreement": 0.9}
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
def test_pareto_front_over_three_objectives():
    # (quality, latency, memory), all minimised: c is worse than a on everything; d equals b; e wins on quality only
    pts = [("a", (0.1, 100, 500)), ("b", (0.2, 50, 400)), ("c", (0.2, 120, 600)), ("d", (0.2, 50, 400)),
           ("e", (0.01, 200, 900)), ("f", (0.3, 300, 100))]
    assert set(pareto_front(pts)) == {"a", "b", "d", "e", "f"}  # f is slow and coarse but the smallest: kept


def test_recommend_least_memory_among_not_significantly_worse():
    ref = make("hf", acc=0.5, rss_mb=1200, kld=0.0)
    results = [
        ref,
        make("q4", acc=0.44, rss_mb=250, kld=0.08, mcnemar_p=0.30),  # lower accuracy, but not significantly
        make("q8", acc=0.52, rss_mb=300, kld=0.01, mcnemar_p=0.70),
        make("nf4", acc=0.30, rss_mb=200, kld=0.30, mcnemar_p=0.001),  # significantly worse: out
        make("broken", ok=False),
    ]
    rec = recommend(results, ref, Constraints())
    assert rec["choice"] == "q4"
    nf4 = rec["rejected"]["nf4"][0]
    assert "significantly less accurate than hf" in nf4 and "p = 0.001" in nf4
    assert "failed to run" in rec["rejected"]["broken"][0]
    assert "peak memory 250.0 MB vs 300.0 MB" in rec["rejected"]["q8"][0]  # names the deciding number
    assert rec["ranked"] == ["q4", "q8", "hf"]


def test_recommend_kld_limit_and_other_constraints():
    ref = make("hf", acc=0.5, rss_mb=1200, kld=0.0, p95=300)
    q4 = make("q4", acc=0.5, rss_mb=250, kld=0.08, mcnemar_p=1.0, p95=200)
    q8 = make("q8", acc=0.5, rss_mb=300, kld=0.01, mcnemar_p=1.0, p95=150)
    rec = recommend([ref, q4, q8], ref, Constraints(max_kld=0.05))
    assert rec["choice"] == "q8" and "mean KL divergence 0.0800 > limit 0.05" in rec["rejected"]["q4"][0]
    rec = recommend([ref, q4, q8], ref, Constraints(max_memory_bytes=parse_size("280MB")))
    assert rec["choice"] == "q4" and "peak memory 300.0 MB > limit 280.0 MB" in rec["rejected"]["q8"][0]
    rec = recommend([ref, q4, q8], ref, Constraints(prefer="latency"))
    assert rec["choice"] == "q8" and "median answer latency" in rec["rejected"]["q4"][0]
    rec = recommend([ref, q4, q8], ref, Constraints(max_p95_ms=100))
    assert rec["choice"] is None and "limit 100 ms" in rec["rejected"]["q8"][0]


def test_recommend_noise_is_a_tie_that_the_next_key_decides():
    ref = make("hf", acc=0.5, rss_mb=1200, kld=0.0)
    a = make("a", acc=0.5, rss_mb=300, kld=0.02, mcnemar_p=1.0, p95=200)
    b = make("b", acc=0.5, rss_mb=301, kld=0.02, mcnemar_p=1.0, p95=100)  # 0.3% more memory: noise
    rec = recommend([ref, a, b], ref, Constraints())
    assert rec["choice"] == "b"
    assert "within 2%" in rec["rejected"]["a"][0] and "median answer latency" in rec["rejected"]["a"][0]


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
    out = measure_child([sys.executable, "-c", "import ctypes; ctypes.string_at(0)"], tmp_path / "segv.log")
    assert not out.ok and out.signal_name == "SIGSEGV" and "SIGSEGV" in out.describe()


def test_a_sigkilled_worker_is_seen_as_killed_through_the_launcher(tmp_path):
    """SIGKILL (what the OOM killer sends) has no handler to reset: the launcher must still die by it."""
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    out = measure_child([sys.executable, "-c", code], tmp_path / "kill.log")
    assert out.signal_name == "SIGKILL" and out.exit_code is None and not out.oom_killed
    assert out.describe() == "crashed: killed by SIGKILL"


def test_child_timeout_kills_the_whole_group(tmp_path):
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); " \
           "print('started', flush=True); time.sleep(60)"
    out = measure_child([sys.executable, "-c", code], tmp_path / "hang.log", timeout_s=2)
    assert out.timed_out and not out.ok and "timed out" in out.describe()
    assert out.wall_s < 30


def test_child_exit_code_and_peak_memory(tmp_path):
    # this (parent) process holds 700 MB; Linux would carry that high-water mark into a directly spawned child
    ballast = bytearray(700 * 10**6)
    ballast[::4096] = b"x" * len(ballast[::4096])
    # the child holds ~300 MB resident for a moment, then exits 5
    code = ("import time; b = bytearray(300 * 10**6); b[::4096] = b'x' * len(b[::4096]); time.sleep(0.5); "
            "raise SystemExit(5)")
    out = measure_child([sys.executable, "-c", code], tmp_path / "mem.log")
    assert out.exit_code == 5 and out.signal is None and not out.ok
    assert out.peak_rss_sampled >= 300e6 and out.ru_maxrss >= 300e6
    # the launcher keeps the parent's own footprint out of the child's accounting
    assert out.ru_maxrss < 600e6 and out.peak_rss_sampled < 600e6
    del ballast


def test_a_plot_that_fails_is_a_skipped_output_not_a_lost_run(tmp_path, monkeypatch):
    """The numbers are written whatever matplotlib does; the figure's failure is recorded as a skipped output."""
    from edgemed.bench.render import outputs, plot

    def broken(results, path, caption):
        raise ValueError("'yerr' must not contain negative values")

    monkeypatch.setattr(plot, "plot_pareto", broken)
    doc = {"environment": {}, "settings": {}, "created": "now"}
    written = outputs.write_outputs(doc, [make("hf")], tmp_path, None, [])
    assert "plot" not in written and (tmp_path / "bench.csv").is_file() and (tmp_path / "bench.md").is_file()
    assert "plotting failed" in doc["skipped_outputs"]["pareto.png"]


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [("timeout", 0.001, "--timeout must be at least 1 second"), ("fidelity_text", "BIN", "cannot be read as UTF-8"),
     ("fidelity_text", "EMPTY", "is empty")],
)
def test_bench_config_refuses_what_every_worker_would_fail_on(tmp_path, field, value, needle):
    from edgemed.bench.config import BenchConfig

    (tmp_path / "bin.txt").write_bytes(bytes(range(128, 256)) * 4)
    (tmp_path / "empty.txt").write_text("  \n")
    value = {"BIN": tmp_path / "bin.txt", "EMPTY": tmp_path / "empty.txt"}.get(value, value)
    with pytest.raises(EdgemedError, match=needle):
        BenchConfig(**{field: value}).validate()


# --- the worker's typed result: to_dict in the child, from_dict in the parent, nothing renamed ---------------------
def worker_result(name: str = "q8") -> ArtifactResult:
    """An ArtifactResult as the worker fills it in (edgemed.bench.worker.run): only what it measures in its process."""
    r = make(name, kld=0.02)
    r.memory = Memory(peak_rss_serving_bytes=300 * 10**6, rss_before_load_bytes=10**8, rss_after_load_bytes=2 * 10**8,
                      peak_rss_self_bytes=350 * 10**6)
    r.bandwidth = Bandwidth()
    r.load_s, r.eval_s, r.phases_s = 1.5, 2.5, {"startup": 0.5, "load": 1.5}
    r.runtime_info = {"engine": "x", "env_set_by_bench": {}, "prompt_style": "chatml",
                      "prompt_style_source": "chat template"}
    r.predictions = [{"id": "q1", "pred": "A", "answer": "B", "correct": False}]
    return r


def test_the_worker_result_crosses_as_json_and_the_parent_only_adds_what_it_measured(tmp_path):
    from edgemed.bench.protocol import Target, add_outside
    from edgemed.process.isolate import MeasuredOutcome

    sent = json.loads(json.dumps(worker_result().to_dict()))  # what the worker writes to RESULT.json
    got = ArtifactResult.from_dict(sent)
    assert got == worker_result() and isinstance(got.latency, Latency) and isinstance(got.memory, Memory)
    art = tmp_path / "q8"
    art.mkdir()
    (art / "model.gguf").write_bytes(b"w" * 1000)
    (art / "edgemed.json").write_text("{}")
    outcome = MeasuredOutcome(exit_code=0, signal=None, timed_out=False, wall_s=9.0, peak_rss_sampled=400 * 10**6,
                              samples=100, ru_maxrss=410 * 10**6)
    final = add_outside(got, Target("q8", str(art), "gguf-q8_0", "llama.cpp"), "key1", outcome).to_dict()
    assert final.keys() == sent.keys() and final["memory"].keys() == sent["memory"].keys()  # no key renamed or added
    outside = {"settings_key", "wall_s", "weights", "size_bytes", "bandwidth", "memory", "machine_load"}
    assert {k: v for k, v in final.items() if k not in outside} == {k: v for k, v in sent.items() if k not in outside}
    assert all(final["memory"][k] == v for k, v in sent["memory"].items() if v is not None)  # the worker's kept
    assert final["memory"]["peak_rss_bytes"] == 300 * 10**6  # the serving peak, the worker's own figure
    assert final["memory"]["peak_rss_process_bytes"] == 410 * 10**6 and final["memory"]["samples"] == 100
    assert final["wall_s"] == 9.0 and final["settings_key"] == "key1" and final["size_bytes"] == 1002
    assert final["bandwidth"]["weight_bytes"] == 1000 and final["weights"]["files"][0]["path"] == "model.gguf"
    assert final["runtime_info"]["prompt_style"] == "chatml"  # bench.json's key, written by the worker


@dataclass
class Energy:
    """A typed record a worker could fill in (what a new metric would read)."""

    joules_per_answer: float | None = None
    samples: list[float] = field(default_factory=list)


@dataclass
class ResultWithEnergy(ArtifactResult):
    """ArtifactResult with one more typed field: what adding `energy: Energy` to ArtifactResult itself does."""

    energy: Energy = field(default_factory=Energy)


@pytest.fixture
def restore_metrics():
    from edgemed.bench import results

    metrics, columns = dict(results.METRICS), list(results.TABLE_COLUMNS)
    yield
    results.METRICS.clear()
    results.METRICS.update(metrics)
    results.TABLE_COLUMNS[:] = columns


def test_a_new_metric_is_one_metrics_entry_plus_the_workers_typed_field(restore_metrics, tmp_path):
    from edgemed.bench.gate.budget import check_budgets, load_budgets
    from edgemed.bench.render.html import bench_html
    from edgemed.bench.render.tables import rich_table, to_csv, to_markdown
    from edgemed.bench.results import Metric, add_metric

    # the worker's typed field...
    r = ResultWithEnergy(**vars(make("q4", fmt="gguf-q4_k_m")), energy=Energy(4.25, [4.0, 4.5]))
    # ...crosses the worker protocol as it is
    got = ResultWithEnergy.from_dict(json.loads(json.dumps(r.to_dict())))
    assert got.energy == Energy(4.25, [4.0, 4.5]) and got == r
    # ...and one METRICS entry makes it a row value, a CSV and JSON column, a table column and a budget key
    add_metric(Metric("joules", "J/answer", lambda res: res.energy.joules_per_answer, "min", ".2f", "max_joules",
                      "energy per answer (J)"), column=True)
    other = ResultWithEnergy(**vars(make("q8", fmt="gguf-q8_0")), energy=Energy(6.0))
    assert got.row()["joules"] == 4.25 and got.metric("joules") == 4.25
    assert got.to_dict()["energy"] == {"joules_per_answer": 4.25, "samples": [4.0, 4.5]}
    header, row, _ = to_csv([got, other]).splitlines()
    assert "joules" in header.split(",") and "4.25" in row.split(",")
    md = to_markdown({"settings": {}, "reference": "q8"}, [got, other]).splitlines()
    [table_header] = [ln for ln in md if ln.startswith("| artifact |")]
    [q4_row] = [ln for ln in md if ln.startswith("| q4 |")]
    assert table_header.endswith("| J/answer |") and q4_row.endswith("| **4.25** |")  # the best value, in bold
    assert rich_table([got, other]).columns[-1].header == "J/answer"
    assert "J/answer" in bench_html({"settings": {}, "reference": "q8"}, [got, other])
    (tmp_path / "b.toml").write_text("[default]\nmax_joules = 5\n")
    checks = check_budgets(load_budgets(tmp_path / "b.toml"), [got, other], None)
    assert [(c.artifact, c.passed) for c in checks] == [("q4", True), ("q8", False)]
    assert checks[1].message == "energy per answer (J) 6.00 (single value) > max_joules 5"
