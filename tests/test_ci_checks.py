"""What a CI job relies on, without running a bench: interval statistics, suggested budgets, A/B ratios, which
runs can be compared, and every command's --help stating its exit codes and one meaning per flag."""

from __future__ import annotations

import math
import random

import pytest

from edgemed.bench.results import Accuracy, ArtifactResult, Latency, Memory, Throughput


def test_t_quantiles_and_mean_interval():
    from edgemed.bench.measure.stats import mean_interval, t975

    assert t975(1) == 12.706 and t975(4) == 2.776 and t975(30) == 2.042
    assert t975(31) == pytest.approx(2.0395, abs=1e-3) and t975(120) == pytest.approx(1.9799, abs=1e-3)
    low, high = mean_interval([10, 11, 12, 10.5, 11.5])
    assert (low + high) / 2 == pytest.approx(11) and high - low == pytest.approx(2 * 2.776 * math.sqrt(0.625 / 5))
    assert mean_interval([3.0]) is None


def test_quantile_interval_by_order_statistics():
    from edgemed.bench.measure.stats import quantile_interval

    xs = list(range(1, 21))
    assert quantile_interval(xs, 0.5) == (6, 15)  # the textbook 95% ranks of a median of 20
    assert quantile_interval(xs, 0.95) == (17, 20)  # too few samples for a 97.5% upper end: the maximum
    rng = random.Random(0)  # coverage of the median's interval, checked by simulation
    hits = 0
    for _ in range(400):
        s = [rng.gauss(0, 1) for _ in range(30)]
        lo, hi = quantile_interval(s, 0.5)
        hits += lo <= 0 <= hi
    assert hits / 400 >= 0.93


def _measured(name: str, fmt: str, tg: list[float], p95: float = 100.0, kld: tuple | None = None) -> ArtifactResult:
    samples = [p95 * (0.95 + 0.05 * i / 19) for i in range(20)]
    from edgemed.bench.measure.stats import summarize

    r = ArtifactResult(name=name, path=name, format=fmt, runtime="llama.cpp")
    r.accuracy = Accuracy(accuracy=0.5, n=100, ci_low=0.40, ci_high=0.60)
    r.latency = Latency(answer_ms=summarize(samples), ttft_ms=summarize(samples), samples={
        "answer_ms": samples, "ttft_ms": samples})
    r.throughput = Throughput(pp={"avg_ts": 500.0, "samples_ts": [490.0, 500.0, 510.0]},
                              tg={"avg_ts": sum(tg) / len(tg), "samples_ts": tg})
    r.memory = Memory(peak_rss_serving_bytes=200_000_000)
    if kld is not None:
        r.fidelity = {"kld_mean": kld[0], "kld_ci": [kld[1], kld[2]]}
    return r


def test_suggested_budgets_sit_outside_the_interval_and_say_why(tmp_path):
    from edgemed.bench.gate.budget import check_budgets, load_budgets
    from edgemed.bench.gate.suggest import suggest_budgets

    r = _measured("q8", "gguf-q8_0", [48.0, 50.0, 52.0, 49.0, 51.0], kld=(0.02, 0.015, 0.025))
    text = suggest_budgets([r], 0.10, "hf", "runs/bench/bench.json")
    lines = {ln.split(" = ")[0]: ln for ln in text.splitlines() if " = " in ln}
    tg_limit = float(lines["min_decode_tokens_per_s"].split(" = ")[1].split()[0])
    low = 50 - 2.776 * math.sqrt(2.5 / 5)
    assert tg_limit == pytest.approx(low * 0.9, rel=1e-4)
    assert "95% t interval of the mean" in lines["min_decode_tokens_per_s"] and "lower end -10%" in \
        lines["min_decode_tokens_per_s"]
    assert float(lines["max_kld"].split(" = ")[1].split()[0]) == pytest.approx(0.025 * 1.1)
    assert "max_accuracy_drop" not in lines  # not compared with a reference in this run
    assert "drifted apart" not in text  # one run: no drift measured, the margin places every limit
    path = tmp_path / "suggested.toml"
    path.write_text(text)
    budgets = load_budgets(path)  # it reads back as a budgets file, and the run it came from passes it
    assert {c.verdict for c in check_budgets(budgets, [r], None)} == {"pass"}
    slower = _measured("q8", "gguf-q8_0", [36.0, 37.5, 39.0, 36.8, 38.2])  # 25% slower decode
    tg_check = next(c for c in check_budgets(budgets, [slower], None) if c.key == "min_decode_tokens_per_s")
    assert tg_check.verdict == "fail"


