#!/usr/bin/env python
"""Serving overhead at concurrency 1: `edgemed serve` (and llama-cpp-python's server) against `edgemed bench`'s own
TTFT and tg figures on the same GGUF file, threads and settings, in interleaved rounds on a shared CPU.

Each round runs every side once, in an order that rotates from round to round:
- bench: the real `edgemed bench ARTIFACT` command (a fresh process, as a user runs it), its bench.json read for
  the TTFT (median over the MedMCQA latency prompts x -r) and tg (llama-bench's tg: -n tokens, mean over -r);
- serve: `edgemed serve` of the same file and threads, started afresh in every round (its startup time kept) and
  stopped after it, as bench starts a fresh worker: the speed of a llama.cpp process drifts from one process to
  the next (about 10% here), so one long-lived server would be one draw against bench's several. TTFT = request
  sent -> first streamed token over the same MedMCQA prompts (rendered as bench renders them, checked by question
  id and by the served prompt's token count, sent to /v1/completions), the same number of samples, each right
  after /v1/mcq on the same question, as bench times each TTFT right after its letter scoring of that prompt;
  tg = streamed tokens / the time from sending the request to the last token (llama-bench's tg from a one-token
  prompt, here with the request in it), mean over -r greedy generations of -n tokens;
- llama-cpp-python (--llama-cpp-python PY: the python of a venv with llama-cpp-python[server]): its server on the
  same .gguf, the same threads, n_ctx, n_batch and flash attention as edgemed's runtime, and llama.cpp's weight
  repacking set as edgemed's runtime sets it (read from the served model's runtime info: off on AMX CPUs for
  quantized files, where repacking crashes the first decode with SIGILL), measured like serve, also afresh in
  every round, with a one-token request of an unrelated prompt (not timed) before each timed TTFT request instead
  of /v1/mcq, so that it does not reuse the previous prompt's KV cache (it keeps the longest common prefix;
  edgemed's runtime always prefills the whole prompt, as bench does).
The CPU time per generated token of each server's processes (edgemed serve: HTTP and engine apart) is kept too.

Per round the ratios side/bench (TTFT: higher is worse; tg: lower is worse); the verdict is on their medians over
the rounds (--pairs, at least 5): overhead within --tolerance (default 10%). Writes overhead.json and overhead.md
(--out) with the command, CPU model and flags, load averages and every sample; exit 1 when edgemed serve's median
overhead is beyond the tolerance, 0 otherwise.

Usage (about 5 minutes per thread count for 5 rounds with llama-cpp-python on a quiet 2-core box: each round
runs bench once and starts every server once; overhead.json keeps each side's wall seconds to plan a window):
    python scripts/dev/serve_overhead.py runs/pipeline/artifacts/gguf-q4_k_m --threads 1,2 --pairs 5 \\
        --llama-cpp-python /work/lcpserver/bin/python --out runs/serve-overhead
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESET_PROMPT = "Zebra"  # shares no first token with a chat-template prompt
TG_PROMPT = "Medicine"  # one token, as llama-bench's tg starts from one; greedy, it runs 64 tokens before an end
# llama-cpp-python's server with llama.cpp's weight repacking (use_extra_bufts) set as EDGEMED_REPACK says: the
# same switch edgemed's llama.cpp runtime sets through llama_model_default_params (its server has no flag for it).
LCP_LAUNCHER = """
import os, sys
import llama_cpp.llama_cpp as lib
_default = lib.llama_model_default_params
def _params():
    p = _default()
    p.use_extra_bufts = os.environ["EDGEMED_REPACK"] == "1"
    return p
