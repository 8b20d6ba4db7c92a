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


def test_legacy_substring_judge():
    assert legacy_match("The AXILLARY NERVE is at risk", "Axillary nerve") == (True, True)
    # partial: one word of more than 3 characters ('nerve') is enough - which is why it is unreliable
    assert legacy_match("B. Ulnar nerve", "Axillary nerve") == (False, True)
    assert legacy_match("B. Ulnar", "Axillary nerve") == (False, False)
    # short words (<= 3 characters) never count on their own
    assert legacy_match("the ion channel", "Na ion") == (False, False)
