"""``BenchConfig``: every option of ``edgemed bench``, declared once.

The CLI's ``--help`` is generated from this class (its fields and the ``Args:`` section below); the parent
validates it once, and the worker receives it whole (as JSON) inside its :class:`~edgemed.bench.protocol.Job`,
as optimum-benchmark passes its ``BenchmarkConfig`` through launcher and worker.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from edgemed.errors import EdgemedError


@dataclass
class BenchConfig:
    """Benchmark artifacts, each in its own process: accuracy, fidelity (KL divergence vs the reference),
    latency, pp/tg tokens/s, peak memory, size, budgets.

    Writes OUT/bench.json (everything, with raw samples), bench.csv, bench.md (also appended to
    $GITHUB_STEP_SUMMARY) and pareto.png. Each budget is decided on its measured 95% interval: pass, fail, or
    inconclusive (the interval straddles the limit, or a timing was measured on a busy machine); a timing budget is
    decided on --timing-runs runs of the artifact, more while inconclusive (up to --retries times), and then an
    inconclusive one counts as --inconclusive says. Exit 0 when every artifact ran and
    every check held, 1 when an artifact failed to load or be measured or a budget/baseline check broke (or stayed
    inconclusive under --inconclusive fail), 2 for bad usage or input.

    Args:
        data: evaluation questions: 'sample', a local MedMCQA-schema file/folder, or a hub id (default: the
            evaluation side recorded when the artifacts were trained, the questions none of them trained on;
            the whole sample when edgemed trained none of them).
        split: split to read from a folder or hub source (default: the recorded one, else validation).
        include_trained: score questions an artifact was trained on (refused by default: they inflate accuracy).
        limit: score at most this many questions per artifact (default: all of the evaluation side).
        threads: CPU threads of every runtime (torch / onnxruntime intra-op / llama.cpp n_threads and
            n_threads_batch); default: physical cores.
        device: device of every runtime (auto, cpu, cuda); auto resolves once for all runtimes.
        dtype: weights dtype of transformers artifacts (auto: float32 on CPU, bf16/fp16 on GPU).
        wait_policy: how the engines' idle threads wait between steps: 'default' leaves each engine's own (llama.cpp's
            and torch's OpenMP threads and onnxruntime's pool spin: fastest on a quiet machine); 'passive' makes
            them sleep (OMP_WAIT_POLICY=PASSIVE, onnxruntime allow_spinning=0: robust on a busy one); 'active' spins.
        flash_attn: llama.cpp flash attention, llama-bench's -fa: auto (llama.cpp's default: on where the backend
            supports it), on or off (llama-cpp-python's own default).
        n_prompt: tokens of the prompt-processing test (pp), llama-bench's -p.
        n_gen: tokens of the generation test (tg, end-of-turn ignored), llama-bench's -n.
        repetitions: repetitions of each pp/tg test and of each latency prompt, llama-bench's -r.
        warmup: warm-up passes, not measured: before pp a whole pp run, before tg one token step (as llama-bench
            does), before the latency samples one answer of the first prompt.
        latency_prompts: MedMCQA prompts in the latency set (answer latency and TTFT samples =
            latency_prompts x repetitions; p95 is reported from 20 samples on).
        gen_tokens: at most this many tokens per timed greedy MedMCQA answer (TTFT and answer generation time;
            throughput is pp/tg's).
        batch_size: batch size for accuracy scoring.
        fidelity: measure KL divergence, top-1 agreement and perplexity against the reference artifact.
        fidelity_text: plain-text file to measure fidelity on (scored like llama-perplexity: chunks of
            --fidelity-ctx tokens, second half of each); default: the evaluation questions with their answers.
        fidelity_ctx: chunk length in tokens for --fidelity-text.
        fidelity_chunks: at most this many chunks of --fidelity-text (default: all).
        fidelity_top_k: reference log-probs stored per token (the rest kept as one 'other' mass).
        reference: artifact name or format that agreement, accuracy drop and fidelity are measured against
            (default: the hf one, else the first).
        budget: TOML budgets file ([default] and [format.NAME] tables; see examples/budgets.toml).
        max_memory: budget on every artifact's peak memory while serving, e.g. 4GB or 800MB (the budgets file's
            max_peak_rss_mb); exit 1 when one breaks it. Also constrains the recommendation.
        max_p95_ms: budget on every artifact's p95 answer latency, e.g. 800 or 800ms (the budgets file's
            max_p95_ms, tune's --max-p95-ms); exit 1 when one breaks it. Also constrains the recommendation.
        max_kld: budget on every artifact's mean KL divergence from the reference, nats per token (the budgets
            file's max_kld, tune's --max-kld); exit 1 when one breaks it. Also constrains the recommendation.
        timing_runs: runs (worker processes) per artifact that a timing budget is decided on: the bench run plus
            timing-only runs, one artifact after another; the check reads the runs' mean and its 95% t interval over
            the runs, since a fresh process can run several per cent faster or slower than the last (default: 3
            where a timing budget applies, else 1; 1 decides on one run's repetitions).
        retries: while one of an artifact's timing budgets is inconclusive (interval across the limit, or a busy
            machine), measure it in --timing-runs more runs (at least 2), pooled with the earlier ones, up to this
            many times; an inconclusive A/B ratio gets --ab-rounds more rounds.
        inconclusive: how a budget still inconclusive after --retries counts: fail (exit 1) or pass; said in the
            output.
        suggest_budgets: write a budgets TOML here from this run: each timing limit beyond the runs' mean
            (--suggest-runs) by the larger of --suggest-margin and 2 run-to-run standard deviations (other limits
            that far beyond the measured 95% interval), a comment per line saying where the number came from (use
            it as --budget later).
        suggest_margin: the least distance of a suggested limit from the runs' mean or the measured interval, e.g.
            10%.
        suggest_runs: with --suggest-budgets, measure each artifact's timings this many times in all (this run plus
            timing-only reruns): their spread is the drift between runs that one run's interval does not hold.
        ab_baseline: baseline artifacts (folders, comma-separated) measured on this runner interleaved with the
            candidates (A B, B A, ...), each paired with the candidate of its name or format; the run fails when a
            candidate's tg, pp, p95, TTFT, RSS or KLD ratio to its baseline shows a slowdown beyond --max-slowdown
            that the interval confirms.
        ab_python: the python of a second install (another venv with edgemed and its engines) that measures the
            --ab-baseline artifacts, for a change of engine or edgemed version (default: this install).
        ab_threads: CPU threads of the --ab-baseline side (default: --threads), to gate a change of thread count.
        ab_rounds: A/B round pairs (A then B) per pair of artifacts, at least 2 (more narrow the ratio's interval).
        max_slowdown: the A/B slowdown a candidate may show, relative to its baseline, e.g. 5% or 0.05.
        baseline: an earlier bench.json; latency up, throughput down or accuracy down beyond --tolerance and beyond
            the noise of the two runs' 95% intervals fails (beyond --tolerance, within the noise: inconclusive).
        tolerance: allowed relative regression against --baseline, e.g. 10% or 0.1.
        strict: exit 2 when --baseline cannot be compared with this run (measured on another machine, of another
            base model or on another question set) instead of a warning that leaves the baseline checks out.
        prefer: what the recommendation minimises among artifacts not significantly worse than the reference:
            memory (peak RSS, then latency), latency (p95, then memory) or size (on disk, then memory).
        recommend_max_memory: recommendation constraint only (never fails the run) on peak memory, e.g. 4GB.
        recommend_max_p95_ms: recommendation constraint only (never fails the run) on p95 answer latency, e.g. 800.
        recommend_max_kld: recommendation constraint only (never fails the run) on mean KL divergence (nats/token).
        recommend_min_coverage: recommendation constraint only: the artifact must answer at least this share of the
            questions at the threshold certified for --target-error (selective prediction), shown by the 95%
            interval of its coverage (an interval across the limit is not established, and counts against it).
        target_error: selective prediction: each artifact's abstention threshold is the lowest whose error among
            answered questions is certified at most this (default 0.10; bench.json rows, read by edgemed serve).
        target_coverage: selective prediction: the threshold answers this share of the questions instead (its
            error is measured, not bounded).
        profile: edge-board profiles, comma-separated (rpi4, rpi5, rpi5-4gb, jetson-orin-nano-8gb, ...): fit and
            tokens/s estimates; the first one's memory ceiling also constrains the recommendation unless
            --recommend-max-memory or --max-memory is given.
        timeout: seconds one artifact may run before it is killed and recorded as failed.
        junit: write JUnit XML here (one testcase per artifact x budget).
        resume: skip artifacts OUT/bench.json already holds, measured with the same settings.
        out: folder for bench.json, bench.csv, bench.md, pareto.png and the per-artifact logs.
    """

    data: str | None = None
    split: str | None = None
    include_trained: bool = False
    limit: int | None = None
    threads: int | None = field(default=None, metadata={"flags": ["-t"]})
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    wait_policy: Literal["default", "passive", "active"] = "default"
    flash_attn: Literal["auto", "on", "off"] = field(default="auto", metadata={"flags": ["-fa"]})
    n_prompt: int = field(default=512, metadata={"flags": ["-p"]})
    n_gen: int = field(default=128, metadata={"flags": ["-n"]})
    repetitions: int = field(default=5, metadata={"flags": ["-r"]})
    warmup: int = 1
    latency_prompts: int = 4
    gen_tokens: int = 8
    batch_size: int = 8
    fidelity: bool = True
    fidelity_text: Path | None = None
    fidelity_ctx: int = 512
    fidelity_chunks: int | None = None
    fidelity_top_k: int = 1024
    reference: str | None = None
    budget: Path | None = None
    max_memory: str | None = None
    max_p95_ms: str | None = None
    max_kld: float | None = None
    timing_runs: int | None = None
    retries: int = 2
    inconclusive: Literal["fail", "pass"] = "fail"
    suggest_budgets: Path | None = None
    suggest_margin: str = "10%"
    suggest_runs: int = 6
    ab_baseline: list[Path] | None = None
    ab_python: Path | None = None
    ab_threads: int | None = None
    ab_rounds: int = 3
    max_slowdown: str = "5%"
    baseline: Path | None = None
    tolerance: str = "10%"
    strict: bool = False
    prefer: Literal["memory", "latency", "size"] = "memory"
    recommend_max_memory: str | None = None
    recommend_max_p95_ms: str | None = None
    recommend_max_kld: float | None = None
    recommend_min_coverage: float | None = None
    target_error: float | None = None
    target_coverage: float | None = None
    profile: list[str] | None = None
    timeout: float = 1800.0
    junit: Path | None = None
    resume: bool = False
    out: Path = Path("runs/bench")

    def validate(self) -> BenchConfig:
        """Raise EdgemedError (exit 2) naming the flag for any value out of range; return self."""
        minimum = {"repetitions": 1, "warmup": 0, "latency_prompts": 1, "gen_tokens": 2, "batch_size": 1,
                   "n_prompt": 1, "n_gen": 2, "fidelity_ctx": 4, "fidelity_top_k": 1, "limit": 1, "threads": 1,
                   "fidelity_chunks": 1, "retries": 0, "ab_rounds": 2, "suggest_runs": 1, "timing_runs": 1,
                   "ab_threads": 1}
        for name, low in minimum.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise EdgemedError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
        if self.timeout is not None and not (self.timeout >= 1 and math.isfinite(self.timeout)):
            raise EdgemedError(f"--timeout must be at least 1 second (an artifact must load and answer), "
                               f"got {self.timeout}")
        for flag, kld in (("--max-kld", self.max_kld), ("--recommend-max-kld", self.recommend_max_kld)):
            if kld is not None and not (kld >= 0 and math.isfinite(kld)):
                raise EdgemedError(f"{flag} must be a non-negative number of nats, got {kld}")
        self._check_selective()
        if self.fidelity_text is not None:
            path = Path(self.fidelity_text)
            if not path.is_file():
                raise EdgemedError(f"--fidelity-text {path} is not a file; give a UTF-8 plain-text file")
            try:  # checked here, not in every artifact's worker after the reference ran
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise EdgemedError(f"--fidelity-text {path} cannot be read as UTF-8 text ({exc}); "
                                   "give a UTF-8 plain-text file") from None
            if not text.strip():
                raise EdgemedError(f"--fidelity-text {path} is empty; give a UTF-8 plain-text file with text in it")
        if self.device not in ("auto", "cpu", "mps") and not self.device.startswith("cuda"):
            raise EdgemedError(f"--device must be auto, cpu, cuda[:N] or mps, got '{self.device}'")
        return self

    def _check_selective(self) -> None:
        if self.target_error is not None and not 0 < self.target_error < 1:
            raise EdgemedError(f"--target-error is a share in (0, 1), got {self.target_error}")
        for flag, share in (("--target-coverage", self.target_coverage),
                            ("--recommend-min-coverage", self.recommend_min_coverage)):
            if share is not None and not 0 < share <= 1:
                raise EdgemedError(f"{flag} is a share in (0, 1], got {share}")
        if self.target_error is not None and self.target_coverage is not None:
            raise EdgemedError("--target-error and --target-coverage are two ways to set one threshold; give one")
        if self.recommend_min_coverage is not None and self.target_coverage is not None:
            raise EdgemedError("--recommend-min-coverage asks for a coverage at the error --target-error certifies; "
                               "--target-coverage fixes the coverage instead: drop one of them")

    @property
    def measured(self) -> dict[str, Any]:
        """The settings that change what is measured (the resume key): outputs, limits and checks excluded."""
        skip = {"timeout", "junit", "resume", "out", "budget", "baseline", "tolerance", "prefer", "max_memory",
                "max_p95_ms", "max_kld", "profile", "retries", "timing_runs", "inconclusive", "recommend_max_memory",
                "recommend_max_p95_ms", "recommend_max_kld", "recommend_min_coverage", "strict",
                "suggest_budgets", "suggest_margin", "suggest_runs", "ab_baseline", "ab_python", "ab_threads",
                "ab_rounds", "max_slowdown"}
        return {k: _plain(v) for k, v in asdict(self).items() if k not in skip}

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchConfig:
        paths = {"fidelity_text", "budget", "baseline", "junit", "out", "suggest_budgets", "ab_python"}
        known = {f.name for f in fields(cls)}
        values = {k: (Path(v) if k in paths and v is not None else v) for k, v in data.items() if k in known}
        if values.get("ab_baseline") is not None:
            values["ab_baseline"] = [Path(v) for v in values["ab_baseline"]]
        return cls(**values)


def _plain(value: Any) -> Any:
    """A setting as JSON holds it: paths as strings (also inside lists)."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value
