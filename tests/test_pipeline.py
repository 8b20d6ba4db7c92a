"""`edgemed pipeline` end to end on the tiny model: every step's output, resume, budgets."""

from __future__ import annotations

import json

import pytest

ARGS = ("--model", "tiny-random", "--max-steps", "2", "--formats", "hf,gguf-q8_0", "--limit", "6", "--repetitions", "1")


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    from conftest import run_cli

    work = tmp_path_factory.mktemp("pipeline")
    # a relative --out, as in the README's main command (subprocesses that change cwd must still find it)
    first = run_cli("pipeline", *ARGS, "--out", "run", cwd=work)
    return work / "run", first


def test_pipeline_produces_every_output(pipeline_run):
    out, first = pipeline_run
    assert first.returncode == 0, first.stderr[-3000:]
    assert (out / "train" / "adapter" / "adapter_config.json").exists()
    assert (out / "merged" / "model.safetensors").exists()
    for fmt in ("hf", "gguf-q8_0"):
        manifest = json.loads((out / "artifacts" / fmt / "edgemed.json").read_text())
        assert manifest["format"] == fmt
    for name in ("bench.json", "bench.csv", "bench.md", "pareto.png"):
        assert (out / "bench" / name).stat().st_size > 0, name
    bench = json.loads((out / "bench" / "bench.json").read_text())
    assert {a["format"] for a in bench["artifacts"]} == {"hf", "gguf-q8_0"}
    state = json.loads((out / "pipeline.json").read_text())
    assert [s["status"] for s in state["steps"].values()] == ["done"] * 4


def test_rerun_skips_finished_steps(pipeline_run, cli):
    out, _ = pipeline_run
    before = (out / "bench" / "bench.json").stat().st_mtime_ns
    again = cli("pipeline", *ARGS, "--out", out)
    assert again.returncode == 0, again.stderr[-3000:]
    for step in ("train", "merge", "export", "bench"):
        assert f"{step}: done earlier, skipped" in again.stderr
    assert (out / "bench" / "bench.json").stat().st_mtime_ns == before


def test_changed_bench_settings_rerun_only_the_bench_with_a_budget(pipeline_run, cli, tmp_path):
    out, _ = pipeline_run
    budget = tmp_path / "budget.toml"
    budget.write_text("[default]\nmax_peak_rss_mb = 1\n")  # no process fits in 1 MB
    broken = cli("pipeline", *ARGS, "--out", out, "--budget", budget)
    assert broken.returncode == 1, broken.stderr[-3000:]
    assert "train: done earlier, skipped" in broken.stderr
    assert "step 4/4: bench" in broken.stderr
    assert "max_peak_rss_mb" in broken.stdout + broken.stderr


def test_retrained_run_replaces_its_artifacts_and_benches_only_its_formats(pipeline_run, cli):
    """--force trains a new model (another seed): its artifacts replace the earlier merge's instead of failing as
    'exported from another source', and the bench measures this run's formats only, not a folder left over."""
    out, _ = pipeline_run
    old = json.loads((out / "artifacts" / "hf" / "edgemed.json").read_text())["source"]["sha256"]
    args = [a if a != "hf,gguf-q8_0" else "hf" for a in ARGS]
    again = cli("pipeline", *args, "--seed", "1", "--out", out)
    assert again.returncode == 0, again.stderr[-3000:]
    export = json.loads((out / "artifacts" / "export.json").read_text())
    assert [(r["format"], r["status"]) for r in export["results"]] == [("hf", "exported")]
    new = json.loads((out / "artifacts" / "hf" / "edgemed.json").read_text())["source"]["sha256"]
    assert new != old and new == export["source"]["sha256"]
    assert (out / "artifacts" / "gguf-q8_0").is_dir()  # the earlier run's artifact stays on disk ...
    bench = json.loads((out / "bench" / "bench.json").read_text())
    assert [a["format"] for a in bench["artifacts"]] == ["hf"]  # ... but is not benched as this run's


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--formats", "bogus"], "unknown format 'bogus'"), (["--max-steps", "0"], "--max-steps"),
     (["--budget", "EMPTY"], "holds no budgets"), (["--threads", "1000000"], "--threads 1000000"),
     (["--bench-formats", "all", "--tune", "max-kld=0.2"], "--tune has no bench step")],
)
def test_bad_settings_exit_2_before_training(cli, tmp_path, args, needle):
    (tmp_path / "empty.toml").write_text("")
    args = [str(tmp_path / "empty.toml") if a == "EMPTY" else a for a in args]
    out = tmp_path / "run"
    proc = cli("pipeline", "--model", "tiny-random", "--out", out, *args)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()


@pytest.mark.slow  # over ~20 s on 2 cores
def test_cpu_bench_leaves_out_bitsandbytes_and_says_so_unless_asked(cli, tmp_path):
    """Without a CUDA GPU the bitsandbytes formats are exported and verified but not benched (their CPU timings
    would describe bitsandbytes' fallback): bench.json, bench.md and the console say so; --bench-formats all
    measures them."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: the bench measures bitsandbytes there (this test is for CPU machines)")
    out = tmp_path / "run"
    args = [a if a != "hf,gguf-q8_0" else "hf,bnb-nf4" for a in ARGS]
    first = cli("pipeline", *args, "--out", out)
    assert first.returncode == 0, first.stderr[-3000:]
    export = json.loads((out / "artifacts" / "export.json").read_text())
    assert {(r["format"], r["status"]) for r in export["results"]} == {("hf", "exported"), ("bnb-nf4", "exported")}
    assert json.loads((out / "artifacts" / "bnb-nf4" / "edgemed.json").read_text())["status"] == "verified"
    bench = json.loads((out / "bench" / "bench.json").read_text())
    assert [a["format"] for a in bench["artifacts"]] == ["hf"]
    assert "fallback" in bench["left_out"]["bnb-nf4"]
    for page in ("bench.md", "bench.html"):
        assert "Not measured here" in (out / "bench" / page).read_text(), page
    assert "bnb-nf4: exported and verified, not benched" in first.stderr
    every = cli("pipeline", *args, "--out", out, "--bench-formats", "all")
    assert every.returncode == 0, every.stderr[-3000:]
    assert "train: done earlier, skipped" in every.stderr and "export: done earlier, skipped" in every.stderr
    bench = json.loads((out / "bench" / "bench.json").read_text())
    assert [a["format"] for a in bench["artifacts"]] == ["hf", "bnb-nf4"] and not bench["left_out"]


def test_bench_formats_must_be_exported_ones(cli, tmp_path):
    proc = cli("pipeline", "--model", "tiny-random", "--formats", "hf,gguf-q8_0", "--bench-formats", "onnx",
               "--out", tmp_path / "run")
    assert proc.returncode == 2 and "--bench-formats onnx" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
