"""The one prompt: training target starts with the scored letter; styles match tokenizers."""

from __future__ import annotations

import json

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
    from edgemed.prompts import detect_style_for_tokenizer

    # SmolLM2's template renders exactly the hand-written chatml strings: that style, by its name
    assert detect_style_for_tokenizer(load_tokenizer(str(tiny_model))) == "chatml"
    assert detect_style(None) == "plain"
    assert stop_strings("chatml") == ["<|im_end|>"]


PHI3_LIKE = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}{% endfor %}"
             "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}")


def test_template_style_is_the_templates_text_and_travels_by_record(question, tmp_path):
    from edgemed.chat_template import render_messages
    from edgemed.lineage import Lineage, read_lineage, write_lineage
    from edgemed.prompts import SYSTEM, question_block

    name = detect_style(PHI3_LIKE, bos_token="<s>", eos_token="<|endoftext|>", model="phi-like")
    style = get_style(name)
    assert name.startswith("template-") and style.turn_end == "<|end|>" and stop_strings(name) == ["<|end|>"]
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question_block(question)}]
    assert style.prompt(question) == render_messages(PHI3_LIKE, messages) + "Answer:"
    write_lineage(tmp_path, Lineage(prompt_style=name, style_source="chat template at train"))
    record = json.loads((tmp_path / "lineage.json").read_text())
    assert record["prompt_template"]["head"] == style.head and record["prompt_template"]["system"] == "system role"
    assert read_lineage(tmp_path).prompt_style == name
    record["prompt_template"]["head"] = "tampered"
    (tmp_path / "lineage.json").write_text(json.dumps(record))
    with pytest.raises(EdgemedError, match="does not match its name"):
        read_lineage(tmp_path)


def test_bos_once_when_template_and_tokenizer_both_add_it():
    template = ("{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</t>{% endfor %}"
                "{% if add_generation_prompt %}<assistant>{% endif %}")
    added = get_style(detect_style(template, bos_token="<B>", adds_bos=True))
    kept = get_style(detect_style(template, bos_token="<B>", adds_bos=False))
    assert not added.head.startswith("<B>") and "tokenizer" in added.facts["bos"]
    assert kept.head.startswith("<B><system>")


def test_template_without_system_role_gets_it_folded(question):
    template = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not "
                "supported') }}{% endif %}[{{ m['role'] }}]{{ m['content'] }}[/]{% endfor %}"
                "{% if add_generation_prompt %}[assistant]{% endif %}")
    style = get_style(detect_style(template, model="no-system"))
    assert style.facts["system"].startswith("folded into the first user turn")
    assert "System role not supported" in style.facts["system"]
    assert style.prompt(question).startswith("[user]You are a medical expert.")


@pytest.mark.parametrize("template, what", [
    ("{% if %}", "does not compile"),
    ("{{ raise_exception('nope') }}", "nope"),
    ("{% for m in messages %}{{ m.content + 1 }}{% endfor %}", "failed to render"),
    ("{% for m in messages %}{{ m.content }}{{ m.content }}{% endfor %}", "exactly once"),
])
def test_unusable_template_is_refused_naming_model_and_failure(template, what):
    with pytest.raises(EdgemedError, match=f"my-model: .*{what}"):
        detect_style(template, model="my-model")


def test_unknown_style():
    with pytest.raises(EdgemedError, match="chatml"):
        get_style("alpaca")
