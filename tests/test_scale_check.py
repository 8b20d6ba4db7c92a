"""scripts/dev/scale_check.py (the 1B scale check) for real on the tiny model: the report, the RSS limit,
--resume; and the attribution of real memory samples to steps."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "dev" / "scale_check.py"
TINY = ("--model", "tiny-random", "--max-steps", "1", "--interval", "0.1", "--refresh", "0.05",  # short children
        "--", "--formats", "gguf-f16", "--limit", "4", "--repetitions", "1")
STEPS = ["train", "merge", "export", "bench"]


sc = load_script(SCRIPT)


def _run(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], capture_output=True, text=True,
                          timeout=600, cwd=REPO)


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("scale") / "report"
    proc = _run(out, *TINY)
    return out, proc


def test_report_of_a_full_run(scale_run):
    out, proc = scale_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "report.json").read_text())
    assert doc["status"] == "complete" and doc["exit_code"] == 0 and doc["failed_steps"] == []
    assert [s["step"] for s in doc["steps"]] == STEPS
    for step in doc["steps"]:
        assert step["passed"] is True and step["status"] == "passed" and step["measured"] == "this run", step
        assert step["peak_tree_rss_bytes"] > 0 and step["samples"] > 0 and step["wall_s"] > 0
        assert step["started_at"] <= step["ended_at"] and step["disk_bytes"] > 0
        if step["step"] in ("train", "merge"):  # both run in a fork of the pipeline process (same command line)
            assert step["processes"][0]["name"] == "edgemed pipeline", step["processes"]
    # real samples attributed by time: each step's children appear in that step only
    names = {s["step"]: {p["name"] for p in s["processes"]} for s in doc["steps"]}
    assert "bench.worker" in names["bench"] and "bench.worker" not in names["export"] | names["train"]
    assert "export.verify" in names["export"] and "export.verify" not in names["bench"]
    outside = doc["outside_steps"]["peak_tree_rss_bytes"] or 0
    assert doc["peak_tree_rss_bytes"] == max(outside, *(s["peak_tree_rss_bytes"] for s in doc["steps"]))
    assert doc["rss_within_limit"] is True and doc["rss_limit_bytes"] == 20 * 10**9
    m = doc["machine"]
    assert m["cpu"] and m["cores_logical"] >= 1 and m["ram_bytes"] > 0 and isinstance(m["isa_flags"], list)
    (fmt,) = doc["formats"]
    assert fmt["format"] == "gguf-f16" and fmt["export_status"] == "exported" and fmt["bench_status"] == "ok"
    assert fmt["size_bytes"] > 0 and fmt["tg_tps"] > 0 and fmt["pp_tps"] > 0 and fmt["export_s"] > 0
    state = json.loads((out / "pipeline" / "pipeline.json").read_text())
    assert all(state["steps"][s]["started_at"] <= state["steps"][s]["ended_at"] for s in STEPS)
    md = (out / "report.md").read_text()
    assert "| bench | passed |" in md and "## Formats" in md and "gguf-f16" in md


def test_resume_keeps_the_measurements_and_a_low_limit_exits_1(scale_run, tmp_path):
    out, first = scale_run
    assert first.returncode == 0, first.stderr[-3000:]
    before = json.loads((out / "report.json").read_text())
    limit_gb = before["peak_tree_rss_bytes"] / 2 / 1e9
    proc = _run(out, "--resume", "--max-rss-gb", str(limit_gb), *TINY)
    assert proc.returncode == 1, proc.stderr[-3000:]
    doc = json.loads((out / "report.json").read_text())
    assert doc["rss_within_limit"] is False and doc["failed_steps"] == [] and doc["pipeline_exit_code"] == 0
    assert [s["measured"] for s in doc["steps"]] == ["earlier run (--resume)"] * 4
    assert doc["peak_tree_rss_bytes"] == before["peak_tree_rss_bytes"]
    assert "ABOVE the limit" in (out / "report.md").read_text()
    if (REPO / ".venv" / "bin" / "python").exists():  # the thin entry point runs the venv's python
        wrapper = subprocess.run(["bash", str(REPO / "scripts" / "check_1b_scale.sh"), "--help"],
                                 capture_output=True, text=True, timeout=60)
        assert wrapper.returncode == 0 and "--max-rss-gb" in wrapper.stdout, wrapper.stderr


def test_attribution_of_real_samples(tmp_path):
    """A real child sampled in two windows: the 64 MB it allocates between them shows in the second window only
    (a fresh process, so no heap it freed earlier can hide the allocation)."""
    code = ("import sys, time; sys.stdin.readline(); block = b'\\x01' * (64 << 20); print('ok', flush=True); "
            "time.sleep(30)")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        monitor = sc.TreeMonitor(child.pid, refresh_s=0.05)
        monitor.sample()  # outside both windows
        time.sleep(0.06)
        a0 = time.time()
        for _ in range(3):
            monitor.sample()
            time.sleep(0.06)
        a1 = time.time()
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "ok"  # allocated and written: resident
        b0 = time.time()
        for _ in range(3):
            monitor.sample()
            time.sleep(0.06)
        b1 = time.time()
        usage, outside = sc.attribute(monitor.samples, [sc.Window("b", b0, b1), sc.Window("a", a0, a1)])
    finally:
        child.kill()
        child.wait()
    assert usage["a"].samples == 3 and usage["b"].samples == 3 and outside.samples == 1
    assert usage["b"].peak_tree_rss_bytes - usage["a"].peak_tree_rss_bytes > 60 << 20
    assert usage["b"].process_peaks[child.pid] - usage["a"].process_peaks[child.pid] > 60 << 20
    assert monitor.names[child.pid] == "python -c"


@pytest.mark.parametrize(("cmdline", "name"), [
    (["/v/bin/python", "-P", "-m", "edgemed.cli.main", "pipeline", "--out", "x"], "edgemed pipeline"),
    (["/v/bin/python", "-c", "import runpy; runpy.run_module(m)", "edgemed.bench.worker"],
     "bench.worker"),
    (["/v/bin/python", "/v/bin/edgemed", "bench", "a"], "edgemed bench"),
    (["/opt/llama/llama-quantize", "in.gguf", "out.gguf"], "llama-quantize"),
    (["python3", "-X", "utf8", "convert_hf_to_gguf.py", "m"], "convert_hf_to_gguf.py"),
    ([], "?"),
])
def test_short_names(cmdline, name):
    assert sc.short_name(cmdline) == name