lib.llama_model_default_params = _params
from llama_cpp.server.__main__ import main
sys.argv[0] = "llama_cpp.server"
main()
"""


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def start_server(cmd: list[str], ready: str, env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    """Start a server; return it and its line announcing the address (output also goes to `log`)."""
    out = open(log, "w")  # noqa: SIM115 - held for the server's life
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 600
    for line in proc.stdout:
        out.write(line)
        out.flush()
        if ready in line:
            import threading

            threading.Thread(target=lambda: [out.write(x) for x in proc.stdout], daemon=True).start()
            return proc, line
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit(f"server did not start ({' '.join(cmd[:6])} ...); see {log}")


def stream(client, base: str, model: str, prompt: str, max_tokens: int) -> dict:
    """One streamed greedy completion: TTFT (ms); tokens / (last token - request sent), llama-bench's tg measured
    from the request (robust to chunks that arrive together); and the rate between the first and the last token."""
    stamps = []
    start = time.perf_counter()
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    with client.stream("POST", f"{base}/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if any(c.get("text") for c in chunk.get("choices") or []):
                stamps.append(time.perf_counter())
    return {"ttft_ms": (stamps[0] - start) * 1e3 if stamps else None, "tokens": len(stamps),

            "tg_tps": len(stamps) / (stamps[-1] - start) if stamps else None,
            "decode_tps": (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 2 else None}


def cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def http_side(client, base: str, model: str, work: list[dict], args, pids: dict[str, list[int]],
              mcq: bool) -> dict:
    """TTFT over the bench's prompts, then tg over -r generations; and CPU time per generated token of each group
    of the server's processes (where the overhead goes). Before each timed TTFT request the engine does what bench's
    latency loop does before its TTFT: the letter scoring of the same question (`mcq`: edgemed's /v1/mcq), or, on a
    server without it, an untimed one-token request with an unrelated prompt (so no prompt cache is reused)."""
    ttft = []
    for _ in range(args.repetitions):
        for item in work:
            if mcq:
                r = client.post(f"{base}/mcq", json={"model": model, "question": item["question"],
                                                      "options": item["options"]})
                r.raise_for_status()
            else:
                stream(client, base, model, RESET_PROMPT, 1)
            ttft.append(stream(client, base, model, item["prompt"], args.gen_tokens)["ttft_ms"])
    cpu0 = {k: cpu_seconds(v) for k, v in pids.items()}
    gens = [stream(client, base, model, TG_PROMPT, args.n_gen) for _ in range(args.repetitions)]
    tokens = max(sum(g["tokens"] for g in gens), 1)
    return {"ttft_ms": statistics.median(t for t in ttft if t is not None),
            "tg_tps": statistics.fmean(g["tg_tps"] for g in gens if g["tg_tps"]),
            "decode_tps": statistics.fmean(g["decode_tps"] for g in gens if g["decode_tps"]),
            "tg_tokens": [g["tokens"] for g in gens], "ttft_samples_ms": ttft,
            "cpu_ms_per_token": {k: (cpu_seconds(v) - cpu0[k]) * 1e3 / tokens for k, v in pids.items()}}


def bench_side(args, threads: int, work: Path, i: int) -> dict:
    out = work / f"bench-t{threads}-{i}"
    cmd = [sys.executable, "-m", "edgemed.cli.main", "bench", args.artifact, "--threads", str(threads),
           "-n", str(args.n_gen), "-p", str(args.n_prompt), "-r", str(args.repetitions),
           "--latency-prompts", str(args.latency_prompts), "--gen-tokens", str(args.gen_tokens),
           "--limit", str(args.latency_prompts), "--no-fidelity", "--wait-policy", args.wait_policy,
           "--inconclusive", "pass", "--retries", "0", "--timing-runs", "1",  # one worker process: one draw
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"edgemed bench failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    doc = json.loads((out / "bench.json").read_text())
    row = doc["artifacts"][0]
    return {"ttft_ms": row["latency"]["ttft_ms"]["median"], "tg_tps": row["throughput"]["tg"]["avg_ts"],
            "prompt_tokens": row["latency"].get("prompt_tokens"), "busy": row["machine_load"].get("busy"),
            "doc": doc}


def bench_prompts(args, doc: dict) -> list[dict]:
    """The MedMCQA questions bench timed TTFT on (checked by id) and their prompts in its prompt style."""
    from edgemed.data.medmcqa import LETTERS
    from edgemed.lineage import read_lineage, scoring_questions
    from edgemed.prompts import get_style

    row = doc["artifacts"][0]
    questions, _ = scoring_questions(None, None, {row["name"]: read_lineage(Path(args.artifact))},
                                     limit=args.latency_prompts)
    ids = [q["id"] for q in doc["questions"][:args.latency_prompts]]
    if [q.id for q in questions] != ids:
        raise SystemExit(f"the questions differ from bench's ({ids}); cannot time the same prompts")
    style = get_style(row["runtime_info"]["prompt_style"])
    return [{"id": q.id, "prompt": style.prompt(q), "question": q.question,
             "options": dict(zip(LETTERS, q.options, strict=True))} for q in questions]


def env_for(args) -> dict:
    env = {**os.environ}
    if args.wait_policy != "default":
        env["OMP_WAIT_POLICY"] = args.wait_policy.upper()
    return env


class Side:
    """One server side, started fresh for every round (a process's own speed drifts between processes, as
    bench's fresh worker per round samples it) and stopped after it."""

    def __init__(self, name: str, args, threads: int, work: Path):
        self.name, self.args, self.threads, self.work = name, args, threads, work

    def command(self, runtime: dict) -> tuple[list[str], str, dict]:
        args, env = self.args, env_for(self.args)
        if self.name.startswith("serve"):
            return ([sys.executable, "-m", "edgemed.cli.main", "serve", f"m={args.artifact}", "--port", "0",
                     "--threads", str(self.threads), "--wait-policy", args.wait_policy], "listening on", env)
        from edgemed.runtimes.llamacpp import gguf_file

        return ([args.llama_cpp_python, "-c", LCP_LAUNCHER, "--model", str(gguf_file(Path(args.artifact))),
                 "--model_alias", "m", "--port", str(args.lcp_port), "--n_threads", str(self.threads),
                 "--n_threads_batch", str(self.threads), "--n_ctx", str(runtime.get("n_ctx") or 2048),
                 "--n_batch", "512", "--flash_attn",
                 "true" if str(runtime.get("flash_attn")).endswith("on") else "false"],
                "Uvicorn running", {**env, "EDGEMED_REPACK": "1" if runtime.get("repack") else "0"})

    def measure(self, client, work: list[dict], runtime: dict, i: int) -> tuple[dict, dict]:
        """(this round's result, the served model's runtime info): start, warm up, measure, stop."""
        import psutil

        cmd, ready, env = self.command(runtime)
        started = time.perf_counter()
        proc, line = start_server(cmd, ready, env, self.work / f"{self.name}-t{self.threads}-{i}.log")
        startup_s = time.perf_counter() - started
        try:
            if self.name.startswith("serve"):
                base = line.split("listening on ")[1].split()[0]
                runtime = client.get(f"{base}/models").json()["data"][0]["edgemed"].get("runtime_info") or {}
                kids = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)
                        if "resource_tracker" not in " ".join(c.cmdline())]
                pids = {"http": [proc.pid], "engine": kids}
                if self.name == "serve_batch_http":  # its HTTP process (not its engine) runs SCHED_BATCH
                    for t in psutil.Process(proc.pid).threads():
                        os.sched_setscheduler(t.id, os.SCHED_BATCH, os.sched_param(0))
            else:
                base, pids = f"http://127.0.0.1:{self.args.lcp_port}/v1", {"server+engine": [proc.pid]}
            stream(client, base, "m", TG_PROMPT, 4)  # warm-up
            counted = None
            if i == 0:  # the prompts' tokens as this server counts them (not timed; once: they do not change)
                counted = statistics.fmean(client.post(f"{base}/completions", json={
                    "model": "m", "prompt": item["prompt"], "max_tokens": 1, "temperature": 0}).json()["usage"]
                    ["prompt_tokens"] for item in work)
            result = http_side(client, base, "m", work, self.args, pids, mcq=self.name.startswith("serve"))
            result["prompt_tokens"] = counted
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        return {**result, "startup_s": startup_s}, runtime


