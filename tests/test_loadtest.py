"""edgemed loadtest against a real edgemed serve on loopback: the sweep's fields, the files, budgets exit 1."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("httpx", reason="the serve extra is not installed (pip install edgemed[serve])")
pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install edgemed[serve])")


@pytest.fixture(scope="module")
def served(request):
    from tests.test_serve import Server, tiny_gguf

    s = Server(f"tiny={tiny_gguf(request)}", "--queue-size", "1", "--threads", "1")
    yield s
    assert s.stop() == 0


def test_sweep_writes_the_table_and_budgets_exit_1(served, tmp_path, cli):
    out = tmp_path / "lt"
    proc = cli("loadtest", served.root, "--concurrency", "1,3", "--requests", "4", "--max-tokens", "8",
               "--max-error-rate", "1", "--out", out, "--no-progress", timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "loadtest.json").read_text())
    one, three = doc["levels"]
    assert doc["server"]["model"] == "tiny" and one["concurrency"] == 1 and three["concurrency"] == 3
    assert one["requests"] == 4 and one["ok"] == 4 and one["error_rate"] == 0
    assert one["output_tokens"] <= 4 * 8 and one["tokens_counted_by"] == ["usage"]
    assert one["ttft_p50_ms"] > 0 and one["itl_p50_ms"] > 0 and one["requests_per_s"] > 0
    # queue 1 + 1 running < 3 clients: some of level 3's requests may be refused, each counted as an error
    assert three["ok"] + three["rejected_429"] == 4
    assert "| conc | req |" in (out / "loadtest.md").read_text() and "conc" in proc.stdout
    broken = cli("loadtest", served.root, "--concurrency", "1", "--requests", "2", "--max-tokens", "4",
                 "--min-output-tokens-per-s", "1e9", "--no-progress", timeout=300)
    assert broken.returncode == 1 and "budget broken" in broken.stdout


def test_no_server_is_exit_2(cli):
    proc = cli("loadtest", "http://127.0.0.1:9", "--no-progress", timeout=60)
    assert proc.returncode == 2 and "no OpenAI-compatible server" in proc.stderr
