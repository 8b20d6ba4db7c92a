"""Budget files: parsing errors name the file, line and key (exit 2); checks name the measured value and limit."""

from __future__ import annotations

import pytest

from edgemed.bench.budget import check_budgets, load_budgets
from edgemed.bench.results import Accuracy, ArtifactResult, Failure, Latency, Memory
from edgemed.errors import EdgemedError

VALID = """\
# budgets
[default]
max_p95_latency_ms = 800
max_peak_rss_mb = 2000
min_accuracy = 0.2

[format.gguf-q4_k_m]
max_peak_rss_mb = 500
max_accuracy_drop = 0.05
"""


def result(name: str, fmt: str, acc: float, p95: float, rss_mb: float) -> ArtifactResult:
    r = ArtifactResult(name=name, path=name, format=fmt, runtime="x")
    r.accuracy = Accuracy(accuracy=acc, n=50)
    r.latency = Latency(answer_ms={"p95": p95})
    r.memory = Memory(peak_rss_sampled_bytes=int(rss_mb * 1e6))
    return r


def write(tmp_path, text: str):
    path = tmp_path / "budgets.toml"
    path.write_text(text)
    return path


def test_valid_budgets_merge_default_and_format(tmp_path):
    b = load_budgets(write(tmp_path, VALID))
    assert b.for_format("hf") == {"max_p95_latency_ms": 800, "max_peak_rss_mb": 2000, "min_accuracy": 0.2}
    q4 = b.for_format("gguf-q4_k_m")
    assert q4["max_peak_rss_mb"] == 500 and q4["max_accuracy_drop"] == 0.05 and q4["max_p95_latency_ms"] == 800
    assert b.line_of("gguf-q4_k_m", "max_peak_rss_mb") == 8 and b.line_of("gguf-q4_k_m", "min_accuracy") == 5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[default]\nmax_p95_ms = 800\n",
         r"budgets.toml:2: unknown budget key 'max_p95_ms'.*did you mean 'max_p95_latency_ms'"),
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


def test_checks_name_value_limit_and_source(tmp_path):
    b = load_budgets(write(tmp_path, VALID))
    ref = result("hf", "hf", 0.40, 700, 1500)
    q4 = result("q4", "gguf-q4_k_m", 0.30, 300, 400)
    slow = result("onnx", "onnx", 0.35, 950, 1200)
    crashed = ArtifactResult(name="bad", path="bad", format="onnx-int8", runtime="x", status="failed",
                             failure=Failure("crash", "crashed: killed by SIGSEGV"))
    checks = {(c.artifact, c.key): c for c in check_budgets(b, [ref, q4, slow, crashed], ref)}
    assert all(c.passed for k, c in checks.items() if k[0] == "hf")
    drop = checks[("q4", "max_accuracy_drop")]
    assert not drop.passed and drop.measured == pytest.approx(0.10) and drop.limit == 0.05
    assert drop.source.endswith("budgets.toml:9") and "accuracy drop vs the reference 0.100 > max_accuracy_drop 0.05" \
        in drop.message
    assert checks[("q4", "max_peak_rss_mb")].passed
    lat = checks[("onnx", "max_p95_latency_ms")]
    assert not lat.passed and "950.0 > max_p95_latency_ms 800" in lat.message
    assert not checks[("bad", "min_accuracy")].passed and "SIGSEGV" in checks[("bad", "min_accuracy")].message


def test_the_example_budgets_file_is_valid_and_uses_the_fidelity_keys():
    from pathlib import Path

    b = load_budgets(Path(__file__).resolve().parents[1] / "examples" / "budgets.toml")
    assert b.for_format("gguf-q8_0")["max_kld"] == 0.05 and b.for_format("gguf-q8_0")["min_top1_agreement"] == 0.85
    assert "max_kld" not in b.for_format("hf")


def test_a_new_metric_with_a_budget_is_one_metrics_entry_plus_the_worker_number(tmp_path, monkeypatch):
    from edgemed.bench import results
    from edgemed.bench.render import to_csv

    monkeypatch.setitem(results.METRICS, "joules", results.Metric(
        "joules", "J/answer", lambda r: r.extra.get("joules"), "min", ".2f", "max_joules", "energy per answer (J)"))
    r = result("hf", "hf", 0.5, 100, 500)
    r.extra = {"joules": 4.2}  # what the worker would report as result["extra"]["joules"]
    b = load_budgets(write(tmp_path, "[default]\nmax_joules = 3\n"))
    [check] = check_budgets(b, [r], None)
    assert not check.passed and check.message == "energy per answer (J) 4.20 > max_joules 3"
    assert "joules" in to_csv([r]).splitlines()[0] and ",4.2," in to_csv([r]).splitlines()[1]