def measure_threads(args, threads: int, work: Path) -> dict:
    import httpx

    names = ["serve", *(["serve_batch_http"] if args.batch_http else []),
             *(["llama_cpp_python"] if args.llama_cpp_python else [])]
    sides = {name: Side(name, args, threads, work) for name in names}
    client = httpx.Client(timeout=600)
    rows: dict[str, list[dict]] = {"bench": [], **{name: [] for name in names}}
    runtime: dict = {}  # edgemed's runtime settings as served (llama-cpp-python's server gets the same)
    prompts: list[dict] = []
    for i in range(args.pairs):
        order = ["bench", *names]
        order = order[i % len(order):] + order[:i % len(order)]  # the first round starts with bench
        for side in order:
            before, started = load(), time.perf_counter()
            if side == "bench":
                result = bench_side(args, threads, work, i)
                doc = result.pop("doc")
                prompts = prompts or bench_prompts(args, doc)
                if [q["id"] for q in doc["questions"][:args.latency_prompts]] != [q["id"] for q in prompts]:
                    raise SystemExit("bench timed other questions in this round; cannot compare")
            else:
                result, served = sides[side].measure(client, prompts, runtime, i)
                runtime = runtime or served
            result["load_before"], result["load_after"] = before, load()
            result["wall_s"] = round(time.perf_counter() - started, 1)  # the whole side, to plan a window
            rows[side].append(result)
        (args.out / f"rounds-t{threads}.json").write_text(json.dumps(rows, indent=1))  # kept if stopped later
        print(f"threads {threads} round {i + 1}: " + "; ".join(
            f"{k} TTFT {v[-1]['ttft_ms']:.1f} ms tg {v[-1]['tg_tps']:.1f} t/s" for k, v in rows.items() if v),
            flush=True)
    return {"rows": rows, "runtime_info": {k: runtime.get(k) for k in (
        "kernel_path", "repack", "cpu_amx", "flash_attn", "n_ctx", "n_batch", "n_ubatch", "threads",
        "threads_batch", "omp_wait_policy", "system_info")}}


