"""`edgemed bench` and `edgemed report` end to end on real exported tiny artifacts, each in real child processes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

# small and quick: 6 questions, 4 latency prompts x 5 repetitions (20 samples: enough for a p95), pp16/tg8,
# 8-token answers, one thread
FAST = ["--limit", "6", "-r", "5", "--warmup", "1", "--latency-prompts", "4", "--gen-tokens", "8",
        "-p", "16", "-n", "8", "--threads", "1"]
MET = """\
[default]
max_p95_ms = 600000
max_peak_rss_mb = 100000
min_accuracy = 0.0

[format.gguf-q8_0]
max_accuracy_drop = 1.0
"""


@pytest.fixture(scope="module")
def artifacts(tiny_hf_gguf) -> Path:
    """hf + gguf-q8_0 of the tiny model, exported by the real exporter (folders with edgemed.json): the session's
    shared export (conftest), read-only."""
    return tiny_hf_gguf


@pytest.fixture(scope="module")
def bench_ok(tmp_path_factory, artifacts) -> tuple[Path, object]:
    from conftest import run_cli

    root = tmp_path_factory.mktemp("bench")
    budget = root / "met.toml"
    budget.write_text(MET)
    out = root / "out"
    # --max-memory: a budget on every artifact (it overrides the file's max_peak_rss_mb); on a busy machine a
    # timing budget may be inconclusive: counted as passed here, where the outputs are the point (one run: the
    # timings' own intervals; several runs are test_an_inconclusive_budget_gets_more_runs_then_follows_the_policy's)
    proc = run_cli("bench", artifacts, *FAST, "--budget", budget, "--junit", out / "junit.xml",
                   "--profile", "rpi4", "--max-memory", "4GB", "--inconclusive", "pass", "--retries", "0",
                   "--timing-runs", "1", "--out", out, timeout=900,
                   env={"GITHUB_STEP_SUMMARY": str(root / "summary.md")})
    return out, proc


def resumed_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_bench_writes_every_output_with_sane_content(bench_ok):
    out, proc = bench_ok
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((out / "bench.json").read_text())
    assert doc["status"] == "complete" and doc["exit_code"] == 0 and doc["reference"] == "hf"
    by_name = {a["name"]: a for a in doc["artifacts"]}
    assert set(by_name) == {"hf", "gguf-q8_0"}
    for a in by_name.values():
        assert a["status"] == "ok"
        assert a["accuracy"]["n"] == 6 and 0 <= a["accuracy"]["accuracy"] <= 1
        assert a["accuracy"]["ci_low"] <= a["accuracy"]["accuracy"] <= a["accuracy"]["ci_high"]
        assert 0 <= a["accuracy"]["agreement"] <= 1 and a["accuracy"]["reference"] == "hf"
        assert len(a["latency"]["samples"]["answer_ms"]) == 20  # 4 prompts x 5 repetitions, warm-up excluded
        assert a["latency"]["answer_ms"]["p95"] >= a["latency"]["answer_ms"]["median"] > 0
        pp, tg = a["throughput"]["pp"], a["throughput"]["tg"]
        assert (pp["n_prompt"], pp["n_gen"], tg["n_prompt"], tg["n_gen"]) == (16, 0, 0, 8)
        assert len(pp["samples_ts"]) == len(tg["samples_ts"]) == 5 and pp["avg_ts"] > 0 and tg["avg_ts"] > 0
        assert tg["avg_ts"] == pytest.approx(sum(tg["samples_ts"]) / 5)
        fid = a["fidelity"]
        assert fid["tokens"] > 100 and fid["kld_ci"][0] <= fid["kld_mean"] <= fid["kld_ci"][1]
        assert 0 <= fid["top1_agreement"] <= 1 and fid["ppl"] > 1 and fid["ppl_reference"] > 1
        load = a["machine_load"]
        assert load["other_cores_mean"] >= 0 and isinstance(load["busy"], bool) and load["reason"]
        info = a["runtime_info"]
        assert info["threads"] == 1 and info["device"] == "cpu" and info["omp_wait_policy"]
        mem = a["memory"]
        assert mem["peak_rss_bytes"] >= mem["rss_after_load_bytes"] > mem["rss_before_load_bytes"] > 0
        assert mem["peak_rss_os_bytes"] and mem["peak_rss_sampled_bytes"]
        assert a["size_bytes"] >= a["bandwidth"]["weight_bytes"] > 0
        assert a["bandwidth"]["effective_gbps"] > 0 and a["runtime_info"]["prompt_style"] == "chatml"
        assert len(a["predictions"]) == 6
    assert by_name["hf"]["accuracy"]["agreement"] == 1.0
    assert by_name["hf"]["fidelity"]["kld_mean"] == 0 and by_name["hf"]["fidelity"]["top1_agreement"] == 1
    assert by_name["gguf-q8_0"]["runtime_info"]["threads_batch"] == 1
    # the llama.cpp process never imports torch, so its peak memory is far below the transformers one
    assert by_name["gguf-q8_0"]["memory"]["peak_rss_bytes"] < by_name["hf"]["memory"]["peak_rss_bytes"]
    assert doc["machine"]["copy_bandwidth"]["gbps"] > 0 and doc["environment"]["cpu"]
    assert doc["settings"]["threads"] == 1 and doc["settings"]["questions"] == 6
    assert all(c["passed"] for c in doc["checks"]) and len(doc["checks"]) == 2 * 3 + 1
    by_check = {(c["artifact"], c["key"]): c for c in doc["checks"]}
    rss = by_check[("hf", "max_peak_rss_mb")]
    assert rss["limit"] == 4000 and rss["source"] == "--max-memory" and rss["verdict"] == "pass"
    p95 = by_check[("gguf-q8_0", "max_p95_ms")]
    assert p95["low"] <= p95["measured"] <= p95["high"] < 600000 and "order-statistic" in p95["interval_rule"]
    assert doc["verdicts"]["inconclusive"] == "pass" and "--max-memory is a budget" in proc.stderr
    assert doc["recommendation"]["choice"] in by_name
    assert {r["artifact"] for r in doc["profiles"][0]["artifacts"]} == set(by_name)
    assert doc["profiles"][0]["profile"]["name"] == "rpi4-4gb"

    rows = list(csv.DictReader((out / "bench.csv").open()))
    assert {r["name"] for r in rows} == set(by_name) and all(float(r["answer_p95_ms"]) > 0 for r in rows)
    md = (out / "bench.md").read_text()
    assert "| artifact | format |" in md and "**Recommendation:**" in md and "rpi4-4gb" in md
    assert (out.parent / "summary.md").read_text() == md + "\n"  # appended to $GITHUB_STEP_SUMMARY
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite.get("tests") == str(2 + len(doc["checks"])) and suite.get("failures") == "0"
    assert "all 7 checks hold" in proc.stdout and "recommendation:" in proc.stdout


def test_a_p95_budget_these_settings_cannot_measure_is_refused_before_any_work(artifacts, tmp_path, cli):
    """-r 3 x 4 latency prompts = 12 answer latencies: no p95 to hold a p95 budget against. Exit 2 naming the fix,
    nothing written, instead of a bench that ends failing the budget as not measured."""
    out = tmp_path / "out"
    proc = cli("bench", artifacts, "--limit", "2", "-r", "3", "--max-p95-ms", "500", "--out", out)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    text = proc.stdout + proc.stderr
    assert "max_p95_ms (--max-p95-ms) needs a p95 of at least 20 answer latencies" in text and "-r 5" in text
    assert "Traceback" not in text and not (out / "bench.json").exists()


def test_broken_budget_exits_1_and_names_it(bench_ok, tmp_path, cli):
    out = resumed_copy(bench_ok[0], tmp_path / "out")
    budget = tmp_path / "strict.toml"
    budget.write_text("[default]\nmin_decode_tokens_per_s = 1e9\n")
    proc = cli("bench", _artifacts_of(out), *FAST, "--budget", budget, "--out", out, "--resume",
               "--junit", tmp_path / "j.xml", "--retries", "0", "--timing-runs", "1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "already measured with these settings" in proc.stderr  # --resume skipped both artifacts
    assert "BROKEN hf min_decode_tokens_per_s: tg tokens/s" in proc.stdout
    assert f"{budget}:2" in proc.stdout
    doc = json.loads((out / "bench.json").read_text())
    broken = [c for c in doc["checks"] if not c["passed"]]
    assert {c["artifact"] for c in broken} == {"hf", "gguf-q8_0"} and all(c["limit"] == 1e9 for c in broken)
    assert ET.parse(tmp_path / "j.xml").getroot().find("testsuite").get("failures") == "2"
    busy = set(doc["busy_artifacts"])
    loads = {a["name"]: a["machine_load"] for a in doc["artifacts"]}

    def unexplained(name: str) -> bool:
        """Busy with no measured wait for a CPU to bound the slowdown by (1e9 t/s is beyond any bound): a timing it
        broke is inconclusive, counted as failed."""
        return name in busy and (loads[name].get("wait_share_max") is None or
                                 (loads[name].get("steal_fraction") or 0) > 0.05)

    for c in broken:
        assert c["verdict"] == ("inconclusive" if unexplained(c["artifact"]) else "fail"), c
        assert c["policy"] == ("fail" if unexplained(c["artifact"]) else None) and c["high"] < 1e9
        assert c["busy"] == (c["artifact"] in busy)
    case = next(c for c in ET.parse(tmp_path / "j.xml").getroot().iter("testcase")
                if c.get("name") == "min_decode_tokens_per_s" and c.find("failure") is not None)
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["verdict"] in ("fail", "inconclusive") and float(props["interval_high"]) < 1e9
    assert props["reruns"] == "0" and "t interval of the mean" in props["interval_rule"]
    md = (out / "bench.md").read_text()
    assert "| artifact | check | limit | measured | 95% interval | verdict |" in md
    assert ":x: FAIL" in md or ":x: inconclusive -> counted as fail (--inconclusive fail)" in md


def _artifacts_of(out: Path) -> Path:
    doc = json.loads((out / "bench.json").read_text())
    return (out / doc["artifacts"][0]["path"]).parent  # relative to the bench folder


def _doctored_faster(src: Path, dst: Path) -> Path:
    """The same run, but as if hf had answered twice as fast before."""
    doc = json.loads((src / "bench.json").read_text())
    for a in doc["artifacts"]:
        if a["name"] == "hf":
            a["latency"]["answer_ms"] = {k: (v / 2 if isinstance(v, float) else v)
                                         for k, v in a["latency"]["answer_ms"].items()}
    dst.write_text(json.dumps(doc))
    return dst


def test_baseline_regression_exits_1(bench_ok, tmp_path, cli):
    out = resumed_copy(bench_ok[0], tmp_path / "out")
    baseline = _doctored_faster(bench_ok[0], tmp_path / "baseline.json")
    proc = cli("bench", _artifacts_of(out), *FAST, "--out", out, "--resume", "--baseline", baseline,
               "--tolerance", "10%")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "BROKEN hf baseline:answer_p95_ms: regressed: p95 ms" in proc.stdout
    assert "gguf-q8_0 baseline" not in proc.stdout  # unchanged artifacts do not regress


def _other_machine(src: Path, dst: Path) -> Path:
    doc = json.loads((src / "bench.json").read_text())
    doc["environment"]["cpu"] = "AMD EPYC 7B13 (another runner)"
    dst.write_text(json.dumps(doc))
    return dst


def test_a_baseline_from_another_machine_is_named_not_compared(bench_ok, tmp_path, cli):
    other = _other_machine(bench_ok[0], tmp_path / "other.json")
    strict = cli("bench", _artifacts_of(bench_ok[0]), *FAST, "--baseline", other, "--strict",
                 "--out", tmp_path / "strict")
    assert strict.returncode == 2 and "cannot be compared with this run: another machine" in strict.stderr
    assert "AMD EPYC 7B13" in strict.stderr and not (tmp_path / "strict").exists()  # refused before any work
    out = resumed_copy(bench_ok[0], tmp_path / "out")
    warned = cli("bench", _artifacts_of(out), *FAST, "--out", out, "--resume", "--baseline", other,
                 "--tolerance", "10%")
    assert warned.returncode == 0, warned.stdout + warned.stderr
    assert "warning: --baseline" in warned.stderr and "not compared: another machine" in warned.stderr
    doc = json.loads((out / "bench.json").read_text())
    assert doc["baseline"]["compared"] is False and not [c for c in doc["checks"] if c["key"].startswith("baseline")]
    report = cli("report", other, out, "--tolerance", "10%")
    assert report.returncode == 0 and "compared nothing" in report.stdout
    assert "no regression beyond" not in report.stdout


def test_ab_on_one_runner_and_suggested_budgets(artifacts, tmp_path, cli):
    """The same GGUF as baseline and candidate, interleaved: every ratio's check is decided or inconclusive, never
    a failure the interval does not confirm; the suggested budgets read back as a budgets file."""
    suggested = tmp_path / "suggested.toml"
    import sys

    proc = cli("bench", artifacts / "gguf-q8_0", *FAST, "--no-fidelity", "--ab-baseline", artifacts / "gguf-q8_0",
               "--ab-rounds", "2", "--retries", "0", "--inconclusive", "pass", "--suggest-budgets", suggested,
               "--suggest-runs", "2",
               "--ab-python", sys.executable, "--out", tmp_path / "ab", timeout=600)  # the second install: this one
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "ab" / "bench.json").read_text())
    assert doc["ab"]["python"] == sys.executable and doc["ab"]["max_slowdown"] == 0.05
    [pair] = doc["ab"]["pairs"]
    assert pair["baseline"] == "baseline-gguf-q8_0" and pair["candidate"] == "gguf-q8_0" and len(pair["rounds"]) == 2
    ab = {c["key"]: c for c in doc["checks"] if c["key"].startswith("ab:")}
    assert set(ab) == {"ab:decode_tps", "ab:prefill_tps", "ab:answer_p95_ms", "ab:ttft_ms", "ab:peak_rss_mb"}
    for c in ab.values():  # the verdict is the interval's against 1 -/+ 5% (the same artifact: rarely a fail)
        assert c["low"] <= c["measured"] <= c["high"], c
        bad = c["high"] < c["limit"] if c["key"].endswith("_tps") else c["low"] > c["limit"]
        good = c["low"] >= c["limit"] if c["key"].endswith("_tps") else c["high"] <= c["limit"]
        confirmed = bad and (not c["busy"] or "beyond what waiting for a CPU explains" in c["message"])
        assert c["verdict"] == ("pass" if good else "fail" if confirmed else "inconclusive"), c
    text = suggested.read_text()
    assert "[format.gguf-q8_0]" in text and "# gguf-q8_0: measured" in text
    assert "measured in 2 runs" in text and len(doc["suggest_repeats"]["gguf-q8_0"]) == 1  # one timing-only rerun
    from edgemed.bench.gate.budget import load_budgets

    table = load_budgets(suggested).formats["gguf-q8_0"]  # it reads back as budgets
    assert table["max_peak_rss_mb"] > 0
    # a busy runner's drift can push a lower limit to 0: then the line says so instead of a limit that catches nothing
    assert table.get("min_decode_tokens_per_s", 0) > 0 or "# min_decode_tokens_per_s: gguf-q8_0: left out" in text


def test_an_inconclusive_budget_gets_more_runs_then_follows_the_policy(artifacts, tmp_path, cli):
    """One run of one repetition holds no spread, so a tg budget cannot be decided: without --retries it counts as
    --inconclusive says (fail: exit 1, every output saying so); with one retry the artifact is measured in 2 more
    runs and the check reads the mean of the 3 runs and its interval over them."""
    budget = tmp_path / "b.toml"
    budget.write_text("[default]\nmin_decode_tokens_per_s = 0.001\n")
    args = ["bench", artifacts / "gguf-q8_0", *FAST, "-r", "1", "--no-fidelity", "--budget", budget,
            "--timing-runs", "1"]
    proc = cli(*args, "--retries", "0", "--out", tmp_path / "out", "--junit", tmp_path / "j.xml")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    said = " ".join(proc.stdout.split())  # the console folds long lines
    doc = json.loads((tmp_path / "out" / "bench.json").read_text())
    [check] = doc["checks"]
    assert check["verdict"] == "inconclusive" and check["policy"] == "fail" and check["reruns"] == 0
    assert check["low"] is None and "no spread measured" in check["message"]
    assert doc["verdicts"]["inconclusive"] == "fail" and doc["verdicts"]["timing_runs"] == 1
    assert "inconclusive -> counted as fail (--inconclusive fail)" in said
    props = {p.get("name"): p.get("value") for p in ET.parse(tmp_path / "j.xml").getroot().iter("property")}
    assert props["verdict"] == "inconclusive" and props["inconclusive_policy"] == "fail"
    again = cli(*args, "--retries", "1", "--out", tmp_path / "again")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "min_decode_tokens_per_s inconclusive; measuring it in 2 more runs (1 of --retries 1)" in \
        " ".join(again.stderr.split())
    doc = json.loads((tmp_path / "again" / "bench.json").read_text())
    [check], [art] = doc["checks"], doc["artifacts"]
    assert check["verdict"] == "pass" and check["reruns"] == 1 and "over 3 runs" in check["interval_rule"]
    assert art["reruns"] == 1 and len(art["timing_runs"]) == 3 and doc["summary"]["reruns"] == {"gguf-q8_0": 1}
    values = [x["decode_tps"] for x in art["timing_runs"]]
    assert check["measured"] == pytest.approx(sum(values) / 3) and check["low"] < min(values) <= max(values)
    lenient = cli(*args, "--retries", "0", "--inconclusive", "pass", "--out", tmp_path / "lenient")
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr
    assert "INCONCLUSIVE gguf-q8_0 min_decode_tokens_per_s" in " ".join(lenient.stdout.split())

def test_report_compares_two_runs(bench_ok, tmp_path, cli):
    out = bench_ok[0]
    same = cli("report", out, out / "bench.json", "--tolerance", "5%", "--out", tmp_path / "same")
    assert same.returncode == 0, same.stdout + same.stderr
    rep = json.loads((tmp_path / "same" / "report.json").read_text())
    assert {a["name"] for a in rep["artifacts"]} == {"hf", "gguf-q8_0"} and rep["regressions"] == []
    assert all(a["metrics"]["answer_p95_ms"]["change"] == 0 for a in rep["artifacts"])
    faster = _doctored_faster(out, tmp_path / "faster.json")
    worse = cli("report", faster, out, "--tolerance", "10%", "--out", tmp_path / "worse")
    assert worse.returncode == 1 and "REGRESSED hf" in worse.stdout
    rep = json.loads((tmp_path / "worse" / "report.json").read_text())
    hf = next(a for a in rep["artifacts"] if a["name"] == "hf")
    assert hf["metrics"]["answer_p95_ms"]["relative"] == pytest.approx(1.0)
    assert (tmp_path / "worse" / "report.md").read_text().startswith("## edgemed report")


def test_crash_timeout_and_corrupt_artifacts_are_isolated(artifacts, tmp_path, cli):
    arts = tmp_path / "arts"
    shutil.copytree(artifacts / "gguf-q8_0", arts / "good")
    shutil.copytree(artifacts / "gguf-q8_0", arts / "crashy")
    shutil.copytree(artifacts / "gguf-q8_0", arts / "hangy")
    shutil.copytree(artifacts / "hf", arts / "corrupt")
    weights = arts / "corrupt" / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    shutil.copytree(artifacts / "gguf-q8_0", arts / "manifest-broken")  # recorded as failed, never run
    (arts / "manifest-broken" / "edgemed.json").write_text('{"format": "gguf-q8_0", "runt')
    shutil.copytree(artifacts / "gguf-q8_0", arts / "manifest-unknown")
    m = json.loads((arts / "manifest-unknown" / "edgemed.json").read_text())
    (arts / "manifest-unknown" / "edgemed.json").write_text(json.dumps({**m, "format": "tflite"}))
    out = tmp_path / "out"
    proc = cli("bench", arts, *FAST, "--timeout", "25", "--out", out,
               env={"EDGEMED_BENCH_FAULT": "segv:crashy,hang:hangy"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = json.loads((out / "bench.json").read_text())
    by_name = {a["name"]: a for a in doc["artifacts"]}
    assert by_name["good"]["status"] == "ok" and by_name["good"]["accuracy"]["n"] == 6
    crash, hang, bad = by_name["crashy"]["failure"], by_name["hangy"]["failure"], by_name["corrupt"]["failure"]
    assert crash["kind"] == "crash" and crash["signal"] == "SIGSEGV" and "injecting fault" in crash["stderr_tail"]
    assert hang["kind"] == "timeout" and "timed out after" in hang["message"]
    assert bad["kind"] == "error" and "corrupt" in bad["message"], bad
    broken, unknown = by_name["manifest-broken"]["failure"], by_name["manifest-unknown"]["failure"]
    assert "edgemed.json is corrupt" in broken["message"] and "unknown format 'tflite'" in unknown["message"]
    assert by_name["manifest-broken"]["status"] == by_name["manifest-unknown"]["status"] == "failed"
    assert sorted(doc["summary"]["failed_artifacts"]) == ["corrupt", "crashy", "hangy", "manifest-broken",
                                                         "manifest-unknown"]
    assert doc["recommendation"]["choice"] == "good"
    assert "FAILED crashy: crashed: killed by SIGSEGV" in proc.stdout


def test_a_worker_the_kernel_kills_for_memory_is_reported_and_resume_goes_on(artifacts, tmp_path, cli,
                                                                             memory_cgroup):
    """A real kernel OOM kill, no mocks: the bench runs in a 1.5 GiB memory cgroup (its own copy-bandwidth probe
    needs about 800 MB) and one worker touches 4 GiB; the other artifact is measured, --resume re-runs the one."""
    import subprocess
    import sys

    group = memory_cgroup(1536)
    arts = tmp_path / "arts"
    shutil.copytree(artifacts / "gguf-q8_0", arts / "good")
    shutil.copytree(artifacts / "gguf-q8_0", arts / "oomy")
    out = tmp_path / "out"
    args = ["bench", arts, *FAST, "--reference", "good", "--out", out]
    join = 'echo $$ > "$0" && exec "$@"'  # into the cgroup, then the bench (its workers start in there too)
    proc = subprocess.run(["sh", "-c", join, group / "cgroup.procs", sys.executable, "-m", "edgemed.cli.main",
                           *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "EDGEMED_BENCH_FAULT": "alloc=4096:oomy"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    counter = group / ("memory.oom_control" if (group / "memory.oom_control").exists() else "memory.events")
    assert "oom_kill 1" in counter.read_text().splitlines()  # the kernel's own count: it killed, once
    doc = json.loads((out / "bench.json").read_text())
    good, oomy = (next(a for a in doc["artifacts"] if a["name"] == n) for n in ("good", "oomy"))
    assert good["status"] == "ok" and good["accuracy"]["n"] == 6
    failure = oomy["failure"]
    assert failure["kind"] == "oom" and failure["signal"] == "SIGKILL", failure
    assert failure["message"].startswith("killed: out of memory (the kernel's OOM killer; peak RSS "), failure
    assert " sampled" in failure["message"] and "this machine has " in failure["message"]
    assert "its memory cgroup allows 1.6 GB" in failure["message"]
    assert 300e6 < oomy["memory"]["peak_rss_sampled_bytes"] < 2e9  # it grew toward the limit, never to its 4 GB
    assert doc["summary"]["failed_artifacts"] == ["oomy"]
    assert "| oomy | gguf-q8_0 | FAILED: killed: out of memory (" in (out / "bench.md").read_text()
    row = next(ln for ln in proc.stdout.splitlines() if "oomy" in ln and "FAILED" in ln and "│" in ln)
    assert "oom" in row.split("FAILED", 1)[1]  # the table's kind column
    assert "FAILED oomy: killed: out of memory" in proc.stdout

    resumed = cli(*args, "--resume", timeout=300)  # no fault, no cgroup: the failed one is measured now
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "good: already measured with these settings (--resume)" in resumed.stderr
    again = {a["name"]: a for a in json.loads((out / "bench.json").read_text())["artifacts"]}
    assert again["good"]["wall_s"] == good["wall_s"] and again["oomy"]["status"] == "ok"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget", "BUDGET"], "bad.toml:3: unknown budget key 'max_latency'"),
        (["--profile", "rpi9"], "unknown device profile 'rpi9'"),
        (["--max-memory", "lots"], "--max-memory 'lots' is not a size"),
        (["--reference", "nope"], "--reference 'nope' names no artifact"),
        (["--junit", "TMP"], "is a folder; give a file path"),
        (["--junit", "FILE/junit.xml"], "is a file, not a folder"),
        (["--budget", "NAN"], "is nan"),
    ],
)
def test_usage_errors_exit_2_before_running(artifacts, tmp_path, cli, args, message):
    budget = tmp_path / "bad.toml"
    budget.write_text("[default]\nmin_accuracy = 0.1\nmax_latency = 5\n")
    (tmp_path / "nan.toml").write_text("[default]\nmax_kld = nan\n")
    (tmp_path / "a-file").write_text("x")
    subs = {"BUDGET": str(budget), "TMP": str(tmp_path), "NAN": str(tmp_path / "nan.toml"),
            "FILE/junit.xml": str(tmp_path / "a-file" / "junit.xml")}
    args = [subs.get(a, a) for a in args]
    proc = cli("bench", artifacts, *args, "--out", tmp_path / "out")
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
