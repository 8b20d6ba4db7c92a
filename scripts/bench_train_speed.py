#!/usr/bin/env python
"""Seconds per LoRA training step: edgemed's setup vs the reference notebook's, same model/data/batch size.

- edgemed:   loss on the answer tokens only, each batch padded to its own longest example.
- reference: loss on every token, every sequence padded to 256 tokens (padding="max_length").

Both run the same LoRA config (r=16, alpha=32, q/k/v/o/gate/up/down) on the same questions in the same
order; steps alternate between the two setups so that a busy machine slows both alike. Each step is
forward + backward + AdamW step. Prints a table and, with --out, writes the numbers as JSON.

    python scripts/bench_train_speed.py                       # smollm2-135m, 2 warm-up + 10 timed steps each
    python scripts/bench_train_speed.py --model tiny-random --steps 5 --batch-size 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

REFERENCE_LENGTH = 256
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "medmcqa" / "train.jsonl"


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


def lora_model(path: str, seed: int):
    import torch
    from peft import LoraConfig, get_peft_model

    from edgemed.models import load_model, pick_device
    from edgemed.training import LORA_TARGETS

    torch.manual_seed(seed)
    model = load_model(path, pick_device("cpu", "float32"))
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.1, target_modules=list(LORA_TARGETS),
                                             task_type="CAUSAL_LM"))
    model.train()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    return model, optim


def step(model, optim, batch) -> float:
    start = time.perf_counter()
    loss = model(**batch).loss
    loss.backward()
    optim.step()
    optim.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    import random

    import torch

    from edgemed.batching import AnswerOnlyCollator, encode_question
    from edgemed.data import load_questions
    from edgemed.models import load_tokenizer, resolve_model
    from edgemed.prompts import detect_style, get_style

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data", default=str(DEFAULT_DATA) if DEFAULT_DATA.exists() else "sample")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per setup")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per setup first")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the numbers to this JSON file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    path = resolve_model(args.model)
    tokenizer = load_tokenizer(path)
    tokenizer.padding_side = "right"
    style = get_style(detect_style(tokenizer.chat_template))
    questions, _ = load_questions(args.data, skip_bad=True)
    random.Random(args.seed).shuffle(questions)
    n_batches = args.warmup + args.steps
    need = n_batches * args.batch_size
    if len(questions) < need:
        raise SystemExit(f"{args.data} has {len(questions)} questions; {need} are needed")
    collate = AnswerOnlyCollator(tokenizer.pad_token_id)
    chunks = [questions[i * args.batch_size:(i + 1) * args.batch_size] for i in range(n_batches)]
    setups = {
        "edgemed (answer-only loss, dynamic padding)": [
            collate([encode_question(tokenizer, style, q) for q in chunk]) for chunk in chunks
        ],
        f"reference (loss on all tokens, pad to {REFERENCE_LENGTH})": [
            reference_batch(tokenizer, style, chunk) for chunk in chunks
        ],
    }
    models = {name: lora_model(path, args.seed) for name in setups}
    times: dict[str, list[float]] = {name: [] for name in setups}
    for i in range(n_batches):
        for name, batches in setups.items():
            seconds = step(*models[name], batches[i])
            if i >= args.warmup:
                times[name].append(seconds)

    results = {}
    for name, batches in setups.items():
        timed = batches[args.warmup:]
        results[name] = {
            "seconds_per_step_mean": statistics.mean(times[name]),
            "seconds_per_step_median": statistics.median(times[name]),
            "seq_len_mean": statistics.mean(b["input_ids"].shape[1] for b in timed),
            "tokens_per_batch": statistics.mean(b["input_ids"].numel() for b in timed),
            "real_tokens_per_batch": statistics.mean(int(b["attention_mask"].sum()) for b in timed),
            "loss_tokens_per_batch": statistics.mean(int((b["labels"] != -100).sum()) for b in timed),
        }
    (fast, a), (slow, b) = list(results.items())
    speedup = b["seconds_per_step_median"] / a["seconds_per_step_median"]
    print(f"model {args.model}, data {args.data}, batch size {args.batch_size}, {args.steps} timed steps "
          f"after {args.warmup} warm-up, torch threads {torch.get_num_threads()}")
    print(f"{'setup':<48} {'s/step (median)':>15} {'s/step (mean)':>13} {'seq len':>8} {'loss tokens':>11}")
    for name, r in results.items():
        print(f"{name:<48} {r['seconds_per_step_median']:>15.3f} {r['seconds_per_step_mean']:>13.3f} "
              f"{r['seq_len_mean']:>8.1f} {r['loss_tokens_per_batch']:>11.1f}")
    print(f"speed-up (median): {speedup:.2f}x")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": args.model, "data": args.data, "batch_size": args.batch_size,
                                        "steps": args.steps, "warmup": args.warmup,
                                        "threads": torch.get_num_threads(), "results": results,
                                        "speedup_median": speedup}, indent=2) + "\n")


if __name__ == "__main__":
    main()
