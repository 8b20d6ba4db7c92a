#!/usr/bin/env python
"""How much faster is letter log-prob scoring than the reference notebook's evaluation?

Same model, same questions: `logprob` scoring (one batched forward pass per question) against the notebook's
method (sample up to 100 new tokens per question at temperature 0.7 and judge the text). Prints questions per
second for both and their ratio, and checks that a logprob re-run gives identical predictions and probabilities.
The notebook method is slow, so it can be timed on the first --notebook-limit questions (its cost is per
question, so the rate carries over); the output says when it was.

    .venv/bin/python scripts/dev/bench_eval_speed.py                       # smollm2-135m, 200 questions
    .venv/bin/python scripts/dev/bench_eval_speed.py --notebook-limit 20 --json /tmp/speed.json

No assertions on time: it prints numbers (and exits 1 only if the logprob re-run differs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # scripts/dev/ -> the repo
DEFAULT_DATA = REPO.parent / "shared" / "data" / "medmcqa" / "validation.jsonl"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="alias, model folder, artifact folder or .gguf")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("-n", "--questions", type=int, default=200)
    ap.add_argument("--notebook-limit", type=int, default=None,
                    help="time the notebook method on only the first N questions (default: all)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", default="auto", help="transformers weights dtype: auto (float32 on CPU), bfloat16")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-new-tokens", type=int, default=100)
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args(argv)

    from edgemed.cli.eval import resolve_artifact
    from edgemed.data import load_questions
    from edgemed.evaluator.run import evaluate, question_seed
    from edgemed.lineage import prompt_style_for
    from edgemed.prompts import get_style, stop_strings
    from edgemed.runtimes.base import open_runtime

    questions = load_questions(args.data, limit=args.questions)[0]
    k = min(args.notebook_limit or len(questions), len(questions))
    print(f"model {args.model} (dtype {args.dtype}, threads {args.threads or 'default'}), {len(questions)} questions "
          f"from {args.data}; load average {os.getloadavg()[0]:.1f}")
    options = {"dtype": args.dtype} if args.dtype != "auto" else {}
    with open_runtime(resolve_artifact(args.model), threads=args.threads, **options) as rt:
        evaluate(rt, questions[:2], show_progress=False, batch_size=args.batch_size)  # warm-up
        runs = []
        for _ in range(2):
            t0 = time.perf_counter()
            res = evaluate(rt, questions, show_progress=False, batch_size=args.batch_size)
            runs.append((time.perf_counter() - t0, res))
        (t_lp, lp), (t_lp2, lp2) = runs
        identical = [(p["predicted"], p["probs"]) for p in lp.predictions] == [
            (p["predicted"], p["probs"]) for p in lp2.predictions
        ]
        t0 = time.perf_counter()
        nb = evaluate(rt, questions[:k], scoring="legacy", show_progress=True, letter_probs=False,
                      max_new_tokens=args.max_new_tokens, temperature=args.temperature)
        t_nb = time.perf_counter() - t0
        # the model usually ends its turn long before 100 tokens; what 100 tokens every time would cost,
        # from this run's own prefill and per-token decode times
        prefill_s, decode_s, decoded = 0.0, 0.0, 0
        style = prompt_style_for(rt.path, rt.chat_template)[0]
        for q in questions[: min(k, 5)]:
            g = rt.generate(get_style(style).prompt(q), max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, seed=question_seed(0, q.id), stop=stop_strings(style))
            prefill_s += g.ttft_s
            decode_s += g.decode_s
            decoded += max(g.new_tokens - 1, 0)
        per_token = decode_s / decoded if decoded else float("nan")
        full_s = prefill_s / min(k, 5) + (args.max_new_tokens - 1) * per_token
        info = rt.info()

    lp_rate = len(questions) / min(t_lp, t_lp2)
    nb_rate = k / t_nb
    lg = nb.metrics["legacy"]
    out = {
        "model": args.model,
        "dtype": args.dtype,
        "runtime": info,
        "questions": len(questions),
        "logprob": {"seconds": [t_lp, t_lp2], "questions_per_s": lp_rate, "accuracy": lp.accuracy,
                    "accuracy_ci": list(lp.accuracy_ci), "rerun_identical": identical, "batch_size": args.batch_size},
        "notebook": {"questions_timed": k, "seconds": t_nb, "questions_per_s": nb_rate,
                     "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
                     "new_tokens_per_question": nb.timing.get("new_tokens_per_question"),
                     "strict_letter_accuracy": nb.accuracy, "legacy_exact_rate": lg["exact_rate"],
                     "legacy_partial_rate": lg["partial_rate"],
                     "wrong_letter_judged_right_partial": lg["false_positive_rate_partial"]},
        "speedup": lp_rate / nb_rate,
        "full_length": {"s_per_question": full_s, "decode_s_per_token": per_token,
                        "questions_per_s": 1 / full_s, "speedup": lp_rate * full_s,
                        "how": f"prefill + {args.max_new_tokens - 1} x measured decode time per token (no early stop)"},
        "load_average_end": os.getloadavg()[0],
    }
    subset = f" (timed on the first {k} of {len(questions)}; the rate is per question)" if k < len(questions) else ""
    print(f"logprob : {lp_rate:8.2f} questions/s  (best of 2 runs: {t_lp:.1f} s, {t_lp2:.1f} s; "
          f"batch {args.batch_size}); accuracy {lp.accuracy:.3f} "
          f"[{lp.accuracy_ci[0]:.3f}, {lp.accuracy_ci[1]:.3f}]")
    print(f"notebook: {nb_rate:8.3f} questions/s  ({t_nb:.1f} s for {k} questions, "
          f"{out['notebook']['new_tokens_per_question']:.1f} new tokens/question at T={args.temperature}){subset}")
    print(f"          legacy exact {lg['exact_rate']:.3f}, partial {lg['partial_rate']:.3f}, strict letter "
          f"{nb.accuracy:.3f}; wrong letters judged right by 'partial': {lg['false_positive_rate_partial']:.1%}")
    print(f"speedup : {out['speedup']:.1f}x as run (the model ends its answer early; target >= 30x on this CPU)")
    print(f"          {lp_rate * full_s:.1f}x against all {args.max_new_tokens} tokens sampled every time "
          f"({full_s:.2f} s/question = prefill + {args.max_new_tokens - 1} x {1000 * per_token:.1f} ms measured "
          "per decoded token)")
    print(f"re-run  : logprob predictions and probabilities {'IDENTICAL' if identical else 'DIFFER'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
