"""Two artifacts on the same questions: agreement, KL of the letter distributions, exact McNemar test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgemed.data.medmcqa import LETTERS
from edgemed.errors import EdgemedError
from edgemed.evaluator import metrics as m
from edgemed.fsutil import read_json, read_jsonl, require_regular_file

PREDICTIONS = "predictions.jsonl"
RESULTS = "results.json"


def compare(reference_predictions: list[dict], predictions: list[dict]) -> dict[str, Any]:
    """Compare predictions with a reference's on the questions both answered (matched by id).

    b = reference right and this wrong, c = reference wrong and this right; the McNemar p-value is the
    exact two-sided binomial test of b against c. KL is KL(reference || this) over A-D, in nats.
    """
    ref = {str(p["id"]): p for p in reference_predictions}
    this = {str(p["id"]): p for p in predictions}
    ids = [i for i in this if i in ref]
    if not ids:
        raise EdgemedError(
            "the reference shares no question ids with this run; compare runs on the same data and split"
        )
    gold_mismatch = [i for i in ids if ref[i]["gold"] != this[i]["gold"]]
    if gold_mismatch:
        raise EdgemedError(
            f"{len(gold_mismatch)} matched questions have different gold letters in the reference (first id "
            f"{gold_mismatch[0]}); the runs read differently labelled data (check --cop-base)"
        )
    pairs = [(ref[i], this[i]) for i in ids]
    b = sum(1 for r, t in pairs if r["correct"] and not t["correct"])
    c = sum(1 for r, t in pairs if not r["correct"] and t["correct"])
    n = len(pairs)
    acc_ref = sum(bool(r["correct"]) for r, _ in pairs) / n
    acc_this = sum(bool(t["correct"]) for _, t in pairs) / n
    with_probs = [(r, t) for r, t in pairs if r.get("probs") and t.get("probs")]
    out: dict[str, Any] = {
        "n": n,
        "only_in_reference": len(ref) - n,
        "only_in_this": len(this) - n,
        "agreement": sum(1 for r, t in pairs if r["predicted"] == t["predicted"]) / n,
        "mean_kl": None,
        "max_kl": None,
        "accuracy_reference": acc_ref,
        "accuracy": acc_this,
        "accuracy_difference": acc_this - acc_ref,
        "b_reference_only_correct": b,
        "c_this_only_correct": c,
        "mcnemar_p": m.mcnemar_exact(b, c),
        "discordant_rate": (b + c) / n,
    }
    if with_probs:
        p = np.array([[r["probs"][a] for a in LETTERS] for r, _ in with_probs])
        q = np.array([[t["probs"][a] for a in LETTERS] for _, t in with_probs])
        kl = m.kl_divergence(p, q)
        out.update(mean_kl=float(kl.mean()), max_kl=float(kl.max()), n_kl=len(with_probs))
    return out


def load_predictions(path: Path) -> tuple[list[dict], Path]:
    """Predictions of an earlier eval: a predictions.jsonl, a results.json beside one, or the eval's folder."""
    path = require_regular_file(Path(path), "reference")
    if path.is_dir():
        path = path / PREDICTIONS
    elif path.name.endswith(".json"):
        results = read_json(path, "reference results.json", "give an eval's results or predictions file")
        name = results.get("predictions_file", PREDICTIONS) if isinstance(results, dict) else PREDICTIONS
        path = path.parent / name
    if not path.is_file():
        raise EdgemedError(f"reference predictions {path} not found; point --reference at an earlier eval's "
                           f"{PREDICTIONS}, {RESULTS} or --out folder")
    rows = []
    for n, row in read_jsonl(path, "regenerate it with 'edgemed eval'"):
        if not isinstance(row, dict) or not {"id", "gold", "predicted", "correct"} <= set(row):
            raise EdgemedError(f"{path}: line {n} lacks id/gold/predicted/correct; it is not an eval's "
                               f"{PREDICTIONS}")
        probs = row.get("probs")
        if probs is not None and not (isinstance(probs, dict) and all(
                isinstance(probs.get(a), int | float) and not isinstance(probs.get(a), bool) for a in LETTERS)):
            raise EdgemedError(f"{path}: line {n} has 'probs' that are not numbers for {', '.join(LETTERS)}; "
                               "regenerate it with 'edgemed eval'")
        rows.append(row)
    if not rows:
        raise EdgemedError(f"{path} has no predictions")
    return rows, path
