#!/usr/bin/env python3
"""Cross-check ``edgemed bench`` throughput (pp/tg tokens/s) against each engine's own tool on the same files.

Engine side, per format:
- GGUF: llama.cpp's ``llama-bench`` (built by scripts/build_llama_tools.sh from the installed llama-cpp-python's
  vendored sources), with its defaults except -t/-p/-n/-r (add more with --llama-bench-args); its whole JSON is kept
  (build, n_batch, flash_attn...). When its default weight repacking crashes (AMX Xeons), it reruns with --repack 0.
- hf: a bare transformers loop; onnx (onnx-int8, onnx-int4): a bare onnxruntime loop; openvino-*: a bare OpenVINO
  infer-request loop (the CPU plugin's own API on the stateful IR, INFERENCE_NUM_THREADS = --threads). Each runs as
  ``crosscheck_engines.py --bare KIND DIR`` in a fresh process, with llama-bench's protocol: pp = one forward
  of P random ids from an empty cache, tg = N single-token forwards from an empty cache, random ids; 1 warm-up,
  then R repetitions.
edgemed side: the real CLI, ``edgemed bench ARTIFACT --threads T -p P -n N -r R --limit 8 --no-fidelity``.

Pairs run interleaved (round 1: engine, edgemed, for each format; round 2: ...); the ratio edgemed/engine is
taken pair by pair and the median over rounds reported. The load average is read before, between and after
each pair, and each engine run is flagged busy like edgemed's machine_load (other processes' CPU > 0.15 cores).
No environment variable is set for any engine (OMP_WAIT_POLICY / OMP_NUM_THREADS are recorded as found).

Exit codes: 0 every pair measured, 1 some run failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgemed.fsutil import atomic_write_text
from edgemed.process.machine_load import BUSY_CORES, machine_cpu_seconds  # the bench's own threshold
from edgemed.sysinfo import cpu_model

REPO = Path(__file__).resolve().parents[2]  # scripts/dev/ -> the repo
BUILD_SCRIPT = REPO / "scripts" / "build_llama_tools.sh"
DEFAULT_FORMATS = ("hf", "onnx", "onnx-int4", "openvino-int8", "openvino-int4", "gguf-f16", "gguf-q8_0",
                   "gguf-q4_k_m")
ENV_RECORDED = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


class BadInput(Exception):
    """Bad arguments or artifacts: reported in one line, exit 2."""


# --------------------------------------------------------------------------------------------------------------
# statistics in llama-bench's shape
# --------------------------------------------------------------------------------------------------------------
def llama_bench_result(n_prompt: int, n_gen: int, samples_ns: list[int]) -> dict[str, Any]:
    """A test result under llama-bench's field names (tokens/s per repetition, sample stdev like llama-bench)."""
    tokens = n_prompt + n_gen
    ts = [tokens * 1e9 / ns for ns in samples_ns]
    return {
        "n_prompt": n_prompt, "n_gen": n_gen,
        "avg_ns": int(statistics.fmean(samples_ns)),
        "stddev_ns": int(statistics.stdev(samples_ns)) if len(samples_ns) > 1 else 0,
        "avg_ts": statistics.fmean(ts), "stddev_ts": statistics.stdev(ts) if len(ts) > 1 else 0.0,
        "samples_ns": samples_ns, "samples_ts": ts,
    }


def env_found() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in ENV_RECORDED}


