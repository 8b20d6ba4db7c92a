"""One artifact, measured in its own process: ``python -m edgemed.bench.worker CONFIG.json RESULT.json``.

The parent (:mod:`edgemed.bench.run`) writes CONFIG (artifact, questions, settings), samples this
process's memory from outside and reads RESULT, written atomically at the end. Progress lines start
with ``[bench]`` on stderr. Exit codes: 0 done, 2 an EdgemedError (message on stderr), 3 any other error.

Fault injection for testing the parent's isolation (never set it otherwise): ``EDGEMED_BENCH_FAULT=KIND[:NAME],...``
with KIND ``segv`` (a real segmentation fault), ``hang`` (sleeps until killed) or ``exit`` (exit code 7),
injected right after loading the artifact named NAME (its folder name; every artifact when NAME is left out).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

FAULT_ENV = "EDGEMED_BENCH_FAULT"
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".onnx", ".onnx_data", ".onnx.data", ".bin")


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def weight_bytes(path: Path) -> int:
    """Bytes of the model's weight files (what decode reads per token, roughly), not tokenizer/config files."""
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files if p.name.endswith(WEIGHT_SUFFIXES))


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


def _peak_gpu_bytes() -> int | None:
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            return int(torch.cuda.max_memory_allocated())
    except Exception:  # noqa: BLE001 - a broken CUDA setup only loses this number
        return None
    return None


def measure_latency(runtime, prompts: list[str], repeats: int, warmup: int, gen_tokens: int) -> dict[str, Any]:
    """Answer latency (letter log-probs of one prompt) and one greedy generation per prompt, after warm-up."""
    samples: dict[str, list[float]] = {k: [] for k in (
        "answer_ms", "ttft_ms", "tpot_ms", "generate_ms", "decode_tokens_per_s", "prefill_tokens_per_s")}
    prompt_tokens: list[int] = []
    new_tokens: list[int] = []
    total = (warmup + repeats) * len(prompts)
    done = 0
    for rep in range(warmup + repeats):
        measured = rep >= warmup
        for prompt in prompts:
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
            if gen.new_tokens > 1 and gen.decode_s > 0:
                samples["tpot_ms"].append(gen.decode_s / (gen.new_tokens - 1) * 1e3)
            if gen.decode_tokens_per_s is not None:
                samples["decode_tokens_per_s"].append(gen.decode_tokens_per_s)
            if gen.prefill_tokens_per_s is not None:
                samples["prefill_tokens_per_s"].append(gen.prefill_tokens_per_s)
            prompt_tokens.append(gen.prompt_tokens)
            new_tokens.append(gen.new_tokens)
        say(f"latency {done}/{total}")
    return {
        "samples": samples,
        "prompt_tokens": sum(prompt_tokens) / len(prompt_tokens) if prompt_tokens else None,
        "new_tokens": sum(new_tokens) / len(new_tokens) if new_tokens else None,
    }


def run(config: dict[str, Any]) -> dict[str, Any]:
    from edgemed.bench.probes import rss_bytes, self_peak_rss_bytes
    from edgemed.data.medmcqa import Question
    from edgemed.prompts import get_style
    from edgemed.runtimes.base import open_runtime

    path = Path(config["artifact"])
    name = config["name"]
    questions = [Question(**{**q, "options": tuple(q["options"])}) for q in config["questions"]]
    rss_before = rss_bytes()
    say(f"load {path}")
    start = time.perf_counter()
    runtime = open_runtime(path, threads=config.get("threads"), device=config.get("device", "auto"))
    load_s = time.perf_counter() - start
    rss_after = rss_bytes()
    inject_fault(name)
    info = runtime.info()
    from edgemed.evaluator.run import evaluate, resolve_style

    style = config.get("style") or resolve_style(path, runtime)
    style = style if isinstance(style, str) else style[0]  # older evaluators returned (style, source)
    prompts = [get_style(style).prompt(q) for q in questions[: config["latency_prompts"]]]
    say(f"latency on {len(prompts)} prompts x {config['repeats']} repeats (+{config['warmup']} warm-up)")
    latency = measure_latency(runtime, prompts, config["repeats"], config["warmup"], config["gen_tokens"])

    say(f"accuracy on {len(questions)} questions")
    start = time.perf_counter()
    result = evaluate(runtime, questions, scoring="logprob", style=style,
                      batch_size=config["batch_size"], show_progress=False)
    eval_s = time.perf_counter() - start
    evaluation = result.to_dict()
    runtime.close()
    return {
        "name": name,
        "artifact": str(path),
        "load_s": load_s,
        "eval_s": eval_s,
        "runtime_info": info,
        "style": style,
        "latency": latency,
        "accuracy": {"accuracy": result.accuracy, "n": result.n, "metrics": dict(result.metrics)},
        "evaluation": evaluation,
        "predictions": list(result.predictions),
        "memory": {
            "rss_before_load_bytes": rss_before,
            "rss_after_load_bytes": rss_after,
            "self_peak_rss_bytes": self_peak_rss_bytes(),
            "peak_gpu_bytes": _peak_gpu_bytes(),
        },
        "pid": os.getpid(),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m edgemed.bench.worker CONFIG.json RESULT.json", file=sys.stderr)
        return 2
    from edgemed.errors import EdgemedError
    from edgemed.fsutil import atomic_write_json

    config = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    try:
        result = run(config)
    except EdgemedError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except Exception as exc:  # noqa: BLE001 - reported to the parent as this artifact's failure
        traceback.print_exc()
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 3
    atomic_write_json(Path(argv[1]), result)
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
