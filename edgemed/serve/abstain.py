"""The threshold each served artifact answers multiple-choice questions with, and the answer of POST /v1/mcq.

The threshold comes from the ``selective`` block that ``edgemed eval`` writes into results.json (calibrated on the
artifact's recorded evaluation side), matched to the served artifact by its sha256: a threshold calibrated on other
bytes is refused. ``--threshold`` overrides it for every artifact. Without either, nothing is calibrated and every
question is abstained on (a medical answer is never given on an uncalibrated confidence)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemed.errors import EdgemedError
from edgemed.serve.protocol import LETTERS

NON_MEDICAL = Path(__file__).with_name("non_medical.jsonl")  # questions outside medicine, MedMCQA's row format
DEFAULT_DISCLAIMER = ("Not medical advice. An automated answer to a multiple-choice question, for use by qualified "
                      "professionals only; verify it before acting on it.")


@dataclass(frozen=True)
class Threshold:
    value: float | None  # None: answer nothing
    source: str
    calibration: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"threshold": self.value, "source": self.source}
        if self.calibration:
            out.update({k: self.calibration.get(k) for k in ("rule", "target_error", "delta", "coverage_asked",
                                                               "method")
                        if self.calibration.get(k) is not None})
            out["on_calibration"] = self.calibration.get("calibration")
        return out


def read_calibrations(files: list[Path]) -> dict[str, tuple[dict[str, Any], Path]]:
    """sha256 -> (selective block, file) from eval results.json files (exit 2 for a file without one)."""
    from edgemed.fsutil import read_json

    out: dict[str, tuple[dict[str, Any], Path]] = {}
    for file in files:
        file = Path(file)
        if file.is_dir():
            file = file / "results.json"
        doc = read_json(file, "calibration file", "pass the results.json that 'edgemed eval --out DIR' wrote")
        block = doc.get("selective") if isinstance(doc, dict) else None
        if not isinstance(block, dict) or not block.get("artifact_sha256"):
            raise EdgemedError(f"{file} has no calibrated threshold (no 'selective' block with the artifact's sha256)"
                               "; re-run 'edgemed eval ARTIFACT --out DIR' with this edgemed")
        if (block.get("calibrated_on") or {}).get("trained_questions_included"):
            raise EdgemedError(f"{file} was calibrated on questions the model trained on (--include-trained): its "
                               "threshold would not hold on new questions; re-run eval on the recorded evaluation side")
        out[block["artifact_sha256"]] = (block, file)
    return out


def threshold_for(sha256: str, artifact_id: str, calibrations: dict[str, tuple[dict[str, Any], Path]],
                  override: float | None) -> Threshold:
    if override is not None:
        return Threshold(override, "--threshold")
    found = calibrations.get(sha256)
    if found is None:
        return Threshold(None, "not calibrated: pass --calibration results.json (from 'edgemed eval') or --threshold")
    block, file = found
    return Threshold(block.get("threshold"), f"{file} ({block.get('rule')})", block)


def answer(probs: list[float] | None, threshold: Threshold) -> dict[str, Any]:
    """The letter (None when abstaining), its probability and why it was or was not given."""
    if probs is None:
        return {"letter": None, "probability": None, "probabilities": None, "abstained": True,
                "reason": "the model gave no valid probabilities for A-D"}
    best = max(range(4), key=lambda i: probs[i])
    p = probs[best]
    abstained = threshold.value is None or p < threshold.value
    if threshold.value is None:
        reason = "no threshold is certified for this model: every question is abstained on"
    elif abstained:
        reason = f"the most likely letter's probability {p:.3f} is below the threshold {threshold.value:.3f}"
    else:
        reason = f"probability {p:.3f} >= threshold {threshold.value:.3f}"
    return {"letter": None if abstained else LETTERS[best], "probability": p,
            "probabilities": dict(zip(LETTERS, probs, strict=True)), "abstained": abstained, "reason": reason}