# --------------------------------------------------------------------------------------------------------------
# bare engine loops (run in their own process through --bare)
# --------------------------------------------------------------------------------------------------------------
def bare_hf(path: Path, threads: int, n_prompt: int, n_gen: int, reps: int, seed: int = 0) -> dict[str, Any]:
    """transformers, fp32, DynamicCache: pp = one forward of n_prompt ids, tg = n_gen one-token forwards."""
    import inspect

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, DynamicCache

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(str(path), torch_dtype=torch.float32)
    model.eval()
    vocab = int(model.config.vocab_size)
    gen = torch.Generator().manual_seed(seed)
    # llama-bench computes only the last position's logits in pp; do the same where the model allows it.
    last_only = "logits_to_keep" in inspect.signature(model.forward).parameters
    extra = {"logits_to_keep": 1} if last_only else {}

    def pp() -> int:
        ids = torch.randint(0, vocab, (1, n_prompt), generator=gen)
        start = time.perf_counter_ns()
        model(input_ids=ids, past_key_values=DynamicCache(), use_cache=True, **extra)
        return time.perf_counter_ns() - start

    def tg() -> int:
        ids = torch.randint(0, vocab, (n_gen, 1, 1), generator=gen)
        cache = DynamicCache()
        start = time.perf_counter_ns()
        for i in range(n_gen):
            model(input_ids=ids[i], past_key_values=cache, use_cache=True)
        return time.perf_counter_ns() - start

    with torch.inference_mode():
        pp_ns, tg_ns = _protocol(pp, tg, n_prompt, n_gen, reps)
    return {
        "engine": "transformers", "pp": llama_bench_result(n_prompt, 0, pp_ns) if pp_ns else None,
        "tg": llama_bench_result(0, n_gen, tg_ns) if tg_ns else None,
        "settings": {"dtype": "float32", "torch_threads": torch.get_num_threads(),
                     "torch_interop_threads": torch.get_num_interop_threads(),
                     "pp_logits": "last position" if last_only else "all positions",
                     "cache": "DynamicCache", "warmup": 1, "repetitions": reps},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "torch_parallel_info": torch.__config__.parallel_info(),
    }


