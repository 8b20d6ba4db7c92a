"""Budget files: parsing errors name the file, line and key (exit 2); checks are decided on the measured interval
(pass, fail, inconclusive) and name the value, its interval and the limit; suggested budgets; A/B ratios."""

from __future__ import annotations

import pytest

from edgemed.bench.gate.budget import check_budgets, load_budgets
from edgemed.bench.results import Accuracy, ArtifactResult, Failure, Latency, Memory
from edgemed.errors import EdgemedError

VALID = """\
# budgets
[default]
max_p95_ms = 800
max_peak_rss_mb = 2000
min_accuracy = 0.2

[format.gguf-q4_k_m]
max_peak_rss_mb = 500
max_accuracy_drop = 0.05
"""


def result(name: str, fmt: str, acc: float, p95: float, rss_mb: float, n: int = 50, drop: tuple | None = None,
           spread: float = 0.02) -> ArtifactResult:
    """A measured result: `n` questions (Wilson interval), 20 latency samples around `p95` (spread: relative),
    drop = (b, c) discordant counts against the reference."""
    from edgemed.bench.measure.stats import summarize
    from edgemed.evaluator.metrics import wilson_interval

    r = ArtifactResult(name=name, path=name, format=fmt, runtime="x")
    k = round(acc * n)
    lo, hi = wilson_interval(k, n)
    r.accuracy = Accuracy(accuracy=k / n, n=n, ci_low=lo, ci_high=hi)
    if drop is not None:
        b, c = drop
        r.accuracy.accuracy_diff = (c - b) / n
        r.accuracy.metrics["vs_reference"] = {"b_reference_only_correct": b, "c_this_only_correct": c, "n": n}
    samples = [p95 * (1 - spread + spread * i / 19) for i in range(20)]
    r.latency = Latency(answer_ms=summarize(samples), samples={"answer_ms": samples})
    r.memory = Memory(peak_rss_sampled_bytes=int(rss_mb * 1e6))
    return r


def write(tmp_path, text: str):
    path = tmp_path / "budgets.toml"
    path.write_text(text)
    return path


def test_valid_budgets_merge_default_and_format(tmp_path):
    b = load_budgets(write(tmp_path, VALID))
    assert b.for_format("hf") == {"max_p95_ms": 800, "max_peak_rss_mb": 2000, "min_accuracy": 0.2}
    q4 = b.for_format("gguf-q4_k_m")
    assert q4["max_peak_rss_mb"] == 500 and q4["max_accuracy_drop"] == 0.05 and q4["max_p95_ms"] == 800
    assert b.line_of("gguf-q4_k_m", "max_peak_rss_mb") == 8 and b.line_of("gguf-q4_k_m", "min_accuracy") == 5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[default]\nmax_p95_latncy_ms = 800\n",
         r"budgets.toml:2: unknown budget key 'max_p95_latncy_ms'.*did you mean 'max_p95_ms'"),
        ("[default]\nmax_p95_ms = 800\nmax_p95_latency_ms = 800\n",
         r"budgets.toml:3: \[default\] sets both 'max_p95_latency_ms' and 'max_p95_ms'"),
        ("[default]\nmin_accuracy = 0.1\n\n[format.hf]\nmax_ttft_ms = \"fast\"\n",
         r"budgets.toml:5: budget 'max_ttft_ms' in \[format.hf\] must be a number, got str"),
        ("[default]\nmin_accuracy = true\n", r"budgets.toml:2: budget 'min_accuracy' .* must be a number, got bool"),
        ("[default]\nmin_accuracy = 45\n", r"budgets.toml:2: budget 'min_accuracy' .* must be between 0 and 1"),
        ("[format.gguf-q5]\nmax_ttft_ms = 10\n", r"budgets.toml:1: unknown format 'gguf-q5'"),
        ("[defaults]\nmax_ttft_ms = 10\n", r"budgets.toml:1: unknown table or key 'defaults'.*did you mean 'default'"),
        ("[default]\nmax_ttft_ms = 10\nmin_accuracy = = 0.3\n", r"not valid TOML: .*line 3"),
        ("", r"holds no budgets"),
        ("# nothing but a comment\n", r"holds no budgets"),
        ("[default]\nmax_kld = nan\n", r"budgets.toml:2: budget 'max_kld' in \[default\] is nan"),
        ("[default]\nmax_peak_rss_mb = inf\n", r"budgets.toml:2: budget 'max_peak_rss_mb' in \[default\] is inf"),
    ],
)
def test_bad_budget_files_name_the_line(tmp_path, text, expected):
    with pytest.raises(EdgemedError, match=expected) as info:
        load_budgets(write(tmp_path, text))
    assert info.value.exit_code == 2