def test_suggested_limits_from_several_runs_hold_their_drift_and_catch_a_slowdown(tmp_path):
    """Three runs whose means drift apart: a timing's limit sits 2 run-to-run sds below their mean (wider than the
    10% margin), a later run below every run seen but within that drift passes, a 25% slower one fails, and a busy
    run is named and left out."""
    from edgemed.bench.gate.budget import check_budgets, load_budgets
    from edgemed.bench.gate.suggest import place_limit, suggest_budgets

    means = (100.0, 90.0, 108.0)
    runs = [_measured("q8", "gguf-q8_0", [m - 1, m, m + 1, m - 0.5, m + 0.5]) for m in means]
    half = 2.776 * math.sqrt(0.625 / 5)
    mean = sum(means) / 3
    sd = math.sqrt(sum((m - mean) ** 2 for m in means) / 2)
    limit, how = place_limit("min", [(m, m - half, m + half) for m in means], 0.10, timing=True)
    assert how["by"] == "spread" and how["from_mean"] and limit == pytest.approx(mean - 2 * sd)
    assert 2 * sd > 0.10 * mean  # the drift, not the margin, sets the distance here
    not_timed, _ = place_limit("min", [(m, m - half, m + half) for m in means], 0.10)  # e.g. accuracy: worst end
    assert not_timed == pytest.approx(90 - half - 2 * sd)
    busy = _measured("q8", "gguf-q8_0", [49.0, 50.0, 51.0, 49.5, 50.5])  # held back by other processes
    busy.machine_load = {"busy": True, "reason": "waited"}
    text = suggest_budgets([runs[0]], 0.10, None, "b.json", {"q8": [*runs[1:], busy]})
    line = next(ln for ln in text.splitlines() if ln.startswith("min_decode_tokens_per_s"))
    assert float(line.split(" = ")[1].split()[0]) == pytest.approx(limit, rel=1e-5)  # the busy run left out
    assert "measured in 3 runs" in line and "mean -2 x sd" in line and "catches" in line
    assert "1 run(s) measured busy" in line and "WARNING: 1 of 4 measurements ran on a busy machine" in text
    catches = (mean - limit) / mean  # the drift placed the limit: the file says what a budget cannot catch here
    assert f"min_decode_tokens_per_s (q8) catches only a change of {catches:.0%}" in text and "--ab-baseline" in text
    rss = next(ln for ln in text.splitlines() if ln.startswith("max_peak_rss_mb"))
    assert float(rss.split(" = ")[1].split()[0]) == pytest.approx(220)  # no spread: the 10% margin
    path = tmp_path / "s.toml"
    path.write_text(text)
    budgets = load_budgets(path)

    def tg(samples):
        r = _measured("q8", "gguf-q8_0", samples)
        return next(c for c in check_budgets(budgets, [r], None) if c.key == "min_decode_tokens_per_s").verdict

    assert tg([87.0, 88.0, 89.0, 87.5, 88.5]) == "pass"  # below every run seen, within the drift
    slow = 0.75 * mean
    assert tg([slow - 1, slow, slow + 1, slow - 0.5, slow + 0.5]) == "fail"


