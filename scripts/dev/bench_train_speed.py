#!/usr/bin/env python
"""Seconds per LoRA training step: the reference notebook's setup vs edgemed's, lever by lever, same data.

Setups (same LoRA config r=16, alpha=32, dropout 0.1 on q/k/v/o/gate/up/down, same LoRA init, fused AdamW
as the Trainer uses by default), each adding one lever to the one before:

1. notebook:          loss on every token, every sequence padded to 256 (padding="max_length"), float32
2. answer-only:       loss on the answer tokens, each batch padded to its own longest example, float32
3. + length grouping: the same questions batched by edgemed.train.data.length_grouped_order
4. + answer logits:   the LM head runs on the answer positions only (edgemed.train.loop.answer_loss)
5. + fast dropout:    LoRA dropout by edgemed.train.cpu.FastDropout: edgemed's float32 default on a CPU
6. + bf16 autocast:   CPU autocast to bfloat16 over the float32 model, LoRA weights and AdamW state
                      float32; transformers' stock sdpa attention (so attention runs in bf16 too)
7. + fp32 attention:  as 6 with the attention itself in float32 (edgemed.train.cpu.fp32_sdpa_attention)
8. + bf16 model:      as 7 with the frozen model loaded in bf16 (weights, embeddings, residual stream) and
                      the LoRA input taken as is (edgemed.train.cpu.lora_inputs_as_is): edgemed's default
                      where the CPU has AVX512-BF16 or AMX (elsewhere ``--dtype auto`` is float32: row 5)

The last line printed names the row that is edgemed's default on this CPU and its ratio to the notebook.

Each step's wall time and this process's CPU time are recorded; on a machine shared with other work run
it with ``--threads 1`` and compare the CPU-time ratios (a thread that is descheduled mid-step stalls the
others of its team, which inflates wall time erratically under load).

Every setup trains on the same questions: a warm-up pool (untimed) and a timed pool; the grouped setups
batch the timed pool differently, so compare the mean over the timed steps (same examples in all setups).
Steps alternate between the setups so that a busy machine slows all alike. Each step is forward +
backward + AdamW step.

With --quality-steps N it then trains float32 and bfloat16 runs through edgemed's own ``train_lora``
(same seed, same data and steps, eval on --eval-data) plus a float32 run with another seed (the
run-to-run noise), each in its own process and side by side, and scores every adapter in float32 on the
same eval questions: the bf16-minus-fp32 eval loss with its standard error (paired over questions)
against the seed-to-seed difference. --no-speed skips the step timing.

    python scripts/dev/bench_train_speed.py --threads 2 --quality-steps 40 --out bench.json   # smollm2-135m, batch 4
    python scripts/dev/bench_train_speed.py --model tiny-random --steps 3 --warmup 1 --quality-steps 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

REFERENCE_LENGTH = 256
REPO = Path(__file__).resolve().parents[2]  # scripts/dev/ -> the repo
DATA_DIR = REPO.parent / "shared" / "data" / "medmcqa"
DEFAULT_DATA = DATA_DIR / "train.jsonl"
DEFAULT_EVAL = DATA_DIR / "validation.jsonl"
SETUPS = {
    "notebook": "notebook (loss on all tokens, pad to 256, fp32)",
    "answer_only": "answer-only loss + dynamic padding (fp32)",
    "grouped": "+ length grouping (fp32)",
    "answer_logits": "+ LM head on answer positions only (fp32)",
    "fast_dropout": "+ fast LoRA dropout (edgemed, float32)",
    "bf16_sdpa": "+ bf16 autocast (attention in bf16 too)",
    "bf16_attn": "+ attention in fp32",
    "bf16": "+ frozen model in bf16 (edgemed, bf16)",
}


def reference_batch(tokenizer, style, questions):
    """The notebook's batch: prompt+answer text, padded to 256, labels on every real token."""
    texts = []
    for q in questions:
        text = style.prompt(q) + style.target(q)
        texts.append(text if style.turn_end else text + tokenizer.eos_token)
    enc = tokenizer(texts, padding="max_length", max_length=REFERENCE_LENGTH, truncation=True, return_tensors="pt")
    labels = enc["input_ids"].clone()
    labels[enc["attention_mask"] == 0] = -100
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}


