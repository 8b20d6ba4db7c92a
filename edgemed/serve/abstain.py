"""The threshold each served artifact answers multiple-choice questions with, and the answer of POST /v1/mcq.

The threshold comes from ``edgemed eval``'s results.json (its ``selective`` block) or from an ``edgemed bench``
bench.json (each artifact's row), both calibrated on the questions they scored and tied to the artifact's sha256.
A calibration is used for a served artifact only when it was computed on the same bytes (sha256) and on the
evaluation side the artifact's lineage records (never on questions it trained on); a file that names the served
artifact with other bytes, or another side, is refused (exit 2) naming both. ``--threshold`` overrides it for
every artifact. Without either, nothing is calibrated and every question is abstained on (a medical answer is
never given on an uncalibrated confidence)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemed.errors import EdgemedError
from edgemed.serve.protocol import LETTERS

NON_MEDICAL = Path(__file__).with_name("non_medical.jsonl")  # questions outside medicine, MedMCQA's row format
DEFAULT_DISCLAIMER = ("Not medical advice. An automated answer to a multiple-choice question, for use by qualified "
                      "professionals only; verify it before acting on it.")
EVAL_SIDE = "recorded evaluation side"  # how scoring_questions names the questions a lineage holds out


@dataclass(frozen=True)
class Calibration:
    """One calibrated threshold read from a file: results.json (eval) or one row of bench.json (bench)."""

    sha256: str
    block: dict[str, Any]  # threshold, rule, target_error/coverage_asked, delta, method, calibration
    side: dict[str, Any]  # the questions it was calibrated on: source, split, selection, questions, ...
    prompt_style: str | None
    file: Path
    kind: str  # "results.json" or "bench.json"
    name: str | None = None  # the bench row's artifact name
    path: str | None = None  # the artifact path the file records

    @property
    def where(self) -> str:
        return f"{self.file}" + (f" (row '{self.name}')" if self.name else "")


@dataclass(frozen=True)
class Threshold:
    value: float | None  # None: answer nothing
    source: str  # one line: where the threshold came from
    calibration: Calibration | None = None
    origin: str = "none"  # --threshold, results.json, bench.json or none

    @property
    def prompt_style(self) -> str | None:
        return self.calibration.prompt_style if self.calibration else None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"threshold": self.value, "source": self.source, "from": self.origin}
        if self.calibration:
            block = self.calibration.block
            out.update({k: block.get(k) for k in ("rule", "target_error", "delta", "coverage_asked", "method")
                        if block.get(k) is not None})
            out.update(file=str(self.calibration.file), calibrated_on=self.calibration.side,
                       on_calibration=block.get("calibration"))
            if self.calibration.name:
                out["bench_row"] = self.calibration.name
        return out


def _bench_block(extra: dict[str, Any]) -> dict[str, Any]:
    """A bench row's selective numbers (flat) in results.json's block shape."""
    from edgemed.evaluator.selective import METHOD

    n, share = extra.get("calibration_questions"), extra.get("answered_share")
    rule = extra.get("abstain_rule") or "target_error"
    return {"threshold": extra.get("abstain_threshold"), "rule": rule,
            "target_error": extra.get("abstain_target_error"), "coverage_asked": extra.get("abstain_coverage_asked"),
            "delta": extra.get("abstain_delta"),
            "method": METHOD if rule == "target_error" else None,
            "calibration": {"n": n, "answered": round(share * n) if n and share is not None else None,
                            "coverage": share, "selective_error": extra.get("answered_error"),
                            "selective_error_ci": [extra.get("answered_error_low"), extra.get("answered_error_high")]}}


def _bench_calibrations(doc: dict[str, Any], file: Path) -> list[Calibration]:
    """One calibration per bench.json row that carries selective numbers and the artifact's sha256."""
    side = (doc.get("settings") or {}).get("question_selection") or {}
    rows = [r for r in doc["artifacts"] if isinstance(r, dict) and isinstance(r.get("extra"), dict)
            and "aurc" in r["extra"]]
    found = [Calibration(r["extra"]["artifact_sha256"], _bench_block(r["extra"]), side,
                         (r.get("runtime_info") or {}).get("prompt_style"), file, "bench.json", str(r.get("name")),
                         r.get("path"))
             for r in rows if r["extra"].get("artifact_sha256")]
    if not found:
        why = "carry no artifact sha256: written by an older edgemed" if rows else "have no selective numbers"
        raise EdgemedError(f"{file} holds no threshold tied to an artifact's sha256 (its rows {why}); re-run "
                           "'edgemed bench ARTIFACT --out DIR' with this edgemed")
    return found