def test_a_timing_budget_is_decided_on_the_mean_of_its_runs():
    """With several runs a timing's check reads their mean and the t interval over the runs, not one run's
    repetitions: runs that each look tight but disagree are inconclusive; agreeing runs decide; a busy run is left
    out while two quiet ones remain."""
    from edgemed.bench.gate.budget import Budgets, check_budgets

    budgets = Budgets(path="b.toml", default={"min_decode_tokens_per_s": 80.0})

    def check(means, busy=()):
        runs = [_measured("q8", "gguf-q8_0", [m - 0.2, m, m + 0.2, m - 0.1, m + 0.1]) for m in means]
        for i in busy:
            runs[i].machine_load = {"busy": True, "reason": "waited"}
        [c] = [c for c in check_budgets(budgets, [runs[0]], None, {"q8": runs}) if c.key.endswith("_tokens_per_s")]
        return c

    alone = next(c for c in check_budgets(budgets, [_measured("q8", "gguf-q8_0", [78.8, 79.0, 79.2, 78.9, 79.1])],
                                         None) if c.key.endswith("_tokens_per_s"))
    assert alone.verdict == "fail"  # one run's tight interval, wholly below the limit
    drifting = check([79.0, 95.0, 88.0])  # the same first run among runs that drift: not established
    assert drifting.verdict == "inconclusive" and "over 3 runs" in drifting.interval_rule
    assert drifting.measured == pytest.approx((79 + 95 + 88) / 3) and "mean of 3 runs" in drifting.message
    half = 2.776 * math.sqrt(sum((m - 90) ** 2 for m in (89, 91, 90, 88, 92)) / 4) / math.sqrt(5)
    steady = check([89.0, 91.0, 90.0, 88.0, 92.0])
    assert steady.verdict == "pass" and steady.low == pytest.approx(90 - half)
    assert check([60.0, 62.0, 61.0]).verdict == "fail"
    with_busy = check([90.0, 40.0, 91.0, 89.0], busy=[1])  # the busy run's slowdown is left out
    assert with_busy.verdict == "pass" and "1 busy run(s) left out" in with_busy.interval_rule and not with_busy.busy


def test_ab_ratio_interval_confirms_a_slowdown_and_not_noise():
    from edgemed.bench.gate.ab import Pair, ab_checks, ratio_interval
    from edgemed.bench.protocol import Target

    ratio, low, high = ratio_interval([50.0, 52.0, 49.0], [37.0, 39.5, 36.5])
    assert 0.72 < low < ratio < high < 0.8
    assert ratio_interval([50.0], [40.0]) is None
    a, b = Target("baseline-q8", "/a", "gguf-q8_0", "llama.cpp"), Target("q8", "/b", "gguf-q8_0", "llama.cpp")
    slow = Pair(a, b, rounds=[(_measured("baseline-q8", "gguf-q8_0", [50.0 + d] * 3),
                               _measured("q8", "gguf-q8_0", [37.5 + d] * 3)) for d in (0.0, 1.0, -0.8)])
    checks = {c.key: c for c in ab_checks([slow], 0.05, "A/B")}
    assert checks["ab:decode_tps"].verdict == "fail" and "slowdown +25" in checks["ab:decode_tps"].message
    assert checks["ab:answer_p95_ms"].verdict == "pass" and checks["ab:answer_p95_ms"].limit == pytest.approx(1.05)
    same = Pair(a, b, rounds=[(_measured("baseline-q8", "gguf-q8_0", [50.0 + d] * 3),
                               _measured("q8", "gguf-q8_0", [50.0 + e] * 3)) for d, e in ((0, 0.4), (1, 0.6),
                                                                                          (-0.8, -1.0))])
    assert {c.key: c for c in ab_checks([same], 0.05, "A/B")}["ab:decode_tps"].verdict == "pass"


