"""One check of a CI gate and its verdict: a budget, an A/B ratio or a ``--baseline`` comparison applied to one
artifact, decided on a measured interval against a limit."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

VERDICTS = ("pass", "fail", "inconclusive")
INCONCLUSIVE_POLICIES = ("fail", "pass")


@dataclass
class Check:
    """One budget (or baseline comparison) applied to one artifact.

    verdict: what the measured interval says: ``pass`` (wholly on the allowed side of the limit), ``fail`` (wholly
    beyond it) or ``inconclusive`` (it straddles the limit, or a timing was measured on a busy machine). passed: the
    gate's outcome: the verdict, with an inconclusive one counted as ``policy`` says (``--inconclusive``)."""

    artifact: str
    format: str
    key: str
    limit: float | None
    measured: float | None
    passed: bool
    message: str
    source: str = ""  # "budgets.toml:4" or "baseline prev.json"
    verdict: str = ""
    low: float | None = None  # the measured 95% interval
    high: float | None = None
    interval_rule: str = ""
    busy: bool = False  # a timing measured while other processes used the CPU
    rerunnable: bool = False  # more runs of the artifact can change the verdict (a timing budget: gate.runs)
    reruns: int = 0  # how often the artifact was measured again to settle it
    policy: str | None = None  # set when an inconclusive verdict was counted by --inconclusive

    def __post_init__(self) -> None:
        if not self.verdict:
            self.verdict = "pass" if self.passed else "fail"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def settle(self, policy: str) -> Check:
        """Count an inconclusive verdict as `policy` ('fail' or 'pass'); a decided one is left alone."""
        if self.verdict == "inconclusive":
            self.policy = policy
            self.passed = policy == "pass"
        return self


def verdict(limit_kind: str, limit: float, low: float, high: float) -> str:
    """pass / fail / inconclusive of an interval [low, high] against a ``max`` (measured <= limit) or ``min``
    (measured >= limit) budget: tune's rule (edgemed.bench.tune.rules), under the CI verdicts' names."""
    from edgemed.bench.tune.rules import OUTSIDE, WITHIN, lower_budget, upper_budget

    where = (upper_budget if limit_kind == "max" else lower_budget)((low, high), limit)
    return "pass" if where == WITHIN else "fail" if where == OUTSIDE else "inconclusive"