def test_missing_budget_file(tmp_path):
    with pytest.raises(EdgemedError, match="does not exist"):
        load_budgets(tmp_path / "nope.toml")


def test_the_old_key_spelling_is_read_with_a_warning(tmp_path, capsys):
    b = load_budgets(write(tmp_path, "[default]\nmin_accuracy = 0.1\nmax_p95_latency_ms = 700\n"))
    assert b.for_format("hf") == {"min_accuracy": 0.1, "max_p95_ms": 700} and b.line_of("hf", "max_p95_ms") == 3
    err = capsys.readouterr().err
    assert "budgets.toml:3: budget key 'max_p95_latency_ms' is deprecated" in err and "write max_p95_ms" in err


def test_checks_name_value_interval_limit_and_source(tmp_path):
    b = load_budgets(write(tmp_path, VALID))
    ref = result("hf", "hf", 0.40, 700, 1500, drop=(0, 0))
    q4 = result("q4", "gguf-q4_k_m", 0.30, 300, 400, drop=(9, 4))
    slow = result("onnx", "onnx", 0.36, 950, 1200)
    crashed = ArtifactResult(name="bad", path="bad", format="onnx-int8", runtime="x", status="failed",
                             failure=Failure("crash", "crashed: killed by SIGSEGV"))
    checks = {(c.artifact, c.key): c for c in check_budgets(b, [ref, q4, slow, crashed], ref)}
    assert all(c.passed and c.verdict == "pass" for k, c in checks.items() if k[0] == "hf")
    drop = checks[("q4", "max_accuracy_drop")]
    # 9 questions only the reference got right, 4 only q4: drop 0.10, but its paired interval reaches below 0.05
    assert drop.measured == pytest.approx(0.10) and drop.limit == 0.05 and drop.verdict == "inconclusive"
    assert drop.low < 0.05 < drop.high and not drop.passed  # not yet settled: counted as failed until a policy
    assert drop.source.endswith("budgets.toml:9") and "accuracy drop vs the reference 0.100 [" in drop.message
    assert "straddles max_accuracy_drop 0.05" in drop.message
    assert checks[("q4", "max_peak_rss_mb")].verdict == "pass" and "(single value)" in \
        checks[("q4", "max_peak_rss_mb")].message
    lat = checks[("onnx", "max_p95_ms")]
    assert lat.verdict == "fail" and lat.low > 800 and "> max_p95_ms 800" in lat.message
    assert checks[("bad", "min_accuracy")].verdict == "fail" and "SIGSEGV" in checks[("bad", "min_accuracy")].message
    assert drop.settle("pass").passed and drop.policy == "pass" and drop.verdict == "inconclusive"
    assert not lat.settle("pass").passed and lat.policy is None  # a decided verdict is not the policy's


def test_a_point_check_and_an_interval_check_disagree_where_the_noise_is():
    """A tg budget 2% under the mean: the old point check passes it; five noisy repetitions cannot tell."""
    from edgemed.bench.gate.budget import check_one

    r = result("q8", "gguf-q8_0", 0.5, 100, 100)
    r.throughput.tg = {"avg_ts": 50.0, "samples_ts": [44.0, 56.0, 47.0, 53.0, 50.0]}
    near = check_one(r, "min_decode_tokens_per_s", 49.0, "b.toml:2", None)
    assert near.verdict == "inconclusive" and near.low < 49 < near.high
    assert check_one(r, "min_decode_tokens_per_s", 40.0, "", None).verdict == "pass"
    assert check_one(r, "min_decode_tokens_per_s", 60.0, "", None).verdict == "fail"
    r.throughput.tg = {"avg_ts": 50.0, "samples_ts": [50.0]}  # one repetition: no spread, nothing decided
    one = check_one(r, "min_decode_tokens_per_s", 40.0, "", None)
    assert one.verdict == "inconclusive" and "raise --repetitions" in one.message


