"""``edgemed bench``: accuracy, latency, throughput, memory and size of exported artifacts, side by side."""

from __future__ import annotations

from pathlib import Path


def bench(
    artifacts: list[Path],
    data: str = "sample",
    limit: int | None = None,
    threads: int | None = None,
    repeats: int = 5,
    warmup: int = 1,
    out: Path = Path("runs/bench"),
    reference: str | None = None,
    budget: Path | None = None,
    baseline: Path | None = None,
    tolerance: str = "10%",
    max_memory: str | None = None,
    max_p95_ms: str | None = None,
    profile: list[str] | None = None,
    timeout: float = 1800.0,
    junit: Path | None = None,
    resume: bool = False,
    split: str = "validation",
    held_out: bool = True,
    seed: int = 0,
    latency_prompts: int = 4,
    gen_tokens: int = 32,
    batch_size: int = 8,
    device: str = "auto",
) -> int:
    """Benchmark artifacts, each in its own process: accuracy, latency, tokens/s, peak memory, size, budgets.

    Writes OUT/bench.json (everything, with raw samples), bench.csv, bench.md (also appended to
    $GITHUB_STEP_SUMMARY) and pareto.png. Exit 0 when every artifact ran and every budget held, 1 when an
    artifact failed or a budget/baseline check broke, 2 for bad usage or input.

    Args:
        artifacts: artifact folders (with edgemed.json) or folders holding them, e.g. runs/pipeline/artifacts.
        data: evaluation questions: 'sample', a local MedMCQA-schema file/folder, or a hub id.
        limit: score at most this many questions per artifact (default: all of the held-out side).
        threads: CPU threads for every runtime (torch / onnxruntime intra-op / llama.cpp n_threads);
            default: physical cores.
        repeats: latency repeats per prompt after warm-up.
        warmup: warm-up passes over the latency prompts (not measured).
        out: folder for bench.json, bench.csv, bench.md, pareto.png and the per-artifact logs.
        reference: artifact name or format that agreement and accuracy drop are measured against
            (default: the hf one, else the first).
        budget: TOML budgets file ([default] and [format.NAME] tables; see examples/budgets.toml).
        baseline: an earlier bench.json; latency up, throughput down or accuracy down beyond --tolerance fails.
        tolerance: allowed relative regression against --baseline, e.g. 10% or 0.1.
        max_memory: recommendation constraint on peak memory, e.g. 4GB or 800MB.
        max_p95_ms: recommendation constraint on p95 answer latency, e.g. 800 or 800ms.
        profile: edge-board profiles (rpi4, rpi5, rpi5-4gb, jetson-orin-nano-8gb, ...): fit and tokens/s estimates;
            the first one's memory ceiling also constrains the recommendation unless --max-memory is given.
        timeout: seconds one artifact may run before it is killed and recorded as failed.
        junit: write JUnit XML here (one testcase per artifact x budget).
        resume: skip artifacts OUT/bench.json already holds, measured with the same settings.
        split: split to read from a folder or hub source (validation, train, ...).
        held_out: use only the held-out side of the seeded 80/20 split (on for the training data;
            off for a separate evaluation file).
        seed: seed of the held-out split.
        latency_prompts: how many of the first questions' prompts the latency set uses.
        gen_tokens: tokens generated per timed greedy generation (TTFT, TPOT, decode tokens/s).
        batch_size: batch size for accuracy scoring.
        device: device for runtimes that have a choice (auto, cpu, cuda).
    """
    from edgemed.bench.run import run_bench

    doc = run_bench(
        artifacts, out, data=data, limit=limit, threads=threads, repeats=repeats, warmup=warmup, budget=budget,
        split=split, held_out=held_out, seed=seed, latency_prompts=latency_prompts, gen_tokens=gen_tokens,
        batch_size=batch_size, device=device, reference=reference, baseline=baseline, tolerance=tolerance,
        max_memory=max_memory, max_p95_ms=max_p95_ms, profiles=profile, timeout=timeout, junit=junit,
        resume=resume,
    )
    return int(doc["exit_code"])
