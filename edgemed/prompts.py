"""The one prompt used by training and by every evaluator and runtime.

A prompt ends with ``Answer:``; the training target is `` C. <option text>`` followed by the style's
end-of-turn marker, so letter scoring after ``Answer:`` reads exactly what training taught.
Styles are plain strings (no tokenizer needed), so a GGUF runtime can build them without transformers.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgemed.data.medmcqa import LETTERS, Question
from edgemed.errors import EdgemedError

SYSTEM = (
    "You are a medical expert. Answer the multiple-choice question with the letter of the "
    "correct option, then the option text."
)
ANSWER_CUE = "Answer:"


@dataclass(frozen=True)
class PromptStyle:
    name: str
    head: str  # before the user turn; {system} is filled in
    user_end: str  # after the question block, up to the assistant's answer
    turn_end: str  # closes the assistant turn ("" = the tokenizer's eos is appended)

    def prompt(self, q: Question) -> str:
        return self.head.format(system=SYSTEM) + question_block(q) + self.user_end + ANSWER_CUE

    def target(self, q: Question) -> str:
        """What follows the prompt in training: the answer letter first."""
        return f" {LETTERS[q.answer]}. {q.options[q.answer]}{self.turn_end}"


STYLES: dict[str, PromptStyle] = {
    "plain": PromptStyle("plain", "{system}\n\n", "\n", ""),
    "chatml": PromptStyle(
        "chatml",
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n",
        "<|im_end|>\n<|im_start|>assistant\n",
        "<|im_end|>",
    ),
    "llama3": PromptStyle(
        "llama3",
        "<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n",
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        "<|eot_id|>",
    ),
}


def question_block(q: Question) -> str:
    options = "\n".join(f"{letter}. {text}" for letter, text in zip(LETTERS, q.options, strict=True))
    return f"Question: {q.question}\n{options}"


def get_style(name: str) -> PromptStyle:
    try:
        return STYLES[name]
    except KeyError:
        raise EdgemedError(f"unknown prompt style '{name}'; choose one of {', '.join(STYLES)}") from None


def detect_style(chat_template: str | None) -> str:
    """Pick the style from a tokenizer's chat template (plain when there is none)."""
    if not chat_template:
        return "plain"
    if "<|im_start|>" in chat_template:
        return "chatml"
    if "<|start_header_id|>" in chat_template:
        return "llama3"
    return "plain"


def stop_strings(style: str) -> list[str]:
    marker = get_style(style).turn_end
    return [marker] if marker else []


def letter_texts() -> list[str]:
    """The continuations scored after ``Answer:``: one token each in every supported vocabulary."""
    return [f" {letter}" for letter in LETTERS]