def summarize(rows: dict[str, list[dict]], n_gen: int) -> dict:
    bench = rows["bench"]
    out = {"bench": {"ttft_ms": statistics.median(r["ttft_ms"] for r in bench),
                     "tg_tps": statistics.median(r["tg_tps"] for r in bench),
                     "prompt_tokens": bench[0]["prompt_tokens"]}}
    for side, results in rows.items():
        if side == "bench" or not results:
            continue
        ttft = [s["ttft_ms"] / b["ttft_ms"] for s, b in zip(results, bench, strict=False)]
        tg = [s["tg_tps"] / b["tg_tps"] for s, b in zip(results, bench, strict=False)]
        out[side] = {"ttft_ms": statistics.median(r["ttft_ms"] for r in results),
                     "tg_tps": statistics.median(r["tg_tps"] for r in results),
                     "ttft_ratio": statistics.median(ttft), "ttft_ratio_range": [min(ttft), max(ttft)],
                     "tg_ratio": statistics.median(tg), "tg_ratio_range": [min(tg), max(tg)],
                     "cpu_ms_per_token": {k: statistics.median(r["cpu_ms_per_token"][k] for r in results)
                                          for k in results[0]["cpu_ms_per_token"]},
                     "startup_s": statistics.median(r["startup_s"] for r in results),
                     "prompt_tokens": results[0]["prompt_tokens"],
                     "tg_tokens_short": sum(t < n_gen for r in results for t in r["tg_tokens"])}
    return out