def test_ab_leaves_out_a_p95_that_no_round_could_measure_and_says_why():
    """Rounds of 12 answer latencies have no p95 (it needs 20): the gate compares the other timings and records why
    the p95 is not compared, instead of failing a check on it; a p95 missing on one side only is still a failure."""
    from edgemed.bench.gate.ab import Pair, ab_checks
    from edgemed.bench.measure.stats import summarize
    from edgemed.bench.protocol import Target

    def few(r: ArtifactResult, n: int = 12) -> ArtifactResult:
        samples = r.latency.samples["answer_ms"][:n]
        r.latency = Latency(answer_ms=summarize(samples), ttft_ms=summarize(samples),
                            samples={"answer_ms": samples, "ttft_ms": samples})
        return r

    a, b = Target("baseline-q8", "/a", "gguf-q8_0", "llama.cpp"), Target("q8", "/b", "gguf-q8_0", "llama.cpp")
    rounds = [(few(_measured("baseline-q8", "gguf-q8_0", [50.0 + d] * 3)), few(_measured("q8", "gguf-q8_0",
                                                                                     [37.5 + d] * 3)))
              for d in (0.0, 1.0, -0.8)]
    pair = Pair(a, b, rounds=rounds)
    checks = {c.key: c for c in ab_checks([pair], 0.05, "A/B")}
    assert "ab:answer_p95_ms" not in checks and "fewer than 20 samples" in pair.not_compared["answer_p95_ms"]
    assert checks["ab:decode_tps"].verdict == "fail" and checks["ab:ttft_ms"].verdict == "pass"
    assert pair.to_dict()["not_compared"] == pair.not_compared
    one_side = Pair(a, b, rounds=[(_measured("baseline-q8", "gguf-q8_0", [50.0] * 3), few(r)) for _, r in rounds])
    p95 = {c.key: c for c in ab_checks([one_side], 0.05, "A/B")}["ab:answer_p95_ms"]
    assert not p95.passed and "fewer than 2 rounds measured on both sides (0 of 3)" in p95.message


def test_ab_busy_rounds_make_a_slowdown_inconclusive_only_where_the_candidates_wait_explains_it():
    from edgemed.bench.gate.ab import Pair, ab_checks
    from edgemed.bench.protocol import Target

    a, b = Target("baseline-q8", "/a", "gguf-q8_0", "llama.cpp"), Target("q8", "/b", "gguf-q8_0", "llama.cpp")

    def tg_check(a_load: dict, b_load: dict) -> str:
        rounds = [(_measured("baseline-q8", "gguf-q8_0", [50.0 + d] * 3), _measured("q8", "gguf-q8_0", [37.5 + d] * 3))
                  for d in (0.0, 1.0, -0.8)]
        for x, y in rounds:
            x.machine_load, y.machine_load = dict(a_load), dict(b_load)
        checks = {c.key: c for c in ab_checks([Pair(a, b, rounds=rounds)], 0.05, "A/B")}
        assert checks["ab:peak_rss_mb"].busy is False  # memory is no timing
        return checks["ab:decode_tps"].verdict

    busy = {"busy": True, "reason": "waited", "needed_cores": 1}
    assert tg_check(busy | {"wait_share_max": 0.6}, {}) == "fail"  # a slowed baseline only hides a slowdown
    assert tg_check({}, busy | {"wait_share_max": 0.08}) == "fail"  # 25% slower: more than 8% waiting explains
    assert tg_check({}, busy | {"wait_share_max": 0.4}) == "inconclusive"  # 40% waiting could explain it
    assert tg_check({}, {"busy": True, "reason": "capacity"}) == "inconclusive"  # no wait measured


def test_ab_kld_ratio_comes_from_both_intervals():
    from edgemed.bench.gate.ab import kld_ratio

    a = _measured("baseline-q4", "gguf-q4_k_m", [50.0] * 3, kld=(0.10, 0.09, 0.11))
    b = _measured("q4", "gguf-q4_k_m", [50.0] * 3, kld=(0.20, 0.18, 0.22))
    ratio, low, high = kld_ratio(a, b)
    assert ratio == pytest.approx(2.0) and 1.6 < low < 2.0 < high < 2.5
    assert kld_ratio(_measured("ref", "hf", [50.0] * 3, kld=(0.0, 0.0, 0.0)), b) is None  # no ratio to zero


def test_ab_pairs_by_format_and_refuses_an_unpaired_baseline():
    from edgemed.bench.gate.ab import baseline_targets, pair_targets
    from edgemed.bench.protocol import Target
    from edgemed.errors import EdgemedError

    cand = [Target("hf", "/c/hf", "hf", "transformers"), Target("gguf-q8_0", "/c/q8", "gguf-q8_0", "llama.cpp")]
    base = baseline_targets([Target("gguf-q8_0", "/b/q8", "gguf-q8_0", "llama.cpp")])
    [pair] = pair_targets(base, cand)
    assert pair.baseline.name == "baseline-gguf-q8_0" and pair.candidate.name == "gguf-q8_0"
    with pytest.raises(EdgemedError, match="none of format onnx") as info:
        pair_targets(baseline_targets([Target("onnx", "/b/onnx", "onnx", "onnxruntime")]), cand)
    assert info.value.exit_code == 2