def test_a_busy_machine_makes_a_broken_timing_inconclusive_but_not_a_held_one():
    from edgemed.bench.gate.budget import check_one

    r = result("q8", "gguf-q8_0", 0.5, 100, 100)
    r.machine_load = {"busy": True, "reason": "other processes used 0.9 cores"}
    broken = check_one(r, "max_p95_ms", 50, "", None)
    assert broken.verdict == "inconclusive" and broken.busy and broken.rerunnable and "busy machine" in broken.message
    assert check_one(r, "max_p95_ms", 500, "", None).verdict == "pass"  # slowed by others, and still within
    assert check_one(r, "max_peak_rss_mb", 50, "", None).verdict == "fail"  # memory is not a timing


def test_a_broken_timing_beyond_what_the_load_explains_still_fails():
    """Busy, but the measurement waited for a CPU at most 10% of its runnable time: a p95 twice the limit is a
    failure no load explains; one within 10% of the limit is inconclusive; with 2 threads waiting 30% each (up to
    60% explained) even twice the limit is inconclusive."""
    from edgemed.bench.gate.budget import check_one

    r = result("q8", "gguf-q8_0", 0.5, 100, 100)
    r.machine_load = {"busy": True, "reason": "it waited for a CPU 8%", "wait_share_max": 0.10, "needed_cores": 1}
    far = check_one(r, "max_p95_ms", 50, "", None)
    assert far.verdict == "fail" and far.busy and "beyond the 10% slowdown the load explains" in far.message
    assert check_one(r, "max_p95_ms", 95, "", None).verdict == "inconclusive"
    r.machine_load.update(wait_share_max=0.30, needed_cores=2)
    assert check_one(r, "max_p95_ms", 50, "", None).verdict == "inconclusive"
    r.machine_load.update(wait_share_max=0.10, needed_cores=1, steal_fraction=0.2)  # steal: not explained by waits
    assert check_one(r, "max_p95_ms", 50, "", None).verdict == "inconclusive"


def test_budget_flags_apply_to_every_format_and_name_the_flag(tmp_path):
    from edgemed.bench.gate.budget import Budgets

    b = load_budgets(write(tmp_path, VALID))
    b.flags["max_p95_ms"] = (250.0, "--max-p95-ms")
    assert b.for_format("gguf-q4_k_m")["max_p95_ms"] == 250 and b.source_of("hf", "max_p95_ms") == "--max-p95-ms"
    only = Budgets(path="command line", flags={"max_kld": (0.1, "--max-kld")})
    assert only.for_format("onnx") == {"max_kld": 0.1}


def test_the_example_budgets_file_is_valid_and_uses_the_fidelity_keys():
    from pathlib import Path

    b = load_budgets(Path(__file__).resolve().parents[1] / "examples" / "budgets.toml")
    assert b.for_format("gguf-q8_0")["max_kld"] == 0.05 and b.for_format("gguf-q8_0")["min_top1_agreement"] == 0.85
    assert "max_kld" not in b.for_format("hf")


def test_a_new_metric_with_a_budget_is_one_metrics_entry_plus_the_worker_number(tmp_path, monkeypatch):
    from edgemed.bench import results
    from edgemed.bench.render.tables import to_csv

    monkeypatch.setitem(results.METRICS, "joules", results.Metric(
        "joules", "J/answer", lambda r: r.extra.get("joules"), "min", ".2f", "max_joules", "energy per answer (J)"))
    r = result("hf", "hf", 0.5, 100, 500)
    r.extra = {"joules": 4.2}  # what the worker would report as result["extra"]["joules"]
    b = load_budgets(write(tmp_path, "[default]\nmax_joules = 3\n"))
    [check] = check_budgets(b, [r], None)
    assert not check.passed and check.message == "energy per answer (J) 4.20 (single value) > max_joules 3"
    assert "joules" in to_csv([r]).splitlines()[0] and ",4.2," in to_csv([r]).splitlines()[1]
