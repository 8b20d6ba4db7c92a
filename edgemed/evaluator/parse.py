"""Read an answer letter out of generated text, strictly; and the notebook's legacy substring judge.

Strict rule (``parse_letter``): after optional leading "Answer:"/"The (correct) answer is"/"Option", the
text must start with a standalone capital A-D: ``C``, ``C.``, ``C)``, ``(C)``, ``[C]``, ``C:``, ``C,``, or
``C`` followed by whitespace and then that option's own text. Otherwise the whole text (case, surrounding
whitespace and a final period ignored) must equal exactly one option's text. Anything else is
unparseable (None): counted on its own, never correct. A letter later in the text ("I think... B") is
not searched for, so prose, lists of options and article "A" never count as answers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from edgemed.data.medmcqa import LETTERS

_PREFIX = r"(?i:(?:the\s+)?(?:correct\s+|right\s+|best\s+)?(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*)?"
_LETTER = re.compile(r"^\s*" + _PREFIX + r"(?:\(([A-D])\)|\[([A-D])\]|([A-D]))(?=$|[\s.):,;\]])(.*)$", re.S)
_CLOSED = re.compile(r"^(?:$|[.):,;\]]|\s*$|\s*\n)")


def _norm(text: str) -> str:
    return " ".join(text.strip().rstrip(".").split()).casefold()


def parse_letter(text: str, options: Sequence[str] | None = None) -> str | None:
    """The answer letter in generated text under the strict rule above, or None."""
    m = _LETTER.match(text)
    if m:
        bracketed = m.group(1) or m.group(2)
        letter = bracketed or m.group(3)
        rest = m.group(4)
        if bracketed or _CLOSED.match(rest):
            return letter
        # bare letter then a space and more text on the line: accept only when that text is the option's own
        if options is not None and _norm(rest).startswith(_norm(options[LETTERS.index(letter)])):
            return letter
        return None
    if options is not None:
        target = _norm(text)
        hits = [LETTERS[i] for i, opt in enumerate(options) if target and _norm(opt) == target]
        if len(hits) == 1:
            return hits[0]
    return None


def legacy_match(text: str, gold_text: str) -> tuple[bool, bool]:
    """(exact, partial) as the reference notebook judged: NOT a reliable accuracy measure.

    Both texts are lowercased and stripped. exact: the gold option's text is a substring of the prediction, or
    the prediction a substring of the gold text (so an empty prediction is exact, as in the notebook: counted
    apart by :func:`edgemed.evaluator.analysis.legacy`). partial (only when not exact): the sets of
    whitespace-split words of both share at least half as many words as the gold set holds. Otherwise neither.
    """
    pred, gold = text.lower().strip(), gold_text.lower().strip()
    if gold in pred or pred in gold:
        return True, False
    gold_words = set(gold.split())
    return False, len(gold_words & set(pred.split())) >= len(gold_words) / 2