def markdown(report: dict) -> str:
    lines = [f"CPU: {report['cpu']} ({' '.join(report['cpu_flags'])}); wait policy {report['wait_policy']}; "
             f"{report['pairs']} rounds; load average {report['load_start']} at start, {report['load_end']} at end; "
             f"{report['wall_s']:.0f} s in all",
             "", "| threads | side | TTFT ms | tg tok/s | TTFT / bench | tg / bench | CPU ms per generated token | "
             "startup s | prompt tokens |", "|---|---|---|---|---|---|---|---|---|"]
    for threads, res in report["threads"].items():
        for side, s in res["summary"].items():
            ratio = (f"{s['ttft_ratio']:.3f} ({s['ttft_ratio_range'][0]:.2f}-{s['ttft_ratio_range'][1]:.2f})",
                     f"{s['tg_ratio']:.3f} ({s['tg_ratio_range'][0]:.2f}-{s['tg_ratio_range'][1]:.2f})",
                     ", ".join(f"{k} {v:.2f}" for k, v in s["cpu_ms_per_token"].items()), f"{s['startup_s']:.1f}",
                     str(s["prompt_tokens"])) if side != "bench" else ("1", "1", "-", "-", str(s["prompt_tokens"]))
            lines.append(f"| {threads} | {side} | {s['ttft_ms']:.1f} | {s['tg_tps']:.1f} | {' | '.join(ratio)} |")
    lines += ["", f"verdict: {report['verdict']}", *(f"warning: {w}" for w in report["warnings"])]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifact", help="a gguf artifact folder (edgemed export)")
    ap.add_argument("--threads", default="1", help="comma-separated thread counts, each measured on its own")
    ap.add_argument("--pairs", type=int, default=5, help="interleaved rounds per thread count (at least 5)")
    ap.add_argument("-n", "--n-gen", type=int, default=64, help="tokens of each tg generation (bench -n)")
    ap.add_argument("-p", "--n-prompt", type=int, default=64, help="bench's pp test length (not compared)")
    ap.add_argument("-r", "--repetitions", type=int, default=3, help="bench -r: TTFT rounds and tg generations")
    ap.add_argument("--latency-prompts", type=int, default=4)
    ap.add_argument("--gen-tokens", type=int, default=8, help="tokens of each timed TTFT answer (bench's)")
    ap.add_argument("--wait-policy", choices=("default", "passive", "active"), default="default",
                    help="bench and serve --wait-policy; llama-cpp-python's server gets the same OMP_WAIT_POLICY")
    ap.add_argument("--llama-cpp-python", help="python of a venv with llama-cpp-python[server] to compare too")
    ap.add_argument("--lcp-port", type=int, default=8765)
    ap.add_argument("--batch-http", action="store_true",
                    help="also time an edgemed serve whose HTTP process runs SCHED_BATCH (does not preempt the engine "
                         "when a token wakes it)")
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--out", type=Path, default=Path("runs/serve-overhead"))
    ap.add_argument("--dry-run", action="store_true", help="allow fewer than 5 rounds (to check the script)")
    args = ap.parse_args()
    if args.pairs < 5 and not args.dry_run:
        ap.error("--pairs must be at least 5 (a single tg reading drifts ~20% on a shared 2-core VM)")
    args.artifact = str(Path(args.artifact).resolve())
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout's SIGTERM still stops the servers
    sys.path.insert(0, str(REPO))
    from edgemed.sysinfo import cpu_info

    info = cpu_info()
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join(sys.argv), "cpu": info.model, "wait_policy": args.wait_policy,
              "cpu_flags": sorted(f for f in info.features if f.startswith(("avx512", "amx", "avx_vnni"))),
              "cores": os.cpu_count(), "pairs": args.pairs, "n_gen": args.n_gen, "repetitions": args.repetitions,
              "load_start": load(), "threads": {}}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="serve-overhead-") as tmp:
        for threads in (int(t) for t in args.threads.split(",")):
            res = measure_threads(args, threads, Path(tmp))
            res["summary"] = summarize(res["rows"], args.n_gen)
            report["threads"][str(threads)] = res
        for name in Path(tmp).glob("*.log"):
            (args.out / name.name).write_text(name.read_text())
    report["load_end"], report["wall_s"] = load(), round(time.perf_counter() - began, 1)
    broken = [f"threads {t}: {k} {s[k]:.3f}" for t, r in report["threads"].items() for side, s in r["summary"].items()
              if side == "serve" for k in ("ttft_ratio", "tg_ratio")
              if (k == "ttft_ratio" and s[k] > 1 + args.tolerance) or (k == "tg_ratio" and s[k] < 1 - args.tolerance)]
    verdict = (f"edgemed serve within {args.tolerance:.0%} of edgemed bench" if not broken else
               f"edgemed serve beyond {args.tolerance:.0%} of edgemed bench: {', '.join(broken)}")
    report["verdict"] = ("dry run (fewer than 5 rounds), no verdict: " if args.pairs < 5 else "") + verdict
    report["warnings"] = [  # the sides did not do the same work: the ratios do not compare like with like
        *(f"threads {t}: {side}'s prompts were {s['prompt_tokens']} tokens on average, bench's "
          f"{r['summary']['bench']['prompt_tokens']}" for t, r in report["threads"].items()
          for side, s in r["summary"].items() if side != "bench" and s["prompt_tokens"] is not None
          and abs(s["prompt_tokens"] - (r["summary"]["bench"]["prompt_tokens"] or 0)) > 0.01),
        *(f"threads {t}: {side}: {s['tg_tokens_short']} tg generations ended before {args.n_gen} tokens"
          for t, r in report["threads"].items() for side, s in r["summary"].items()
          if side != "bench" and s["tg_tokens_short"])]
    (args.out / "overhead.json").write_text(json.dumps(report, indent=2))
    (args.out / "overhead.md").write_text(markdown(report))
    print(markdown(report))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