def _onnx_dims(path: Path, inp: Any) -> tuple[int, int]:
    """(kv_heads, head_dim) of a past_key_values input: its static dims, else config.json."""
    shape = list(inp.shape)
    if len(shape) == 4 and isinstance(shape[1], int) and isinstance(shape[3], int):
        return shape[1], shape[3]
    cfg = json.loads((path / "config.json").read_text())
    heads = int(cfg["num_attention_heads"])
    kv = int(cfg.get("num_key_value_heads") or heads)
    return kv, int(cfg.get("head_dim") or cfg["hidden_size"] // heads)


def bare_onnx(path: Path, threads: int, n_prompt: int, n_gen: int, reps: int, seed: int = 0) -> dict[str, Any]:
    """onnxruntime CPU session on model.onnx; empty past_key_values.* in, present.* fed back."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path / "model.onnx"), so, providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in sess.get_inputs()}
    outputs = [o.name for o in sess.get_outputs()]
    past_names = [n for n in inputs if n.startswith("past_key_values.")]
    if "input_ids" not in inputs or not past_names:
        raise BadInput(f"{path / 'model.onnx'} has no input_ids/past_key_values.* inputs (not a with-past export)")
    np_dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
    kv_heads, head_dim = _onnx_dims(path, inputs[past_names[0]])
    present_of = {}  # past input name -> the output that feeds it next step
    for name in past_names:
        out = "present." + name[len("past_key_values."):]
        if out not in outputs:
            raise BadInput(f"{path / 'model.onnx'}: no output {out} for input {name}")
        present_of[name] = out
    vocab = int(json.loads((path / "config.json").read_text())["vocab_size"])
    rng = np.random.default_rng(seed)

    def empty_past() -> dict[str, Any]:
        return {n: np.zeros((1, kv_heads, 0, head_dim), dtype=np_dtype.get(inputs[n].type, np.float32))
                for n in past_names}

    def feed(ids: Any, past: dict[str, Any], past_len: int) -> dict[str, Any]:
        n = ids.shape[1]
        f = {"input_ids": ids, **past}
        if "attention_mask" in inputs:
            f["attention_mask"] = np.ones((1, past_len + n), dtype=np.int64)
        if "position_ids" in inputs:
            f["position_ids"] = np.arange(past_len, past_len + n, dtype=np.int64)[None, :]
        return f

    def pp() -> int:
        ids = rng.integers(0, vocab, size=(1, n_prompt), dtype=np.int64)
        f = feed(ids, empty_past(), 0)
        start = time.perf_counter_ns()
        sess.run(None, f)
        return time.perf_counter_ns() - start

    def tg() -> int:
        ids = rng.integers(0, vocab, size=(n_gen, 1, 1), dtype=np.int64)
        past = empty_past()
        start = time.perf_counter_ns()
        for i in range(n_gen):
            res = dict(zip(outputs, sess.run(None, feed(ids[i], past, i)), strict=True))
            past = {n: res[o] for n, o in present_of.items()}
        return time.perf_counter_ns() - start

    pp_ns, tg_ns = _protocol(pp, tg, n_prompt, n_gen, reps)
    opts = sess.get_session_options()
    return {
        "engine": "onnxruntime", "pp": llama_bench_result(n_prompt, 0, pp_ns) if pp_ns else None,
        "tg": llama_bench_result(0, n_gen, tg_ns) if tg_ns else None,
        "settings": {"provider": sess.get_providers()[0], "intra_op_num_threads": opts.intra_op_num_threads,
                     "inter_op_num_threads": opts.inter_op_num_threads,
                     "execution_mode": str(opts.execution_mode),
                     "graph_optimization_level": str(opts.graph_optimization_level),
                     "inputs": sorted(n for n in inputs if n not in past_names), "past_inputs": len(past_names),
                     "kv_heads": kv_heads, "head_dim": head_dim,
                     "pp_logits": "all positions (the graph's logits output)", "io_binding": False,
                     "warmup": 1, "repetitions": reps},
        "versions": {"onnxruntime": ort.__version__, "numpy": np.__version__},
    }


def _protocol(pp: Any, tg: Any, n_prompt: int, n_gen: int, reps: int) -> tuple[list[int], list[int]]:
    """llama-bench's order: the pp test (1 warm-up + reps), then the tg test (1 warm-up + reps)."""
    pp_ns: list[int] = []
    tg_ns: list[int] = []
    if n_prompt > 0:
        pp()
        pp_ns = [pp() for _ in range(reps)]
    if n_gen > 0:
        tg()
        tg_ns = [tg() for _ in range(reps)]
    return pp_ns, tg_ns


def bare_openvino(path: Path, threads: int, n_prompt: int, n_gen: int, reps: int, seed: int = 0) -> dict[str, Any]:
    """OpenVINO CPU plugin on the stateful openvino_model.xml, its plain infer-request API: reset_state() starts a
    sequence from an empty KV cache, then one infer per prompt / per token (what openvino-genai drives)."""
    import numpy as np
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(str(path / "openvino_model.xml"), "CPU", {"INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    inputs = {p.get_any_name() for p in compiled.inputs}
    if "input_ids" not in inputs or not request.query_state():
        raise BadInput(f"{path / 'openvino_model.xml'} is not a stateful LLM graph (input_ids + KV variables)")
    vocab = int(json.loads((path / "config.json").read_text())["vocab_size"])
    rng = np.random.default_rng(seed)

    def feed(ids: Any, past_len: int) -> dict[str, Any]:
        n = ids.shape[1]
        f = {"input_ids": ids, "attention_mask": np.ones((1, past_len + n), dtype=np.int64)}
        if "position_ids" in inputs:
            f["position_ids"] = np.arange(past_len, past_len + n, dtype=np.int64)[None, :]
        return f

    def pp() -> int:
        f = feed(rng.integers(0, vocab, size=(1, n_prompt), dtype=np.int64), 0)
        request.reset_state()
        start = time.perf_counter_ns()
        request.infer(f)
        return time.perf_counter_ns() - start

    def tg() -> int:
        ids = rng.integers(0, vocab, size=(n_gen, 1, 1), dtype=np.int64)
        request.reset_state()
        start = time.perf_counter_ns()
        for i in range(n_gen):
            request.infer(feed(ids[i], i))
        return time.perf_counter_ns() - start

    pp_ns, tg_ns = _protocol(pp, tg, n_prompt, n_gen, reps)
    props = {k: compiled.get_property(k) for k in ("INFERENCE_NUM_THREADS", "NUM_STREAMS",
                                                    "INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT",
                                                    "KV_CACHE_PRECISION")}
    props = {k: v.get_type_name() if hasattr(v, "get_type_name") else str(v) for k, v in props.items()}
    return {
        "engine": "openvino", "pp": llama_bench_result(n_prompt, 0, pp_ns) if pp_ns else None,
        "tg": llama_bench_result(0, n_gen, tg_ns) if tg_ns else None,
        "settings": {"plugin": "CPU", "compiled_model": props, "infer": "InferRequest.infer (default copies)",
                     "kv_cache": f"stateful ({len(request.query_state())} variables)",
                     "pp_logits": "all positions (the graph's logits output)", "warmup": 1, "repetitions": reps},
        "versions": {"openvino": ov.__version__, "numpy": np.__version__},
    }


BARE = {"hf": bare_hf, "onnx": bare_onnx, "openvino": bare_openvino}


# --------------------------------------------------------------------------------------------------------------
# machine
# --------------------------------------------------------------------------------------------------------------


def _own_cpu() -> float:
    """CPU seconds of this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class OtherLoad:
    """CPU used by other processes while a run of ours was going: machine busy time less ours, in cores."""

    def __enter__(self) -> OtherLoad:
        self.t0, self.stat0, self.own0 = time.monotonic(), machine_cpu_seconds(), _own_cpu()
        self.result: dict[str, Any] = {}
        return self

    def __exit__(self, *exc: object) -> None:
        wall, stat = time.monotonic() - self.t0, machine_cpu_seconds()
        if not stat or not self.stat0 or wall <= 0:
            return
        busy, steal, total = (b - a for a, b in zip(self.stat0, stat, strict=True))
        other = max(0.0, (busy - (_own_cpu() - self.own0)) / wall)
        steal_frac = steal / total if total > 0 else 0.0
        self.result = {"other_cores_mean": round(other, 3), "steal_fraction": round(steal_frac, 4),
                       "wall_s": round(wall, 2), "busy": other > BUSY_CORES or steal_frac > 0.05,
                       "method": "/proc/stat busy time - this script's and its children's rusage"}


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# --------------------------------------------------------------------------------------------------------------
# artifacts
# --------------------------------------------------------------------------------------------------------------
def engine_kind(fmt: str) -> str | None:
    if fmt == "hf":
        return "hf"
    if fmt in ("onnx", "onnx-int8", "onnx-int4"):
        return "onnx"
    if fmt.startswith("openvino-"):
        return "openvino"
    if fmt.startswith("gguf-"):
        return "gguf"
    return None


def artifacts_by_format(root: Path) -> dict[str, Path]:
    """format -> artifact folder, for the artifacts `edgemed bench` finds under `root` (its own discovery and
    naming, edgemed.bench.artifacts.name_artifacts); artifacts it cannot measure are left out."""
    from edgemed.bench.artifacts import name_artifacts
    from edgemed.errors import EdgemedError

    if not root.is_dir():
        raise BadInput(f"{root} is not a folder")
    try:
        targets = name_artifacts([root])
    except EdgemedError as exc:
        raise BadInput(str(exc)) from None
    found: dict[str, Path] = {}
    for t in targets:
        if not t.problem:
            found.setdefault(t.format, Path(t.path))
    return found


def gguf_file(folder: Path) -> Path:
    files = sorted(p for p in folder.glob("*.gguf") if not p.name.startswith("."))
    if len(files) != 1:
        raise BadInput(f"{folder} holds {len(files)} .gguf files, expected 1")
    return files[0]


# --------------------------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------------------------
def _tail(text: str, n: int = 600) -> str:
    return text.strip()[-n:]


def _llama_bench_once(cmd: list[str], timeout: float) -> dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    out: dict[str, Any] = {"cmd": cmd, "rc": proc.returncode}
    if proc.returncode != 0:
        how = f"signal {signal.Signals(-proc.returncode).name}" if proc.returncode < 0 else f"exit {proc.returncode}"
        return {**out, "error": f"llama-bench {how}: {_tail(proc.stderr) or '(no output)'}"}
    try:
        tests = json.loads(proc.stdout)
    except ValueError:
        return {**out, "error": f"llama-bench printed no JSON: {_tail(proc.stdout)}"}
    pp = next((t for t in tests if t.get("n_prompt", 0) > 0 and t.get("n_gen", 0) == 0), None)
    tg = next((t for t in tests if t.get("n_gen", 0) > 0 and t.get("n_prompt", 0) == 0), None)
    return {**out, "engine": "llama-bench", "pp": pp, "tg": tg, "llama_bench_json": tests}


def run_llama_bench(exe: Path, model: Path, a: argparse.Namespace) -> dict[str, Any]:
    """llama-bench with its defaults. Its default weight repacking (extra buffer types, AMX on CPUs that report it)
    has crashed on some Xeons at the first decode; then it is rerun once with --repack 0 and the result says so."""
    extra = shlex.split(a.llama_bench_args)
    cmd = [str(exe), "-m", str(model), "-t", str(a.threads), "-p", str(a.n_prompt), "-n", str(a.n_gen),
           "-r", str(a.repetitions), "-o", "json", *extra]
    res = _llama_bench_once(cmd, a.timeout)
    if res["rc"] < 0 and "--repack" not in extra:
        retry = _llama_bench_once([*cmd, "--repack", "0"], a.timeout)
        retry["fallback"] = f"--repack 0 (the default run died: {res['error'].split(':')[0]})"
        retry["first_attempt"] = res
        res = retry
    return res


def run_bare(python: str, kind: str, folder: Path, a: argparse.Namespace) -> dict[str, Any]:
    cmd = [python, str(Path(__file__).resolve()), "--bare", kind, str(folder), "--threads", str(a.threads),
           "-p", str(a.n_prompt), "-n", str(a.n_gen), "-r", str(a.repetitions)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
    out: dict[str, Any] = {"cmd": cmd, "rc": proc.returncode}
    if proc.returncode != 0:
        return {**out, "error": f"bare {kind} loop exit {proc.returncode}: {_tail(proc.stderr)}"}
    try:
        return {**out, **json.loads(proc.stdout.strip().splitlines()[-1])}
    except (ValueError, IndexError):
        return {**out, "error": f"bare {kind} loop printed no JSON: {_tail(proc.stdout + proc.stderr)}"}


RUNTIME_KEYS = ("runtime", "threads", "n_ctx", "n_batch", "n_ubatch", "flash_attn", "repack", "kernel_path",
                "omp_wait_policy", "provider",
                "intra_op_num_threads", "torch_threads", "dtype", "env_set_by_bench")


def run_edgemed(exe: str, folder: Path, out_dir: Path, a: argparse.Namespace) -> dict[str, Any]:
    cmd = [exe, "bench", str(folder), "--threads", str(a.threads), "-p", str(a.n_prompt), "-n", str(a.n_gen),
           "-r", str(a.repetitions), "--limit", "8", "--no-fidelity", "--out", str(out_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
    out: dict[str, Any] = {"cmd": cmd, "rc": proc.returncode, "bench_json": str(out_dir / "bench.json")}
    bench_json = out_dir / "bench.json"
    if not bench_json.is_file():
        return {**out, "error": f"edgemed bench exit {proc.returncode}, no bench.json: {_tail(proc.stderr)}"}
    try:
        art = json.loads(bench_json.read_text())["artifacts"][0]
        throughput = art["throughput"]
        pp, tg = throughput.get("pp") or None, throughput.get("tg") or None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        return {**out, "error": f"{bench_json}: no artifacts[0].throughput.pp/tg ({type(exc).__name__}: {exc})"}
    info = art.get("runtime_info") or {}
    res = {**out, "pp": pp, "tg": tg, "machine_load": art.get("machine_load"), "status": art.get("status"),
           "runtime_info": {k: info[k] for k in RUNTIME_KEYS if k in info}}
    if not pp or not tg:
        res["error"] = f"{bench_json}: throughput.pp/tg missing (status {art.get('status')})"
    return res


def kernel_note(info: dict[str, Any] | None) -> str:
    """edgemed's llama.cpp settings that may differ from llama-bench's defaults."""
    if not info or info.get("runtime") != "llama.cpp":
        return ""
    return (f"edgemed: flash_attn={info.get('flash_attn')}, n_batch={info.get('n_batch')}, "
            f"repack={info.get('repack')}, OMP_WAIT_POLICY={info.get('omp_wait_policy')}")


def busy_flag(machine_load: Any) -> str:
    """A short text for edgemed's machine_load record (its busy flag when there is one)."""
    if not isinstance(machine_load, dict):
        return "" if machine_load is None else str(machine_load)
    if "busy" in machine_load:
        other = machine_load.get("other_cores_mean")
        return ("busy" if machine_load["busy"] else "quiet") + (f" ({other:.2f} other cores)"
                                                                 if isinstance(other, int | float) else "")
    return json.dumps(machine_load)[:60]


# --------------------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------------------
def ts(result: dict[str, Any] | None, metric: str) -> float | None:
    test = (result or {}).get(metric) or {}
    value = test.get("avg_ts")
    return float(value) if isinstance(value, int | float) else None


def engine_label(pairs: list[dict[str, Any]]) -> str | None:
    names = sorted({str(p["engine"].get("engine")) + (" (--repack 0 fallback)" if p["engine"].get("fallback") else "")
                    for p in pairs if p["engine"].get("engine")})
    return ", ".join(names) or None


def summarize(pairs: list[dict[str, Any]], formats: list[str], metrics: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for fmt in formats:
        mine = [p for p in pairs if p["format"] == fmt]
        for metric, label in metrics.items():
            eng = [v for p in mine if (v := ts(p["engine"], metric)) is not None]
            edg = [v for p in mine if (v := ts(p.get("edgemed"), metric)) is not None]
            ratios = [e / g for p in mine
                      if (e := ts(p.get("edgemed"), metric)) is not None and (g := ts(p["engine"], metric))]
            rows.append({
                "format": fmt, "metric": label, "engine": engine_label(mine),
                "edgemed_ts": statistics.median(edg) if edg else None,
                "engine_ts": statistics.median(eng) if eng else None,
                "ratio": statistics.median(ratios) if ratios else None, "ratios": ratios,
                "engine_samples": eng, "edgemed_samples": edg,
                "busy_pairs": sum(1 for p in mine if any(((p.get(side) or {}).get("machine_load") or {}).get("busy")
                                                         for side in ("engine", "edgemed"))),
            })
    return rows


def _f(v: float | None, spec: str = ".1f") -> str:
    return "—" if v is None else format(v, spec)


def _load(v: list[float] | None) -> str:
    return "/".join(f"{x:.2f}" for x in v) if v else "—"


def render(doc: dict[str, Any]) -> str:
    m, s = doc["machine"], doc["settings"]
    env = ", ".join(f"{k}={v}" for k, v in doc["env"].items() if v is not None) or "none of " + "/".join(ENV_RECORDED)
    lines = [
        "# edgemed bench vs engines: throughput cross-check" + ("" if doc.get("complete", True) else " (partial)"),
        "",
        f"CPU: {m['cpu_model']} ({m['cpus']} CPUs); threads {s['threads']}; pp{s['n_prompt']} / tg{s['n_gen']}, "
        f"{s['repetitions']} repetitions, {s['rounds']} rounds (A/B interleaved); thread env set: {env}", "",
        "| format | metric | engine | edgemed tok/s | engine tok/s | edgemed/engine (median) | per round "
        "| busy pairs |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in doc["summary"]:
        lines.append(
            f"| {r['format']} | {r['metric']} | {r['engine'] or '—'} | {_f(r['edgemed_ts'])} | {_f(r['engine_ts'])} "
            f"| {_f(r['ratio'], '.3f')} | {', '.join(f'{x:.3f}' for x in r['ratios']) or '—'} | {r['busy_pairs']} |")
    lines += ["", "Each pair (tok/s avg ± stddev over the repetitions; load average 1/5/15 min before, between and "
              f"after; busy = other processes used more than {BUSY_CORES} cores on average during the run):", "",
              "| round | format | load before | between | after | engine pp | engine tg | edgemed pp | edgemed tg "
              "| engine run | edgemed run | notes |",
              "| ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- | --- |"]
    for p in doc["pairs"]:
        eng, edg = p["engine"], p.get("edgemed") or {}
        cell = {f"{side}{k}": f"{_f(ts(r, k))} ± {_f((r.get(k) or {}).get('stddev_ts'))}"
                for side, r in (("e", eng), ("m", edg)) for k in ("pp", "tg")}
        notes = [n for n in (eng.get("fallback") and f"engine {eng['fallback']}", eng.get("error"),
                             edg.get("error"), kernel_note(edg.get("runtime_info"))) if n]
        lines.append(
            f"| {p['round']} | {p['format']} | {_load(p['load_before'])} | {_load(p.get('load_between'))} | "
            f"{_load(p['load_after'])} | {cell['epp']} | {cell['etg']} | {cell['mpp']} | {cell['mtg']} | "
            f"{busy_flag(eng.get('machine_load')) or '—'} | {busy_flag(edg.get('machine_load')) or '—'} | "
            f"{'; '.join(notes).replace('|', '/')[:200]} |")
    build = doc.get("llama_bench_build")
    if build:
        lines += ["", "llama-bench: " + ", ".join(f"{k}={v}" for k, v in build.items())]
    return "\n".join(lines) + "\n"


LLAMA_BENCH_BUILD_KEYS = ("build_commit", "build_number", "cpu_info", "backends", "n_batch", "n_ubatch",
                          "flash_attn", "type_k", "type_v", "poll", "repack", "n_gpu_layers", "load_mode")


def make_doc(a: argparse.Namespace, pairs: list[dict[str, Any]], formats: list[str], metrics: dict[str, str],
             bench_exe: Path | None, root: Path, complete: bool) -> dict[str, Any]:
    build = next((p["engine"]["llama_bench_json"][0] for p in pairs if p["engine"].get("llama_bench_json")), None)
    return {
        "complete": complete,
        "settings": {"threads": a.threads, "n_prompt": a.n_prompt, "n_gen": a.n_gen, "repetitions": a.repetitions,
                     "rounds": a.rounds, "formats": formats, "engine_only": a.engine_only,
                     "llama_bench": str(bench_exe) if bench_exe else None, "llama_bench_args": a.llama_bench_args,
                     "artifacts_dir": str(root.resolve())},
        "machine": {"cpu_model": cpu_model(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "env": env_found(),
        "llama_bench_build": {k: build.get(k) for k in LLAMA_BENCH_BUILD_KEYS} if build else None,
        "summary": summarize(pairs, formats, metrics),
        "pairs": pairs,
    }


def save(out_dir: Path, doc: dict[str, Any], text: str) -> None:
    atomic_write_text(out_dir / "crosscheck.json", json.dumps(doc, indent=2) + "\n")
    atomic_write_text(out_dir / "crosscheck.md", text)


def resolve_llama_bench(given: Path | None) -> Path:
    if given is not None:
        if not (given.is_file() and os.access(given, os.X_OK)):
            raise BadInput(f"--llama-bench {given} is not an executable file")
        return given
    print(f"crosscheck: building llama-bench with {BUILD_SCRIPT.relative_to(REPO)} (cached after the first run)",
          file=sys.stderr)
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or len(lines) < 2:
        raise BadInput(f"{BUILD_SCRIPT.name} failed (exit {proc.returncode}): {_tail(proc.stderr, 300)}")
    return Path(lines[-2])


def main_crosscheck(a: argparse.Namespace) -> int:
    for name in ("threads", "n_prompt", "n_gen", "repetitions", "rounds"):
        if getattr(a, name) < (0 if name in ("n_prompt", "n_gen") else 1):
            raise BadInput(f"--{name.replace('_', '-')} must be positive, got {getattr(a, name)}")
    if a.n_prompt == 0 and a.n_gen == 0:
        raise BadInput("-p and -n are both 0: nothing to measure")
    root = Path(a.path)
    present = artifacts_by_format(root)
    if a.formats:
        formats = [f for f in a.formats.split(",") if f]
        for f in formats:
            if engine_kind(f) is None:
                raise BadInput(f"--formats: {f} has no engine tool here "
                               "(known: hf, onnx, onnx-int8, onnx-int4, openvino-*, gguf-*)")
            if f not in present:
                raise BadInput(f"--formats: no {f} artifact in {root} (found: {', '.join(present) or 'none'})")
    else:
        formats = [f for f in DEFAULT_FORMATS if f in present]
    if not formats:
        raise BadInput(f"{root} holds no artifact of {', '.join(DEFAULT_FORMATS)} (artifact folders with edgemed.json)")
    bench_exe = resolve_llama_bench(a.llama_bench) if any(engine_kind(f) == "gguf" for f in formats) else None
    edgemed = a.edgemed or str(REPO / ".venv" / "bin" / "edgemed")
    if not a.engine_only and not os.access(edgemed, os.X_OK):
        raise BadInput(f"edgemed CLI {edgemed} not found; run scripts/setup.sh or pass --edgemed")
    python = a.python or (str(REPO / ".venv/bin/python") if (REPO / ".venv/bin/python").exists() else sys.executable)

    metrics = {}
    if a.n_prompt:
        metrics["pp"] = f"pp{a.n_prompt}"
    if a.n_gen:
        metrics["tg"] = f"tg{a.n_gen}"
    out_dir = Path(a.out) if a.out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        work = (out_dir / "edgemed-runs") if out_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        pairs: list[dict[str, Any]] = []
        for rnd in range(1, a.rounds + 1):
            for fmt in formats:
                folder = present[fmt]
                kind = engine_kind(fmt)
                pair: dict[str, Any] = {"round": rnd, "format": fmt, "artifact": str(folder),
                                        "load_before": loadavg(), "t_start": time.time()}
                print(f"crosscheck: round {rnd}/{a.rounds} {fmt}: engine", file=sys.stderr, flush=True)
                with OtherLoad() as probe:
                    try:
                        if kind == "gguf":
                            pair["engine"] = run_llama_bench(bench_exe, gguf_file(folder), a)
                        else:
                            pair["engine"] = run_bare(python, kind, folder, a)
                    except subprocess.TimeoutExpired:
                        pair["engine"] = {"error": f"engine run timed out after {a.timeout:.0f}s"}
                pair["engine"]["machine_load"] = probe.result
                pair["load_between"] = loadavg()
                if not a.engine_only:
                    print(f"crosscheck: round {rnd}/{a.rounds} {fmt}: edgemed bench", file=sys.stderr, flush=True)
                    try:
                        pair["edgemed"] = run_edgemed(edgemed, folder, work / f"edgemed-{fmt}-{rnd}", a)
                    except subprocess.TimeoutExpired:
                        pair["edgemed"] = {"error": f"edgemed bench timed out after {a.timeout:.0f}s"}
                pair["load_after"] = loadavg()
                pairs.append(pair)
                if out_dir:  # keep what is measured so far if the run is stopped
                    partial = make_doc(a, pairs, formats, metrics, bench_exe, root, complete=False)
                    save(out_dir, partial, render(partial))
                for side in ("engine", "edgemed"):
                    if (pair.get(side) or {}).get("error"):
                        print(f"crosscheck: {fmt} round {rnd} {side}: {pair[side]['error']}", file=sys.stderr)

    doc = make_doc(a, pairs, formats, metrics, bench_exe, root, complete=True)
    text = render(doc)
    print(text)
    if out_dir:
        save(out_dir, doc, text)
        print(f"crosscheck: wrote {out_dir / 'crosscheck.json'} and {out_dir / 'crosscheck.md'}", file=sys.stderr)
    failed = [p for p in pairs if p["engine"].get("error") or (not a.engine_only and p["edgemed"].get("error"))]
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Internal: --bare hf|onnx DIR runs one bare engine loop and prints JSON.")
    p.add_argument("path", help="ARTIFACTS_DIR: folder of artifact sub-folders (hf, onnx, gguf-q8_0, ...)")
    p.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    p.add_argument("-p", "--n-prompt", type=int, default=512, help="pp test length (default 512)")
    p.add_argument("-n", "--n-gen", type=int, default=128, help="tg test length (default 128)")
    p.add_argument("-r", "--repetitions", type=int, default=5, help="measured repetitions per test (default 5)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved engine/edgemed pairs per format (default 2)")
    p.add_argument("--llama-bench", type=Path, help="llama-bench binary (default: scripts/build_llama_tools.sh)")
    p.add_argument("--llama-bench-args", default="",
                   help="extra llama-bench arguments, e.g. '--repack 0 -fa off' (default: none, its defaults)")
    p.add_argument("--formats", help=f"comma list (default: every present one of {','.join(DEFAULT_FORMATS)})")
    p.add_argument("--out", help="write crosscheck.json and crosscheck.md (and edgemed's runs) here")
    p.add_argument("--engine-only", action="store_true", help="measure the engine side only")
    p.add_argument("--edgemed", help="edgemed executable (default: .venv/bin/edgemed)")
    p.add_argument("--python", help="python for the bare loops (default: .venv/bin/python)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds one run may take (default 1800)")
    p.add_argument("--bare", choices=sorted(BARE), help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        if a.bare:
            folder = Path(a.path)
            if not folder.is_dir():
                raise BadInput(f"{folder} is not a folder")
            if a.bare == "onnx" and not (folder / "model.onnx").is_file():
                raise BadInput(f"{folder} has no model.onnx")
            if a.bare == "openvino" and not (folder / "openvino_model.xml").is_file():
                raise BadInput(f"{folder} has no openvino_model.xml")
            result = BARE[a.bare](folder, a.threads, a.n_prompt, a.n_gen, a.repetitions)
            print(json.dumps({**result, "env": env_found()}))
            return 0
        return main_crosscheck(a)
    except BadInput as exc:
        print(f"crosscheck_engines: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
