#!/usr/bin/env python
"""How often a served model's threshold abstains on questions outside medicine: posts the shipped non-medical set
(edgemed/serve/non_medical.jsonl) and, for comparison, MedMCQA questions to /v1/mcq of a running edgemed serve.

Usage:
    python scripts/dev/serve_abstention.py http://127.0.0.1:8000 MODEL \
        [--medical ../shared/data/medmcqa --offset 250 --limit 100]
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def rate(base: str, model: str, questions, key: str | None) -> dict:
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    abstained, answered_right, n, threshold = 0, 0, 0, None
    with httpx.Client(timeout=120, headers=headers) as client:
        for q in questions:
            r = client.post(f"{base.rstrip('/')}/v1/mcq", json={"model": model, "question": q.question,
                                                                "options": list(q.options)})
            r.raise_for_status()
            body = r.json()
            threshold = body["threshold"]
            n += 1
            abstained += body["abstained"]
            answered_right += (not body["abstained"]) and body["letter"] == q.gold_letter
    return {"n": n, "abstained": abstained, "abstention_rate": abstained / n if n else None,
            "answered_correct": answered_right, "threshold": threshold}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url")
    ap.add_argument("model")
    ap.add_argument("--medical", help="MedMCQA folder or file to compare with")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--offset", type=int, default=0,
                    help="skip the first N (e.g. those the threshold was calibrated on)")
    ap.add_argument("--limit", type=int, default=100)
    args = ap.parse_args()
    from edgemed.data import load_questions
    from edgemed.serve.abstain import NON_MEDICAL

    key = os.environ.get("EDGEMED_API_KEY")
    out = {"non_medical": rate(args.url, args.model, load_questions(str(NON_MEDICAL))[0], key)}
    if args.medical:
        questions = load_questions(args.medical, args.split)[0]
        out["medical"] = rate(args.url, args.model, questions[args.offset : args.offset + args.limit], key)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