def lora_model(path: str, seed: int, attention: str = "sdpa", fast_dropout: bool = False, bf16_model: bool = False):
    import torch
    from peft import LoraConfig, get_peft_model

    from edgemed.models import load_model, pick_device
    from edgemed.train.config import LORA_TARGETS
    from edgemed.train.cpu import fast_lora_dropout, lora_inputs_as_is

    torch.manual_seed(seed)
    model = load_model(path, pick_device("cpu", "bfloat16" if bf16_model else "float32"), attn_implementation=attention)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.1, target_modules=list(LORA_TARGETS),
                                             task_type="CAUSAL_LM"))
    if fast_dropout:
        fast_lora_dropout(model)
    if bf16_model:
        lora_inputs_as_is(model)
    model.train()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, fused=True)
    return model, optim


def step(model, optim, batch, answer_logits: bool, bf16: bool) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one forward + backward + AdamW step."""
    import torch

    from edgemed.train.loop import answer_loss

    start, cpu = time.perf_counter(), time.process_time()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = answer_loss(model, batch)[0] if answer_logits else model(**batch).loss
    loss.backward()
    optim.step()
    optim.zero_grad(set_to_none=True)
    return time.perf_counter() - start, time.process_time() - cpu


def load_avg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def speed(args, path, tokenizer, style, questions) -> dict:
    import torch

    from edgemed.batching import AnswerOnlyCollator, encode_question
    from edgemed.train.cpu import register_fp32_sdpa
    from edgemed.train.data import length_grouped_order

    b = args.batch_size
    warm_qs = questions[: args.warmup * b]
    timed_qs = questions[args.warmup * b: (args.warmup + args.steps) * b]
    collate = AnswerOnlyCollator(tokenizer.pad_token_id)

    def chunks(items):
        return [items[i:i + b] for i in range(0, len(items), b)]

    warm_ex = [encode_question(tokenizer, style, q) for q in warm_qs]
    timed_ex = [encode_question(tokenizer, style, q) for q in timed_qs]
    grouped = [timed_ex[i] for i in length_grouped_order([len(e["input_ids"]) for e in timed_ex], b, args.seed)]
    dynamic = [collate(c) for c in chunks(warm_ex)] + [collate(c) for c in chunks(timed_ex)]
    by_length = [collate(c) for c in chunks(warm_ex)] + [collate(c) for c in chunks(grouped)]
    reference = [reference_batch(tokenizer, style, c) for c in chunks(warm_qs) + chunks(timed_qs)]
    plan = {  # batches, answer-position logits, bf16 autocast
        "notebook": (reference, False, False),
        "answer_only": (dynamic, False, False),
        "grouped": (by_length, False, False),
        "answer_logits": (by_length, True, False),
        "fast_dropout": (by_length, True, False),
        "bf16_sdpa": (by_length, True, True),
        "bf16_attn": (by_length, True, True),
        "bf16": (by_length, True, True),
    }
    plan = {k: v for k, v in plan.items() if k in args.setups}
    fp32_attention = register_fp32_sdpa()
    fast = ("fast_dropout", "bf16_sdpa", "bf16_attn", "bf16")
    models = {name: lora_model(path, args.seed, fp32_attention if name in ("bf16_attn", "bf16") else "sdpa",
                               fast_dropout=name in fast, bf16_model=name == "bf16")
              for name in plan}
    times: dict[str, list[float]] = {name: [] for name in plan}
    cpu_times: dict[str, list[float]] = {name: [] for name in plan}
    loads = []
    for i in range(args.warmup + args.steps):
        for name, (batches, logits, bf16) in plan.items():
            seconds, cpu = step(*models[name], batches[i], logits, bf16)
            if i >= args.warmup:
                times[name].append(seconds)
                cpu_times[name].append(cpu)
        loads.append(load_avg())
        print(f"  step {i + 1}/{args.warmup + args.steps}: "
              + ", ".join(f"{k} {times[k][-1]:.2f}s" for k in plan if times[k]), flush=True)
    results = {}
    for name, (batches, _, _) in plan.items():
        timed = batches[args.warmup:]
        secs = sum(times[name])
        trained = sum(int((t["labels"][:, 1:] != -100).sum()) for t in timed)
        real = sum(int(t["attention_mask"].sum()) for t in timed)
        padded = sum(t["input_ids"].numel() for t in timed)
        answer = sum(int((t["labels"][:, 1:] != -100).sum()) for t in (by_length if name == "notebook" else batches)
                     [args.warmup:])  # the answer tokens of the same questions (the notebook trains on all)
        results[name] = {
            "label": SETUPS[name],
            "seconds_per_step_mean": secs / len(times[name]),
            "seconds_per_step_median": statistics.median(times[name]),
            "cpu_seconds_per_step_mean": sum(cpu_times[name]) / len(cpu_times[name]),
            "seq_len_mean": statistics.mean(t["input_ids"].shape[1] for t in timed),
            "padded_tokens": padded, "real_tokens": real, "loss_tokens": trained, "answer_tokens": answer,
            "padded_tokens_per_second": padded / secs, "real_tokens_per_second": real / secs,
            "answer_tokens_per_second": answer / secs,
        }
    base = results.get("notebook")
    prev = None
    for r in results.values():
        if base:
            r["speedup_vs_notebook"] = base["seconds_per_step_mean"] / r["seconds_per_step_mean"]
            r["cpu_speedup_vs_notebook"] = base["cpu_seconds_per_step_mean"] / r["cpu_seconds_per_step_mean"]
        if prev:
            r["speedup_vs_previous"] = prev["seconds_per_step_mean"] / r["seconds_per_step_mean"]
            r["cpu_speedup_vs_previous"] = prev["cpu_seconds_per_step_mean"] / r["cpu_seconds_per_step_mean"]
        prev = r
    return {"setups": results, "load_avg_1min": [x for x in loads if x is not None],
            "threads": torch.get_num_threads()}


def score(path: str, adapter: Path, tokenizer, style, questions, batch_size: int) -> list[tuple[float, int]]:
    """Per question (summed answer-token cross-entropy, answer tokens), float32, no dropout."""
    import torch
    import torch.nn.functional as F
    from peft import PeftModel

    from edgemed.batching import AnswerOnlyCollator, encode_question
    from edgemed.models import load_model, pick_device

    model = PeftModel.from_pretrained(load_model(path, pick_device("cpu", "float32")), str(adapter)).eval()
    collate = AnswerOnlyCollator(tokenizer.pad_token_id)
    out = []
    with torch.no_grad():
        for i in range(0, len(questions), batch_size):
            batch = collate([encode_question(tokenizer, style, q) for q in questions[i:i + batch_size]])
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            ce = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
            for row in range(labels.shape[0]):
                out.append((float(ce[row].sum()), int((labels[row] != -100).sum())))
    return out


def paired(a: list[tuple[float, int]], b: list[tuple[float, int]]) -> dict:
    """Token-weighted eval loss of a and b, and b - a with a standard error from the per-question differences."""
    loss_a = sum(x for x, _ in a) / sum(n for _, n in a)
    loss_b = sum(x for x, _ in b) / sum(n for _, n in b)
    diffs = [(xb - xa) / n for (xa, n), (xb, _) in zip(a, b, strict=True)]
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
    return {"a": loss_a, "b": loss_b, "diff": loss_b - loss_a, "se": se}


def quality_run(job: tuple) -> tuple[dict, list]:
    """One train_lora run and its adapter scored in float32, in a fresh process (see quality())."""
    import torch

    from edgemed.data import load_questions
    from edgemed.models import load_tokenizer, resolve_model
    from edgemed.prompts import detect_style, get_style
    from edgemed.train.recipe import train_lora

    args, out, dtype, seed = job
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    m = train_lora(args.model, args.data, out, dtype=dtype, seed=seed, max_steps=args.quality_steps,
                   batch_size=args.batch_size, eval_data=args.eval_data, eval_limit=args.eval_limit,
                   eval_steps=args.quality_steps, threads=args.threads)
    path = resolve_model(args.model)
    tokenizer = load_tokenizer(path)
    tokenizer.padding_side = "right"
    style = get_style(detect_style(tokenizer.chat_template))
    eval_qs = load_questions(args.eval_data, "validation", skip_bad=True)[0][: args.eval_limit]
    metrics = {"dtype": m["dtype"], "seed": seed, "eval_loss_before": m["eval_loss_before"],
               "eval_loss_after": m["eval_loss_after"], "train_loss": m["train_loss"],
               "throughput": m["throughput"], "seconds": time.time() - started, "load_avg_1min": load_avg()}
    return metrics, score(path, Path(out) / "adapter", tokenizer, style, eval_qs, args.batch_size)


def quality(args) -> dict:
    """float32 and bf16 (same seed) and float32 with the next seed, each in its own process, run side by
    side so that a busy machine slows all alike (and no process state carries from one run to the next)."""
    import multiprocessing

    runs = {"float32": ("float32", args.seed), "bfloat16": ("bfloat16", args.seed),
            "float32_seed2": ("float32", args.seed + 1)}
    with tempfile.TemporaryDirectory(prefix="edgemed-bench-") as tmp:
        jobs = [(args, str(Path(tmp) / name), dtype, seed) for name, (dtype, seed) in runs.items()]
        with multiprocessing.get_context("spawn").Pool(len(jobs), maxtasksperchild=1) as pool:  # one run each
            done = dict(zip(runs, pool.map(quality_run, jobs), strict=True))
    metrics = {name: m for name, (m, _) in done.items()}
    scores = {name: s for name, (_, s) in done.items()}
    eval_qs = next(iter(scores.values()))
    return {"steps": args.quality_steps, "eval_questions": len(eval_qs), "runs": metrics,
            "fp32_eval": {name: paired(scores["float32"], s)["b"] for name, s in scores.items()},
            "bf16_minus_fp32": paired(scores["float32"], scores["bfloat16"]),
            "seed2_minus_seed1_fp32": paired(scores["float32"], scores["float32_seed2"])}


def main() -> None:
    import random

    import torch

    from edgemed.data import load_questions
    from edgemed.models import load_tokenizer, resolve_model
    from edgemed.prompts import detect_style, get_style

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data", default=str(DEFAULT_DATA) if DEFAULT_DATA.exists() else "sample")
    ap.add_argument("--eval-data", default=str(DEFAULT_EVAL) if DEFAULT_EVAL.exists() else "sample")
    ap.add_argument("--eval-limit", type=int, default=200, help="eval questions for the float32 vs bf16 check")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per setup")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per setup first")
    ap.add_argument("--setups", type=lambda s: s.split(","), default=list(SETUPS),
                    help=f"comma-separated subset of {','.join(SETUPS)}")
    ap.add_argument("--quality-steps", type=int, default=0,
                    help="train float32 and bf16 runs this many steps with train_lora and compare their eval loss")
    ap.add_argument("--no-speed", action="store_true", help="skip the step timing (only --quality-steps)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the numbers to this JSON file")
    args = ap.parse_args()
    unknown = set(args.setups) - set(SETUPS)
    if unknown:
        raise SystemExit(f"unknown setup(s) {', '.join(sorted(unknown))}; known: {', '.join(SETUPS)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    path = resolve_model(args.model)
    tokenizer = load_tokenizer(path)
    tokenizer.padding_side = "right"
    style = get_style(detect_style(tokenizer.chat_template))
    questions, _ = load_questions(args.data, skip_bad=True)
    random.Random(args.seed).shuffle(questions)
    need = (args.warmup + args.steps) * args.batch_size
    if len(questions) < need:
        raise SystemExit(f"{args.data} has {len(questions)} questions; {need} are needed")
    report = {"model": args.model, "data": args.data, "batch_size": args.batch_size, "steps": args.steps,
              "warmup": args.warmup, "cpu": cpu_name(), "cpus": os.cpu_count(), "load_avg_before": load_avg()}
    print(f"model {args.model}, data {args.data}, batch size {args.batch_size}, {args.steps} timed steps after "
          f"{args.warmup} warm-up, torch threads {torch.get_num_threads()}, CPU {report['cpu']} x{report['cpus']}, "
          f"load {report['load_avg_before']}", flush=True)
    report["speed"] = speed(args, path, tokenizer, style, questions) if not args.no_speed else {
        "setups": {}, "load_avg_1min": []}
    loads = report["speed"]["load_avg_1min"]
    if report["speed"]["setups"]:
        print_speed(report)
    if loads:
        print(f"load average (1 min) during the timed steps: {min(loads):.2f}-{max(loads):.2f} "
              f"on {report['cpus']} CPUs")
    print_default(report)
    if args.quality_steps:
        run_and_print_quality(args, report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


def print_speed(report: dict) -> None:
    print(f"\n{'setup':<46} {'s/step':>7} {'median':>7} {'CPU s':>6} {'seq len':>7} {'padded tok/s':>12} "
          f"{'answer tok/s':>12} {'vs prev':>7} {'vs notebook':>11} {'(CPU s)':>7}")
    for r in report["speed"]["setups"].values():
        prev = f"{r['speedup_vs_previous']:.2f}x" if "speedup_vs_previous" in r else ""
        nb = f"{r['speedup_vs_notebook']:.2f}x" if "speedup_vs_notebook" in r else ""
        nb_cpu = f"{r['cpu_speedup_vs_notebook']:.2f}x" if "cpu_speedup_vs_notebook" in r else ""
        print(f"{r['label']:<46} {r['seconds_per_step_mean']:>7.3f} {r['seconds_per_step_median']:>7.3f} "
              f"{r['cpu_seconds_per_step_mean']:>6.2f} {r['seq_len_mean']:>7.1f} "
              f"{r['padded_tokens_per_second']:>12.0f} "
              f"{r['answer_tokens_per_second']:>12.1f} {prev:>7} {nb:>11} {nb_cpu:>7}")
    print("s/step: wall-clock mean over the timed steps; CPU s: this process's CPU seconds per step (with one "
          "thread, robust to other work on the machine; with several it also counts threads spinning at barriers)")


def print_default(report: dict) -> None:
    """Which setup `edgemed train --dtype auto` runs on this CPU, and its ratio to the notebook."""
    from edgemed.devices import auto_dtype

    dtype = auto_dtype("cpu", "train")
    name = "bf16" if dtype == "bfloat16" else "fast_dropout"
    report["default_setup"] = {"dtype": dtype, "setup": name}
    row = report["speed"]["setups"].get(name)
    if row and "speedup_vs_notebook" in row:
        report["default_setup"]["speedup_vs_notebook"] = row["speedup_vs_notebook"]
        print(f"edgemed's default on this CPU (--dtype auto = {dtype}) is the row '{row['label']}': "
              f"{row['speedup_vs_notebook']:.2f}x the notebook's s/step ({row['cpu_speedup_vs_notebook']:.2f}x in "
              "CPU seconds)")


def run_and_print_quality(args, report: dict) -> None:
    print(f"\nfloat32 vs bf16: {args.quality_steps} steps each through train_lora ...", flush=True)
    q = report["quality"] = quality(args)
    for name, r in q["runs"].items():
        t = r["throughput"]
        print(f"  {name:<14} {r['dtype']:<9} seed {r['seed']}: eval loss {r['eval_loss_before']:.4f} -> "
              f"{r['eval_loss_after']:.4f} (own precision), {q['fp32_eval'][name]:.4f} scored in float32; "
              f"{t['seconds_per_step']:.2f} s/step ({t['cpu_seconds_per_step']:.2f} CPU s), "
              f"{t['trained_tokens_per_second']:.1f} trained / "
              f"{t['padded_tokens_per_second']:.0f} padded tok/s, peak RSS {t['peak_rss_mb']} MiB")
    d, s = q["bf16_minus_fp32"], q["seed2_minus_seed1_fp32"]
    print(f"  bf16 - fp32 (same seed), float32-scored eval loss on {q['eval_questions']} questions: "
          f"{d['diff']:+.4f} ± {d['se']:.4f} (SE); fp32 seed {args.seed + 1} - seed {args.seed}: "
          f"{s['diff']:+.4f} ± {s['se']:.4f}")


if __name__ == "__main__":
    main()