def test_an_artifact_that_fails_a_check_is_never_the_recommendation():
    from edgemed.bench.recommend import Constraints, recommend

    small = _measured("q4", "gguf-q4_k_m", [50.0] * 3)
    big = _measured("q8", "gguf-q8_0", [50.0] * 3)
    big.memory.peak_rss_serving_bytes = 400_000_000
    assert recommend([small, big], None, Constraints())["choice"] == "q4"
    rec = recommend([small, big], None, Constraints(), {"q4": ["min_decode_tokens_per_s (fail)"]})
    assert rec["choice"] == "q8" and rec["rejected"]["q4"] == ["did not pass min_decode_tokens_per_s (fail)"]


def _doc(cpu: str = "Intel Xeon", threads: int = 2, ids: str = "abc", model: str = "SmolLM2") -> dict:
    return {"environment": {"cpu": cpu, "cpu_features": ["avx2"], "cores_physical": 2, "cores_logical": 2,
                            "ram_gb": 24.0, "machine": "x86_64"},
            "settings": {"threads": threads, "question_ids_sha256": ids, "questions": 53},
            "models": {"hf": model}}


def test_a_baseline_from_another_machine_model_or_question_set_is_named():
    from edgemed.bench.report.comparable import not_comparable

    assert not_comparable(_doc(), _doc()) == []
    [machine] = not_comparable(_doc(cpu="AMD EPYC"), _doc())
    assert machine.startswith("another machine") and "AMD EPYC" in machine and "Intel Xeon" in machine
    assert [d.split(" (")[0] for d in not_comparable(_doc(model="Qwen", ids="def", threads=1), _doc())] == [
        "other threads", "another model", "another question set"]
    old = _doc()
    del old["models"]  # a run that did not record it is not held against it
    assert not_comparable(old, _doc()) == []


def test_every_command_help_states_its_exit_codes():
    from edgemed.cli.main import COMMANDS, build_parser

    parser = build_parser()
    assert "exit codes:" in parser.format_help()
    subs = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse keeps them only here
    for name in COMMANDS:
        group, _, sub = name.partition(" ")
        p = subs[group]._subparsers._group_actions[0].choices[sub] if sub else subs[group]  # noqa: SLF001
        text = p.format_help()
        assert "exit codes:" in text and "  2    bad usage" in text and "  3    internal error" in text, name
    assert "more than --max-logit-diff" in subs["merge"].format_help()
    assert "inconclusive" in subs["bench"].format_help().split("exit codes:")[1]
    assert "no candidate meets every budget" in subs["tune"].format_help()
    one = {name: [ln for ln in subs[name].format_help().splitlines() if ln.startswith("  1    ")][0]
           for name in ("bench", "export")}  # exit 1 for an artifact that failed, said where it applies
    assert "an artifact failed to load or be measured" in one["bench"]
    assert "failed its verification" in one["export"]


def test_one_meaning_per_flag(capsys):
    from edgemed.cli.main import build_parser

    parser = build_parser()
    ns = parser.parse_args(["merge", "--tolerance", "0.01"])  # merge's old spelling: a logit difference
    assert ns.max_logit_diff == 0.01 and "--tolerance is deprecated" in capsys.readouterr().err
    bench = parser.parse_args(["bench", "x", "--max-p95-ms", "250", "--recommend-max-p95-ms", "900"])
    tune = parser.parse_args(["tune", "x", "--max-p95-ms", "250"])
    assert bench.max_p95_ms == tune.max_p95_ms == "250" and bench.recommend_max_p95_ms == "900"
    assert "budget on every artifact's p95" in parser._subparsers._group_actions[0].choices[  # noqa: SLF001
        "bench"].format_help().replace("\n", " ").replace("  ", " ")
