"""One artifact, measured in its own process: ``python -m edgemed.bench.worker JOB.json RESULT.json``.

The parent (:mod:`edgemed.bench.run`) writes the :class:`~edgemed.bench.protocol.Job` (config, artifact,
questions), samples this process's memory and the machine's load from outside and reads RESULT, written
atomically at the end: the :class:`~edgemed.bench.results.ArtifactResult` of what was measured in here, as its
``to_dict()``, under bench.json's own keys (the parent adds its outside measurements and renames nothing).
Phases: load, answer latency + TTFT, pp, tg, accuracy, fidelity. Progress lines start with ``[bench]`` on stderr.
Exit codes: 0 done, 2 an EdgemedError (message on stderr), 3 any other error.

Fault injection for testing the parent's isolation (never set it otherwise): ``EDGEMED_BENCH_FAULT=KIND[:NAME],...``
with KIND ``segv`` (a real segmentation fault), ``hang`` (sleeps until killed), ``exit`` (exit code 7) or
``alloc=N`` (touches N MiB, 16 MiB at a time, first making itself the OOM killer's preferred victim; it keeps the memory
and goes on when nobody kills it), injected right after loading the artifact named NAME (its folder name; every
artifact when NAME is left out).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from edgemed.bench.protocol import Job, runtime_options
from edgemed.bench.results import Accuracy, ArtifactResult, Latency, Memory, Throughput

FAULT_ENV = "EDGEMED_BENCH_FAULT"


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def inject_fault(name: str) -> None:
    faults = [spec.partition(":") for spec in os.environ.get(FAULT_ENV, "").split(",") if spec.strip()]
    kinds = [kind.strip() for kind, _, target in faults if not target or target.strip() == name]
    if not kinds:
        return
    kind = kinds[0]
    say(f"injecting fault '{kind}' ({FAULT_ENV})")
    if kind == "segv":
        import ctypes

        ctypes.string_at(0)  # reads address 0: SIGSEGV
    elif kind == "hang":
        while True:
            time.sleep(60)
    elif kind == "exit":
        os._exit(7)
    elif kind.startswith("alloc="):
        _allocate(int(kind.partition("=")[2]))


_HELD: list[bytes] = []  # what the alloc fault allocated: kept until the process ends


def _allocate(mb: int) -> None:
    """Touch `mb` MiB, a little at a time (the parent's sampler sees it grow), as the OOM killer's first choice."""
    with contextlib.suppress(OSError):  # raising one's own score needs no privilege
        Path("/proc/self/oom_score_adj").write_text("1000")
    chunk = 16
    for done in range(0, mb, chunk):
        _HELD.append(b"\x01" * (min(chunk, mb - done) << 20))
        time.sleep(0.005)
    say(f"allocated {mb} MiB and was not killed")


def _peak_gpu_bytes() -> int | None:
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            return int(torch.cuda.max_memory_allocated())
    except Exception:  # noqa: BLE001 - a broken CUDA setup only loses this number
        return None
    return None


def measure_latency(runtime, prompts: list[str], repetitions: int, warmup: int, gen_tokens: int) -> Latency:
    """Answer latency (letter log-probs of one prompt) and TTFT of one greedy answer per prompt, after `warmup`
    unmeasured answers of the first prompt (they warm the same code paths as a whole unmeasured round would)."""
    samples: dict[str, list[float]] = {k: [] for k in ("answer_ms", "ttft_ms", "generate_ms")}
    prompt_tokens: list[int] = []
    new_tokens: list[int] = []
    total = warmup + repetitions * len(prompts)
    done = 0
    rounds = [prompts[:1]] * warmup + [prompts] * repetitions
    for rep, round_prompts in enumerate(rounds):
        measured = rep >= warmup
        for prompt in round_prompts:
            start = time.perf_counter()
            runtime.letter_logprobs([prompt], batch_size=1)
            answer_s = time.perf_counter() - start
            gen = runtime.generate(prompt, max_new_tokens=gen_tokens, temperature=0.0)
            done += 1
            if not measured:
                continue
            samples["answer_ms"].append(answer_s * 1e3)
            samples["ttft_ms"].append(gen.ttft_s * 1e3)
            samples["generate_ms"].append(gen.total_s * 1e3)
            prompt_tokens.append(gen.prompt_tokens)
            new_tokens.append(gen.new_tokens)
        say(f"latency {done}/{total}")
    return Latency.from_raw({
        "samples": samples,
        "prompt_tokens": sum(prompt_tokens) / len(prompt_tokens) if prompt_tokens else None,
        "new_tokens": sum(new_tokens) / len(new_tokens) if new_tokens else None,
    })


class Phases:
    """Wall seconds per phase of the worker, each measured from the end of the one before."""

    def __init__(self, **done: float):
        self.seconds = dict(done)
        self._clock = time.perf_counter()

    def end(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = now - self._clock
        self._clock = now


def run(job: Job) -> ArtifactResult:
    """Load the artifact, time serving it (latency, pp, tg), then score it (fidelity and accuracy in one pass).
    The result holds what this process measured; what only the parent can see stays at its defaults."""
    from edgemed.bench.artifacts import path_from_run
    from edgemed.data.medmcqa import Question
    from edgemed.process.probes import rss_bytes, self_peak_rss_bytes
    from edgemed.runtimes.base import open_runtime

    config, target = job.config, job.target
    path = Path(target.path)
    questions = [Question(**{**q, "options": tuple(q["options"])}) for q in job.questions]
    rss_before = rss_bytes()
    say(f"load {path}")
    import psutil

    startup_s = time.time() - psutil.Process().create_time()  # interpreter, imports, job: before the load
    start = time.perf_counter()
    runtime = open_runtime(path, threads=job.threads, device=job.device, requested_device=config.device,
                           **runtime_options(config))
    phases = Phases(startup=startup_s, load=time.perf_counter() - start)
    rss_after = rss_bytes()
    inject_fault(target.name)
    info = {**runtime.info(), "env_set_by_bench": job.env}
    from edgemed.lineage import prompt_style_for

    style, style_source = prompt_style_for(path, runtime.chat_template)
    info.update(prompt_style=style, prompt_style_source=style_source)
    latency, served = _serve(runtime, config, questions, style, phases)
    serving_peak = self_peak_rss_bytes()  # before scoring and fidelity buffers, which serving never needs
    extra: dict = {}
    if job.timing_only:  # an A/B round: the scores come from the artifact's one full measurement
        fid, accuracy, predictions, eval_s = None, Accuracy(), [], None
    else:
        fid, evaluation, eval_s = _score(job, runtime, questions, style, phases)
        accuracy, predictions = Accuracy.from_evaluation(evaluation.to_dict()), list(evaluation.predictions)
        from edgemed.evaluator.selective import bench_numbers

        extra = bench_numbers(predictions, config.target_error, config.target_coverage, path)  # AURC, threshold, sha256
    runtime.close()
    return ArtifactResult(
        name=target.name, path=path_from_run(path, Path(config.out)), format=target.format, runtime=target.runtime,
        load_s=phases.seconds["load"], eval_s=eval_s, accuracy=accuracy,
        latency=latency, throughput=served, fidelity=fid, runtime_info=info,
        predictions=predictions, phases_s=phases.seconds, extra=extra,
        memory=Memory(rss_before_load_bytes=rss_before, rss_after_load_bytes=rss_after,
                      peak_rss_serving_bytes=serving_peak, peak_rss_self_bytes=self_peak_rss_bytes(),
                      peak_gpu_bytes=_peak_gpu_bytes()),
    )


def _serve(runtime, config, questions, style: str, phases: Phases) -> tuple[Latency, Throughput]:
    """Answer latency and TTFT on MedMCQA prompts, then llama-bench's pp and tg."""
    from edgemed.bench.measure import throughput
    from edgemed.prompts import get_style

    ctx = runtime.context_length
    if ctx and max(config.n_prompt + 1, config.n_gen + 1) > ctx:
        from edgemed.errors import EdgemedError

        raise EdgemedError(f"-p/--n-prompt {config.n_prompt} or -n/--n-gen {config.n_gen} does not fit this "
                           f"runtime's context of {ctx} tokens; lower them")
    prompts = []
    for q in questions:  # a question longer than the context is skipped (the accuracy pass counts it), not timed
        prompt = get_style(style).prompt(q)
        if not ctx or len(runtime.tokenize(prompt)) + config.gen_tokens <= ctx:
            prompts.append(prompt)
        if len(prompts) == config.latency_prompts:
            break
    say(f"latency on {len(prompts)} prompts x {config.repetitions} repetitions (+{config.warmup} warm-up)")
    latency = measure_latency(runtime, prompts, config.repetitions, config.warmup, config.gen_tokens)
    phases.end("latency")
    say(f"pp{config.n_prompt} x {config.repetitions}")
    pp = throughput.prompt_processing(runtime, config.n_prompt, config.repetitions, config.warmup)
    phases.end("pp")
    say(f"tg{config.n_gen} x {config.repetitions}")
    tg = throughput.text_generation(runtime, config.n_gen, config.repetitions, config.warmup)
    phases.end("tg")
    return latency, Throughput(pp=pp, tg=tg)


def _score(job: Job, runtime, questions, style: str, phases: Phases):
    """(fidelity, EvalResult, eval seconds): accuracy reads its letters from the fidelity pass where it can."""
    from edgemed.evaluator.run import evaluate

    letters: dict[str, Any] = {}
    fid = _fidelity(job, runtime, questions, style, letters)
    phases.end("fidelity")
    say(f"accuracy on {len(questions)} questions ({len(letters)} read from the fidelity pass)")
    start = time.perf_counter()
    result = evaluate(runtime, questions, scoring="logprob", style=style,
                      batch_size=job.config.batch_size, show_progress=False, letter_rows=letters)
    eval_s = time.perf_counter() - start
    phases.end("accuracy")
    return fid, result, eval_s


def _fidelity(job: Job, runtime, questions, style: str, letters: dict[str, Any]) -> dict[str, Any] | None:
    """Store the reference's log-probs (reference job; its own summary comes from that pass), else compare this
    runtime with them. Each question's letter log-probs are read from its sequence into `letters` (by id), so that
    accuracy needs no second forward pass."""
    from edgemed.bench.measure import fidelity

    if not job.config.fidelity or job.fidelity_dir is None:
        return None
    folder = Path(job.fidelity_dir)
    start = time.perf_counter()
    if job.is_reference:
        seqs = fidelity.build_sequences(runtime, job.config, questions, style)
        say(f"fidelity: storing the reference's top-{job.config.fidelity_top_k} log-probs of {len(seqs)} sequences")
        out = fidelity.save_reference(runtime, seqs, folder, job.config.fidelity_top_k,
                                      on_rows=letter_tap(runtime, questions, style, seqs, letters))["self"]
    elif not (folder / fidelity.META).is_file():
        return None  # the reference did not run: nothing to compare with
    else:
        say("fidelity: KL divergence against the reference")
        tap = letter_tap(runtime, questions, style, fidelity.reference_sequences(folder), letters)
        out = fidelity.compare_with_reference(runtime, folder, on_rows=tap)
    out["seconds"] = time.perf_counter() - start
    out["letter_rows_read"] = len(letters)
    return out


def letter_tap(runtime, questions, style: str, seqs, letters: dict[str, Any]):
    """A callback for the fidelity pass that keeps, per question, the letter log-probs at the row after its prompt,
    where this runtime's own tokens of the prompt are exactly the sequence's first tokens (else eval scores it
    apart)."""
    from edgemed.prompts import get_style

    st = get_style(style)
    by_id = {q.id: q for q in questions}
    plan = {}
    if not getattr(runtime, "rows_independent", True):  # rows depend on the answer after them
        seqs = []
    for n, s in enumerate(seqs):
        q = by_id.get(s.question)
        if q is not None and s.answer_row is not None and runtime.tokenize(st.prompt(q)) == s.ids[: s.answer_row + 1]:
            plan[n] = (q.id, s.answer_row)
    letter_ids = runtime.letter_ids

    def on_rows(n: int, lp) -> None:
        if n in plan:
            qid, row = plan[n]
            letters[qid] = lp[row, letter_ids]

    return on_rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m edgemed.bench.worker JOB.json RESULT.json", file=sys.stderr)
        return 2
    from edgemed.errors import EdgemedError
    from edgemed.fsutil import atomic_write_json

    try:
        result = run(Job.read(Path(argv[0])))
    except EdgemedError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except Exception as exc:  # noqa: BLE001 - reported to the parent as this artifact's failure
        traceback.print_exc()
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 3
    atomic_write_json(Path(argv[1]), result.to_dict())
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
