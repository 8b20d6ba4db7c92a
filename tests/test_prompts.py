"""The one prompt: training target starts with the scored letter; styles match tokenizers."""

from __future__ import annotations

import pytest

from edgemed.data import load_questions
from edgemed.errors import EdgemedError
from edgemed.prompts import STYLES, detect_style, get_style, stop_strings


@pytest.fixture(scope="module")
def question():
    return load_questions("sample", limit=1)[0][0]


@pytest.mark.parametrize("style", list(STYLES))
def test_prompt_ends_at_answer_cue_and_target_starts_with_letter(style, question):
    s = get_style(style)
    prompt, target = s.prompt(question), s.target(question)
    assert prompt.endswith("Answer:")
    letter = "ABCD"[question.answer]
    assert target.startswith(f" {letter}. {question.options[question.answer]}")
    for letter_, option in zip("ABCD", question.options, strict=True):
        assert f"\n{letter_}. {option}" in prompt


def test_detect_style_from_chat_templates(tiny_model):
    from edgemed.models import load_tokenizer

    assert detect_style(load_tokenizer(str(tiny_model)).chat_template) == "chatml"
    assert detect_style("{{ '<|start_header_id|>' }}") == "llama3"
    assert detect_style(None) == "plain"
    assert stop_strings("chatml") == ["<|im_end|>"]


def test_unknown_style():
    with pytest.raises(EdgemedError, match="chatml"):
        get_style("alpaca")
