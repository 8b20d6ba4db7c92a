#!/usr/bin/env python
"""How much does the bench harness distort what it measures? Prints two ratios (target: within 5%).

1. Decode tokens/s of one GGUF file at a fixed thread count, as `edgemed bench` reports it vs a bare
   llama-cpp-python loop (eval + argmax, nothing else) on the same prompts, tokens and settings.
2. Peak resident memory of the bench worker as the harness reports it (sampled + wait4) vs GNU
   `/usr/bin/time -v` around the very same worker command (install it with `apt-get install -y time`).

Usage:
    python scripts/bench_overhead.py /work/runs/smollm2-exports/gguf-q8_0 --threads 2 --out /tmp/overhead
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

GNU_TIME = "/usr/bin/time"


def bare_loop(gguf: str, prompts: list[str], threads: int, gen_tokens: int, repeats: int, warmup: int) -> dict:
    """Greedy decode with llama-cpp-python directly: the least a harness could do."""
    import llama_cpp
    import llama_cpp.llama_cpp as lib
    import numpy as np

    llm = llama_cpp.Llama(gguf, n_ctx=2048, n_batch=512, n_threads=threads, n_threads_batch=threads,
                          n_gpu_layers=0, logits_all=False, verbose=False)
    vocab = lib.llama_model_get_vocab(llm.model)
    n_vocab = llm.n_vocab()
    decode, new_tokens = [], []
    for rep in range(warmup + repeats):
        for prompt in prompts:
            ids = llm.tokenize(prompt.encode(), add_bos=True, special=True)
            llm.reset()
            llm.eval(ids)
            n, first = 0, None
            while True:
                logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
                token = int(np.argmax(logits))
                n += 1
                now = time.perf_counter()
                first = first if first is not None else now
                if lib.llama_vocab_is_eog(vocab, token) or n == gen_tokens:
                    break
                llm.eval([token])
            if rep >= warmup and n > 1 and now > first:
                decode.append((n - 1) / (now - first))
                new_tokens.append(n)
    return {"decode_tokens_per_s": decode, "new_tokens": new_tokens}


def max_rss_kb(time_output: str) -> int:
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_output)
    if not m:
        raise SystemExit(f"could not read GNU time's output:\n{time_output[-2000:]}")
    return int(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifact", help="a gguf-* artifact folder (or .gguf file)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--limit", type=int, default=8, help="accuracy questions in the bench run (not compared)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/edgemed-overhead"))
    ap.add_argument("--bare-json", help=argparse.SUPPRESS)  # internal: run only the bare loop, write JSON here
    args = ap.parse_args()

    from edgemed.bench.run import _questions
    from edgemed.prompts import get_style
    from edgemed.runtimes.llamacpp import gguf_file

    gguf = str(gguf_file(Path(args.artifact)))
    style = "chatml"  # SmolLM2's; what the bench resolves from the manifest / chat template (checked below)
    prompts = [get_style(style).prompt(q) for q in _questions("sample", "validation", True, 0, args.limit)]
    prompts = prompts[: args.prompts]
    if args.bare_json:
        res = bare_loop(gguf, prompts, args.threads, args.gen_tokens, args.repeats, args.warmup)
        Path(args.bare_json).write_text(json.dumps(res))
        return 0
    if not Path(GNU_TIME).exists():
        raise SystemExit(f"{GNU_TIME} not found: install GNU time (apt-get install -y time)")

    from edgemed.bench.run import run_bench

    args.out.mkdir(parents=True, exist_ok=True)
    def run_bare(tag: str) -> tuple[list[float], list[int], int]:
        """The bare loop in its own process under GNU time: (decode samples, new tokens, max RSS bytes)."""
        path = args.out / f"bare-{tag}.json"
        cmd = [GNU_TIME, "-v", sys.executable, __file__, args.artifact, "--threads", str(args.threads),
               "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--prompts", str(args.prompts),
               "--gen-tokens", str(args.gen_tokens), "--limit", str(args.limit), "--bare-json", str(path)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        res = json.loads(path.read_text())
        return res["decode_tokens_per_s"], res["new_tokens"], max_rss_kb(proc.stderr) * 1024

    # bare, harness, bare: the bare figure is the median over both runs around the harness (load drifts)
    before = run_bare("before")
    doc = run_bench([Path(args.artifact)], args.out / "bench", limit=args.limit, threads=args.threads,
                    repeats=args.repeats, warmup=args.warmup, latency_prompts=args.prompts,
                    gen_tokens=args.gen_tokens, show=False)
    after = run_bare("after")
    art = doc["artifacts"][0]
    if art["status"] != "ok":
        raise SystemExit(f"bench failed: {art['failure']}")
    assert art["runtime_info"]["prompt_style"] == style, art["runtime_info"]["prompt_style"]
    harness_tps = statistics.median(art["throughput"]["samples"]["decode_tokens_per_s"])
    bare = {"decode_tokens_per_s": before[0] + after[0], "new_tokens": before[1] + after[1]}
    bare_tps = statistics.median(bare["decode_tokens_per_s"])
    bare_rss = max(before[2], after[2])
    # 3. the same worker command under GNU time
    work = args.out / "bench" / "work"
    config = work / f"{art['name']}.config.json"
    timed = subprocess.run([GNU_TIME, "-v", sys.executable, "-m", "edgemed.bench.worker", str(config),
                            str(args.out / "timed-result.json")], capture_output=True, text=True)
    if timed.returncode != 0:
        raise SystemExit(timed.stderr[-3000:])
    time_rss = max_rss_kb(timed.stderr) * 1024
    mem = art["memory"]

    report = {
        "gguf": gguf, "threads": args.threads, "repeats": args.repeats, "prompts": len(prompts),
        "gen_tokens": args.gen_tokens,
        "decode_tokens_per_s": {"harness_median": harness_tps, "bare_median": bare_tps,
                                "ratio": harness_tps / bare_tps, "harness_samples": len(
                                    art["throughput"]["samples"]["decode_tokens_per_s"]),
                                "bare_samples": len(bare["decode_tokens_per_s"]),
                                "new_tokens_harness": art["throughput"]["new_tokens"],
                                "new_tokens_bare": statistics.mean(bare["new_tokens"]),
                                "bare_median_before": statistics.median(before[0]),
                                "bare_median_after": statistics.median(after[0])},
        "peak_rss_bytes": {"harness": mem["peak_rss_bytes"], "harness_sampled": mem["peak_rss_sampled_bytes"],
                           "harness_wait4": mem["peak_rss_os_bytes"], "gnu_time_same_worker": time_rss,
                           "ratio": mem["peak_rss_bytes"] / time_rss, "bare_loop_gnu_time": bare_rss},
    }
    (args.out / "overhead.json").write_text(json.dumps(report, indent=2))
    d, m = report["decode_tokens_per_s"], report["peak_rss_bytes"]
    print(f"GGUF {gguf}, {args.threads} threads, {len(prompts)} prompts x {args.repeats} repeats, "
          f"<= {args.gen_tokens} new tokens (mean {d['new_tokens_harness']:.1f} harness / "
          f"{d['new_tokens_bare']:.1f} bare)")
    print(f"decode tokens/s : harness {d['harness_median']:.1f}  bare llama-cpp-python {d['bare_median']:.1f} "
          f"(before {d['bare_median_before']:.1f}, after {d['bare_median_after']:.1f})  "
          f"ratio {d['ratio']:.3f}  ({'within' if abs(d['ratio'] - 1) <= 0.05 else 'OUTSIDE'} 5%)")
    print(f"peak RSS        : harness {m['harness'] / 1e6:.1f} MB (sampled {m['harness_sampled'] / 1e6:.1f}, "
          f"wait4 {m['harness_wait4'] / 1e6:.1f})  /usr/bin/time -v {m['gnu_time_same_worker'] / 1e6:.1f} MB  "
          f"ratio {m['ratio']:.3f}  ({'within' if abs(m['ratio'] - 1) <= 0.05 else 'OUTSIDE'} 5%)")
    print(f"(context: the bare loop process itself peaks at {m['bare_loop_gnu_time'] / 1e6:.1f} MB under "
          f"/usr/bin/time -v)")
    print(f"wrote {args.out / 'overhead.json'}")
    (args.out / "timed-result.json").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
