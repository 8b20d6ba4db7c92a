"""Strict answer-letter parsing of generated text, and the legacy substring judge."""

from __future__ import annotations

import pytest

from edgemed.evaluator.parse import legacy_match, parse_letter

OPTIONS = ("Radial nerve", "Ulnar nerve", "Axillary nerve", "Musculocutaneous nerve")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("C", "C"),
        (" C", "C"),
        ("C.", "C"),
        (" C. Axillary nerve", "C"),
        ("(C)", "C"),
        ("[B]", "B"),
        ("D)", "D"),
        ("A:", "A"),
        ("B,", "B"),
        ("Answer: C", "C"),
        ("answer: (D)", "D"),
        ("The answer is B.", "B"),
        ("The correct answer is (A)", "A"),
        ("Option D", "D"),
        ("C\nExplanation: the axillary nerve winds around the neck", "C"),
        ("C Axillary nerve", "C"),  # bare letter + its own option text
        ("Axillary nerve", "C"),  # exact option text
        (" axillary nerve.", "C"),  # case, spaces and final period ignored
    ],
)
def test_strict_parser_accepts(text, expected):
    assert parse_letter(text, OPTIONS) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "c",  # lower-case letters are not answers
        "E",
        "A 45-year-old man",  # the article 'A', not an answer
        "C Radial nerve",  # bare letter whose following text is another option
        "I think the answer is B",  # letters later in prose are not searched
        "Axillary nerve is the answer",  # not an exact option text
        "Answering this requires",
        "AB",
        "B is correct",
        "<|im_end|>",
    ],
)
def test_strict_parser_refuses(text):
    assert parse_letter(text, OPTIONS) is None


def test_exact_text_match_must_be_unique():
    assert parse_letter("Same", ("Same", "same", "Other", "More")) is None


def test_parser_without_options_reads_letters_only():
    assert parse_letter(" B. whatever", None) == "B"
    assert parse_letter("Axillary nerve", None) is None


def _notebook_rule(pred: str, gold: str) -> str:
    """The notebook's judge, written out independently of legacy_match: lowercase, strip, two-way substring, then
    half of the gold word set."""
    pred, gold = pred.lower().strip(), gold.lower().strip()
    if gold in pred or pred in gold:
        return "exact"
    gold_set = set(gold.split())
    return "partial" if len(gold_set & set(pred.split())) >= len(gold_set) / 2 else "none"


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("The AXILLARY NERVE is at risk", "Axillary nerve", "exact"),
        ("  axillary ", "Axillary nerve", "exact"),  # the prediction inside the gold text counts too
        ("", "Axillary nerve", "exact"),  # so an empty prediction is exact (flagged by the analysis)
        ("   \n", "Axillary nerve", "exact"),
        ("B. Ulnar nerve", "Axillary nerve", "partial"),  # 1 of 2 gold words: half
        ("B. Ulnar nerve", "Long thoracic nerve", "none"),  # 1 of 3 gold words: under half (any-word rule: partial)
        ("the ion channel", "Na ion", "partial"),  # short words count (the >3-character rule ignored 'ion')
        ("nerve, axillary.", "Axillary nerve", "none"),  # 'nerve,' is not 'nerve': whitespace split only
        ("Vitamin", "Vitamin B12 deficiency", "exact"),
        ("c. vitamin d", "Vitamin B12 deficiency", "none"),
        ("a b", "x y z w", "none"),
    ],
)
def test_legacy_judge_is_the_notebooks_rule(pred, gold, expected):
    exact, partial = legacy_match(pred, gold)
    got = "exact" if exact else "partial" if partial else "none"
    assert got == expected == _notebook_rule(pred, gold)
    assert not (exact and partial)  # exclusive, as the notebook counted them


def test_legacy_analysis_counts_empty_answers_judged_exact():
    from edgemed.evaluator.analysis import legacy

    rows = [{"text": t, "correct": False} for t in ("", "Axillary nerve", "ulnar")]
    for r in rows:
        r["legacy_exact"], r["legacy_partial"] = legacy_match(r["text"], "Axillary nerve")
    lg = legacy(rows)
    assert lg["empty_judged_exact"] == 1 and lg["exact_rate"] == pytest.approx(2 / 3)
    assert lg["no_match_rate"] == pytest.approx(1 / 3) and lg["partial_rate"] == 0