def read_calibrations(files: list[Path]) -> list[Calibration]:
    """Every calibrated threshold in the given results.json / bench.json files (or folders holding one); exit 2 for a
    file that holds none tied to an artifact's sha256."""
    from edgemed.fsutil import read_json

    out: list[Calibration] = []
    for file in files:
        file = Path(file)
        if file.is_dir():
            file = next((file / n for n in ("results.json", "bench.json") if (file / n).is_file()),
                        file / "results.json")
        doc = read_json(file, "calibration file", "pass the results.json of 'edgemed eval --out DIR' or the "
                        "bench.json of 'edgemed bench --out DIR'", want_object=True)
        if isinstance(doc.get("artifacts"), list) and "settings" in doc:
            out += _bench_calibrations(doc, file)
            continue
        block = doc.get("selective")
        if not isinstance(block, dict) or not block.get("artifact_sha256"):
            raise EdgemedError(f"{file} has no calibrated threshold (no 'selective' block with the artifact's sha256)"
                               "; re-run 'edgemed eval ARTIFACT --out DIR' with this edgemed")
        out.append(Calibration(block["artifact_sha256"], block, block.get("calibrated_on") or {},
                               block.get("prompt_style"), file, "results.json", None, doc.get("artifact")))
    return out


def _check_side(cal: Calibration, artifact_id: str, lineage: dict[str, Any] | None) -> None:
    """Refuse a threshold calibrated on questions the artifact trained on, or off its recorded evaluation side."""
    side = cal.side
    if side.get("trained_questions_included"):
        raise EdgemedError(f"{cal.where} was calibrated on questions the model trained on (--include-trained): its "
                           "threshold would not hold on new questions; re-run eval on the recorded evaluation side")
    if lineage and lineage.get("train_ids") is not None and not str(side.get("selection") or "").startswith(EVAL_SIDE):
        from edgemed.lineage import Lineage

        recorded = Lineage.from_dict(lineage, Path(cal.file)).describe_eval_side()
        raise EdgemedError(f"{cal.where}: the threshold of {artifact_id} was calibrated on {side.get('source')} "
                           f"({side.get('split')}, {side.get('selection') or 'not its evaluation side'}), but the "
                           f"artifact's lineage records its evaluation side as {recorded}; re-run "
                           f"'edgemed {'bench' if cal.kind == 'bench.json' else 'eval'}' without --data")


def match_calibrations(specs, calibrations: list[Calibration]) -> dict[str, Calibration]:
    """artifact id -> its calibration: same sha256, on its evaluation side. Exit 2 (naming both) for a file whose
    thresholds fit no served artifact, for a row or file recording a served artifact's path or name with other
    bytes, and for two calibrations of one artifact."""
    by_sha: dict[str, list[Calibration]] = {}
    for cal in calibrations:
        by_sha.setdefault(cal.sha256, []).append(cal)
    served = "; ".join(f"{s.id} sha256 {s.sha256[:12]}..." for s in specs)
    for file in dict.fromkeys(c.file for c in calibrations):
        mine = [c for c in calibrations if c.file == file]
        if not any(c.sha256 in {s.sha256 for s in specs} for c in mine):
            named = ", ".join(f"{c.name or c.path or 'the artifact'} sha256 {c.sha256[:12]}..." for c in mine)
            raise EdgemedError(f"{file} was calibrated on an artifact ({named}) that is not among those served "
                               f"({served}); give the results.json or bench.json of these artifacts' own eval/bench")
    out: dict[str, Calibration] = {}
    for spec in specs:
        found = by_sha.get(spec.sha256, [])
        if len(found) > 1:
            raise EdgemedError(f"{spec.id} has {len(found)} calibrations ({', '.join(c.where for c in found)}); "
                               "give one --calibration per artifact")
        if not found:
            stale = [c for c in calibrations if c.name == spec.id or (c.path and _same_path(c.path, spec.path))]
            if stale:
                c = stale[0]
                raise EdgemedError(f"{c.where} records {c.name or c.path} with sha256 {c.sha256[:12]}..., but the "
                                   f"served {spec.id} ({spec.path}) has sha256 {spec.sha256[:12]}...: the file "
                                   "changed since it was measured; re-run eval or bench on the served artifact")
            continue
        _check_side(found[0], spec.id, spec.lineage)
        out[spec.id] = found[0]
    return out


def _same_path(recorded: str, path: Path) -> bool:
    try:
        return Path(recorded).resolve() == Path(path).resolve()
    except OSError:
        return False


def threshold_for(artifact_id: str, calibrations: dict[str, Calibration], override: float | None) -> Threshold:
    if override is not None:
        return Threshold(override, "--threshold", None, "--threshold")
    cal = calibrations.get(artifact_id)
    if cal is None:
        return Threshold(None, "not calibrated: pass --calibration results.json or bench.json (from 'edgemed eval' "
                               "or 'edgemed bench') or --threshold")
    rule, block = cal.block.get("rule"), cal.block
    if rule == "target_error" and block.get("target_error") is not None:
        detail = f"target error {block['target_error']:g}, certified at {1 - (block.get('delta') or 0.05):.0%}"
    elif rule == "coverage":
        detail = f"target coverage {block.get('coverage_asked')}"
    else:
        detail = str(rule)
    return Threshold(block.get("threshold"), f"{cal.where} ({detail})", cal, cal.kind)


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
