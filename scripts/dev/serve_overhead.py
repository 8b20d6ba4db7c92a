#!/usr/bin/env python
"""Serving overhead at concurrency 1: edgemed serve against the bench's own measurement of the same file.

Each pair, in alternating order (interleaved A/B on a noisy shared CPU):
- bench: a fresh process opens the artifact with the runtime the bench uses and times ``Runtime.generate`` on the
  prompt (the bench's TTFT measurement) and the bench's tg (``bench.throughput.text_generation``, llama-bench's tg);
- serve: one streamed /v1/completions request with the same prompt text, greedy, to an ``edgemed serve`` of the
  same file with the same threads; TTFT = request sent -> first text chunk, tg = (chunks - 1) / (last - first).
Optionally the same request to ``python -m llama_cpp.server`` (llama-cpp-python[server]) on the same file.
Prints the median of each figure and the serve/bench ratios; --json writes them.

Usage:
    python scripts/dev/serve_overhead.py runs/pipeline/artifacts/gguf-q4_k_m --pairs 5 --threads 2 [--llama-cpp-server]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_CHILD = r"""
import json, sys, time
from edgemed.runtimes.base import open_runtime
from bench.throughput import text_generation
path, threads, prompt, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
with open_runtime(path, threads=threads) as rt:
    rt.generate(prompt, max_new_tokens=2)  # warm-up, as the bench's
    g = rt.generate(prompt, max_new_tokens=n, temperature=0.0)
    tg = text_generation(rt, n, 1, 1)
decode = (g.new_tokens - 1) / g.decode_s if g.new_tokens > 1 and g.decode_s > 0 else None
print(json.dumps({"ttft_ms": g.ttft_s * 1e3, "decode_tps": decode, "new_tokens": g.new_tokens,
                  "tg_tps": tg["avg_ts"]}))
"""


def bench_once(artifact: str, threads: int, prompt: str, n: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", BENCH_CHILD, artifact, str(threads), prompt, str(n)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


_CLIENT = None


def serve_once(base: str, model: str, prompt: str, n: int) -> dict:
    """One streamed request on a kept-alive client (a new httpx client per request would time its SSL context)."""
    global _CLIENT
    import httpx

    _CLIENT = _CLIENT or httpx.Client(timeout=300)
    stamps = []
    start = time.perf_counter()
    with _CLIENT.stream("POST", f"{base}/completions", json={"model": model, "prompt": prompt, "max_tokens": n,
                                                             "temperature": 0, "stream": True}) as r:
        for line in r.iter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if any(c.get("text") for c in chunk.get("choices") or []):
                stamps.append(time.perf_counter())
    ttft = (stamps[0] - start) * 1e3 if stamps else None
    tps = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None
    return {"ttft_ms": ttft, "decode_tps": tps, "chunks": len(stamps)}


def start_server(cmd: list[str], ready: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if ready in line:
            return proc, line
    raise SystemExit(f"server did not start: {cmd}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifact")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--llama-cpp-server", action="store_true", help="also time llama-cpp-python[server]")
    ap.add_argument("--prompt", default="The history of medicine begins with",
                    help="raw text both sides continue (a MedMCQA chat prompt ends after a few tokens)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    prompt = args.prompt
    proc, line = start_server([sys.executable, "-m", "edgemed.cli.main", "serve", f"m={args.artifact}", "--port",
                               "0", "--threads", str(args.threads)], "listening on")
    base = line.split("listening on ")[1].split()[0]
    others = []
    if args.llama_cpp_server:
        from edgemed.runtimes.llamacpp import gguf_file

        model_file = str(gguf_file(Path(args.artifact)))
        lproc, _ = start_server([sys.executable, "-m", "llama_cpp.server", "--model", model_file, "--port", "8765",
                                 "--n_threads", str(args.threads), "--n_ctx", "2048"], "Uvicorn running")
        others.append(lproc)
    import httpx

    rows = {"bench": [], "serve": [], "llama_cpp_server": []}
    try:
        serve_once(base, "m", prompt, 4)  # warm-up
        for i in range(args.pairs):
            order = ("bench", "serve") if i % 2 == 0 else ("serve", "bench")
            for side in order:
                if side == "bench":
                    rows["bench"].append(bench_once(args.artifact, args.threads, prompt, args.tokens))
                else:
                    rows["serve"].append(serve_once(base, "m", prompt, args.tokens))
            if others and others[0].poll() is None:
                try:
                    rows["llama_cpp_server"].append(serve_once("http://127.0.0.1:8765/v1", "m", prompt, args.tokens))
                except httpx.HTTPError as exc:  # its process died under the request: say how
                    code = others[0].wait(30)
                    print(f"llama-cpp-python's server failed ({type(exc).__name__}); its process exited {code}"
                          " (-11: SIGSEGV, llama.cpp's weight repacking on an AMX CPU with a quantized file, which "
                          "edgemed's runtime turns off)", flush=True)
            print(f"pair {i + 1}: " + json.dumps({k: v[-1] for k, v in rows.items() if v}), flush=True)
    finally:
        for p in [proc, *others]:
            p.terminate()
            p.wait(60)

    def med(side, key):
        vals = [r[key] for r in rows[side] if isinstance(r.get(key), int | float)]
        return statistics.median(vals) if vals else None

    summary = {side: {k: med(side, k) for k in ("ttft_ms", "decode_tps")} for side in rows if rows[side]}
    summary["bench"]["tg_tps"] = med("bench", "tg_tps")
    summary["ratios"] = {"serve_ttft_over_bench": summary["serve"]["ttft_ms"] / summary["bench"]["ttft_ms"],
                         "serve_decode_over_bench_decode": summary["serve"]["decode_tps"]
                         / summary["bench"]["decode_tps"]}
    if summary["bench"]["tg_tps"]:
        summary["ratios"]["serve_decode_over_bench_tg"] = summary["serve"]["decode_tps"] / summary["bench"]["tg_tps"]
    from edgemed.sysinfo import cpu_model

    summary.update(pairs=args.pairs, tokens=args.tokens, threads=args.threads, cpu=cpu_model(),
                   omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "unset"), load_avg=os.getloadavg(), raw=rows)
    print(json.dumps({k: v for k, v in summary.items() if k != "raw"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
