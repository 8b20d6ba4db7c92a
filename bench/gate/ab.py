"""A/B on one runner: a baseline set of artifacts and the candidate set measured interleaved in the same job, gated
on the candidate/baseline ratio of each timing and its interval.

Hosted CI runners change CPU from run to run, so a stored baseline from another job compares two machines. Here
both sides run on this machine, round after round (``--ab-rounds``), in the order A B, B A, A B ... so that a
drift of the machine's speed within the job reaches both and cancels. Each round gives one ratio per metric
(candidate / baseline of the round's value); the gate reads their geometric mean and its 95% t interval over the
rounds (log ratios). KLD is measured once per side, against the same reference (the candidate run's); its ratio's
interval comes from the two KLD intervals.

A metric is **slower** when the ratio goes the bad way (tokens/s down, milliseconds or memory up). The check fails
when the whole interval lies beyond ``--max-slowdown`` (a slowdown the interval confirms, larger than the
candidate's measured wait for a CPU in its busy rounds could explain: a busy baseline round only hides a slowdown),
passes when it lies within, and is inconclusive when it straddles (or a busy candidate round could explain the
slowdown): then as many rounds again (``--ab-rounds`` more, pooled with the earlier ones: the interval narrows with
their number) run, up to ``--retries`` times, and an inconclusive check counts as ``--inconclusive`` says. The
baseline may run from a second install (``--ab-python``: the python of another venv holding edgemed and its
engines), for a change of engine or edgemed version; llama.cpp's compare-llama-bench.py compares stored runs, this
compares them live.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgemed.bench.gate.budget import Check, explained_by_load, unloaded, verdict
from edgemed.bench.measure.stats import t975
from edgemed.bench.protocol import Target
from edgemed.bench.results import METRICS, ArtifactResult
from edgemed.errors import EdgemedError

# What each round measures and the gate compares (the serving timings and memory of the worker's serve phase).
ROUND_METRICS = ("decode_tps", "prefill_tps", "answer_p95_ms", "ttft_ms", "peak_rss_mb")
PREFIX = "baseline-"  # the baseline's artifacts are named PREFIX + their folder name


@dataclass
class Pair:
    """A baseline artifact and the candidate it is compared with, and every round measured of both."""

    baseline: Target
    candidate: Target
    rounds: list[tuple[ArtifactResult, ArtifactResult]] = field(default_factory=list)  # (A, B) in order
    baseline_full: ArtifactResult | None = None  # the baseline's one full measurement (accuracy, KLD)
    candidate_full: ArtifactResult | None = None  # the candidate's, from the bench run itself
    extra_rounds: int = 0  # rounds added because a check was inconclusive (--retries)
    not_compared: dict[str, str] = field(default_factory=dict)  # metric -> why these settings do not measure it

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline.name, "baseline_path": self.baseline.path, "candidate": self.candidate.name,
                "extra_rounds": self.extra_rounds, "not_compared": self.not_compared,
                "rounds": [{"A": _round_values(a), "B": _round_values(b)} for a, b in self.rounds],
                "baseline_full": self.baseline_full.to_dict(with_predictions=False) if self.baseline_full else None}


def _round_values(r: ArtifactResult) -> dict[str, Any]:
    return {"ok": r.ok, "busy": r.busy, "wall_s": r.wall_s, **{k: r.metric(k) for k in ROUND_METRICS},
            "failure": r.failure.message if r.failure else None}


def pair_targets(baseline: list[Target], candidates: list[Target]) -> list[Pair]:
    """Each baseline artifact with the candidate of its name (its folder name), else the one candidate of its
    format. A baseline artifact without a candidate is bad input (exit 2): the A/B would gate nothing for it."""
    pairs = []
    for b in baseline:
        plain = b.name.removeprefix(PREFIX)
        same_format = [c for c in candidates if c.format == b.format]
        match = next((c for c in candidates if c.name == plain), None) or (
            same_format[0] if len(same_format) == 1 else None)
        if match is None or b.problem:
            why = b.problem or (f"no candidate named {plain} and none of format {b.format}" if not same_format else
                                f"no candidate named {plain} and {len(same_format)} of format {b.format}")
            raise EdgemedError(f"--ab-baseline {b.path}: cannot be paired ({why}); give one baseline artifact per "
                               "candidate, named like it or of its format")
        pairs.append(Pair(b, match))
    return pairs


def baseline_targets(targets: list[Target]) -> list[Target]:
    """The baseline's artifacts under names that cannot clash with the candidates' (PREFIX + folder name)."""
    return [replace(t, name=PREFIX + t.name) for t in targets]


def ratio_interval(a_values: list[float], b_values: list[float]) -> tuple[float, float, float] | None:
    """(geometric mean of b/a, 95% low, high) over paired rounds; None below 2 usable rounds."""
    logs = [math.log(b / a) for a, b in zip(a_values, b_values, strict=True)
            if a is not None and b is not None and a > 0 and b > 0]
    if len(logs) < 2:
        return None
    mean = sum(logs) / len(logs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (len(logs) - 1))
    half = t975(len(logs) - 1) * sd / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def kld_ratio(a: ArtifactResult | None, b: ArtifactResult) -> tuple[float, float, float] | None:
    """KLD ratio b/a with a 95% interval from the two KLD intervals (delta method on the log); None where either
    KLD is missing or zero (an artifact identical to the reference has no ratio)."""
    if a is None:
        return None
    ka, kb = a.metric("kld"), b.metric("kld")
    ia, ib = METRICS["kld"].interval(a), METRICS["kld"].interval(b)
    if not ka or not kb or ia is None or ib is None:
        return None
    z = 1.959964
    se = math.sqrt(((ia[1] - ia[0]) / (2 * z * ka)) ** 2 + ((ib[1] - ib[0]) / (2 * z * kb)) ** 2)
    ratio = kb / ka
    return ratio, ratio * math.exp(-z * se), ratio * math.exp(z * se)


def ab_checks(pairs: list[Pair], max_slowdown: float, source: str) -> list[Check]:
    """One check per pair x metric: the candidate/baseline ratio against 1 -/+ max_slowdown."""
    checks = []
    for p in pairs:
        ok_rounds = [(a, b) for a, b in p.rounds if a.ok and b.ok]
        for key in (*ROUND_METRICS, "kld"):
            m = METRICS[key]
            if key == "kld":
                got = kld_ratio(p.baseline_full, p.candidate_full) if p.candidate_full is not None else None
                rule = "KLD ratio, 95% interval from both KLD intervals (delta method on the log)"
                busy = False
            else:
                a_vals = [a.metric(key) for a, _ in ok_rounds]
                b_vals = [b.metric(key) for _, b in ok_rounds]
                if m.stand_in and len(ok_rounds) >= 2 and all(v is None for v in (*a_vals, *b_vals)):
                    # every round ran and none has it: these settings do not measure it (a p95 of too few samples)
                    p.not_compared[key] = f"{m.label} not measured in any round: {m.stand_in.why}"
                    continue
                got = ratio_interval(a_vals, b_vals)
                measured = sum(x is not None and y is not None for x, y in zip(a_vals, b_vals, strict=True))
                rule = f"geometric mean of candidate/baseline over {len(ok_rounds)} rounds, 95% t interval of logs"
                busy = m.timing and any(a.busy or b.busy for a, b in ok_rounds)
            name = f"ab:{key}"
            if got is None:
                if key == "kld":
                    continue  # nothing to compare: said in the A/B section, not a check
                checks.append(Check(p.candidate.name, p.candidate.format, name, None, None, False,
                                    f"{m.label}: fewer than 2 rounds measured on both sides "
                                    f"({measured} of {len(p.rounds)})", source))
                continue
            ratio, low, high = got
            higher_better = m.better == "max"
            limit = 1 - max_slowdown if higher_better else 1 + max_slowdown
            decided = verdict("min" if higher_better else "max", limit, low, high)
            slowdown = (1 - ratio) if higher_better else (ratio - 1)
            text = (f"{m.label} candidate/baseline {ratio:.3f} [{low:.3f}, {high:.3f}] (slowdown {slowdown:+.1%}, "
                    f"--max-slowdown {max_slowdown:.0%}) vs {p.baseline.name}")
            if busy and decided == "fail":  # only a candidate slowed by other processes can fake a slowdown
                waits = [explained_by_load(b) for _, b in ok_rounds if b.busy]
                kind = "min" if higher_better else "max"
                if waits and (None in waits or verdict(kind, limit, *unloaded(kind, low, high, max(waits))) != "fail"):
                    decided = "inconclusive"
                    text += "; a candidate round was measured on a busy machine: not a confirmed slowdown"
                else:
                    text += "; beyond what waiting for a CPU explains (busy rounds)"
            checks.append(Check(p.candidate.name, p.candidate.format, name, limit, ratio, decided == "pass", text,
                                source, verdict=decided, low=low, high=high, interval_rule=rule, busy=busy,
                                reruns=p.extra_rounds))
    return checks


def run_rounds(plan, results: list[ArtifactResult], measure) -> list[Pair]:
    """Measure the pairs interleaved: round 1 measures the baseline in full (accuracy and KLD against the same
    reference), every other measurement serves only; then --ab-rounds more rounds for a pair whose timing check is
    inconclusive, up to --retries times. `measure(target, timing_only, is_baseline)` measures one artifact."""
    config = plan.config
    pairs: list[Pair] = plan.ab_pairs
    by_name = {r.name: r for r in results}
    for p in pairs:
        p.candidate_full = by_name.get(p.candidate.name)

    def one_round(p: Pair) -> None:
        first = not p.rounds
        if len(p.rounds) % 2 == 0:  # A B, then B A: a drift of the machine within a round pair cancels
            a = measure(p.baseline, not first, True)
            b = measure(p.candidate, True, False)
        else:
            b = measure(p.candidate, True, False)
            a = measure(p.baseline, True, True)
        if first:
            p.baseline_full = a
        p.rounds.append((a, b))

    for _ in range(config.ab_rounds):
        for p in pairs:
            one_round(p)
    source = f"A/B vs {', '.join(str(x) for x in config.ab_baseline)}"
    for _ in range(config.retries):
        open_ = {c.artifact for c in ab_checks(pairs, plan.max_slowdown, source)
                 if c.verdict == "inconclusive" and c.key != "ab:kld"}
        if not open_:
            break
        for _ in range(config.ab_rounds):
            for p in pairs:
                if p.candidate.name in open_:
                    one_round(p)
                    p.extra_rounds += 1
    return pairs


def ab_python(path: Path | None) -> Path | None:
    """--ab-python checked before any work: an executable file (the python of another venv with edgemed)."""
    import os

    if path is None:
        return None
    path = Path(path).expanduser()
    if not path.is_file() or not os.access(path, os.X_OK):
        raise EdgemedError(f"--ab-python {path} is not an executable file; give the python of the other install, "
                           "e.g. ../old/.venv/bin/python")
    return path
