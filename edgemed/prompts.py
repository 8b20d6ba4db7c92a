"""The one prompt used by training and by every evaluator and runtime.

A prompt ends with ``Answer:``; the training target is `` C. <option text>`` followed by the style's
end-of-turn marker, so letter scoring after ``Answer:`` reads exactly what training taught.
Styles are plain strings (no tokenizer needed), so a GGUF runtime can build them without transformers.

A model with a chat template gets its style from that template (:func:`template_style`): the template is
rendered once (system message, user question, generation prompt; then the same conversation with the
answer) and cut into the strings around the question and the answer, so ``style.prompt(q)`` is the
template's own text up to ``Answer:``. Such a style is named ``template-<hash of its strings>``; its strings
are recorded in the lineage (:meth:`PromptStyle.record`) and every later stage rebuilds it from there
(:func:`register_record`), never from the template again. The hand-written styles (plain, chatml, llama3)
serve models without a template and explicit ``--prompt-style`` choices.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    head: str  # before the user turn; {system} is filled in (a template style holds the rendered text)
    user_end: str  # after the question block, up to the assistant's answer
    turn_end: str  # closes the assistant turn ("" = the tokenizer's eos is appended)
    facts: dict[str, Any] = field(default_factory=dict, compare=False)  # how a template style was derived

    def prompt(self, q: Question) -> str:
        return self.prompt_around(question_block(q))

    def prompt_around(self, text: str) -> str:
        """The prompt with `text` as the user's message, up to ``Answer:``."""
        head = self.head if self.name.startswith(TEMPLATE_PREFIX) else self.head.format(system=SYSTEM)
        return head + text + self.user_end + ANSWER_CUE

    def target(self, q: Question) -> str:
        """What follows the prompt in training: the answer letter first."""
        return f" {LETTERS[q.answer]}. {q.options[q.answer]}{self.turn_end}"

    def record(self) -> dict[str, Any] | None:
        """What the lineage keeps of a template style (None for a hand-written one, known by its name)."""
        if self.name in STYLES:
            return None
        return {"name": self.name, "head": self.head, "user_end": self.user_end, "turn_end": self.turn_end,
                **self.facts}


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


# --- styles derived from a chat template --------------------------------------------------------------------
TEMPLATE_PREFIX = "template-"
_DERIVED: dict[str, PromptStyle] = {}
_QUESTION = "EDGEMED_QUESTION_SLOT"
_ANSWER = "EDGEMED_ANSWER_SLOT"
_BOS = "EDGEMED_BOS_SLOT"


def _style_name(record: dict[str, Any]) -> str:
    """``template-`` and a hash of everything recorded about the style (its strings and how they were derived)."""
    body = {k: v for k, v in record.items() if k != "name"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()
    return TEMPLATE_PREFIX + digest[:12]


def is_known_style(name: str) -> bool:
    return name in STYLES or name in _DERIVED or _from_cache(name) is not None


def get_style(name: str) -> PromptStyle:
    if name in STYLES:
        return STYLES[name]
    if name in _DERIVED:
        return _DERIVED[name]
    cached = _from_cache(name)
    if cached is not None:
        return cached
    if name.startswith(TEMPLATE_PREFIX):
        raise EdgemedError(f"prompt style '{name}' (from a chat template) is not recorded in this model's lineage "
                           "or this machine's edgemed cache; re-export the model from its merged folder")
    raise EdgemedError(f"unknown prompt style '{name}'; choose one of {', '.join(STYLES)}") from None


def _cache_file(name: str) -> Path:
    from edgemed.models import cache_root

    return cache_root() / "prompt-styles" / f"{name}.json"


def _from_cache(name: str) -> PromptStyle | None:
    """A template style recorded on this machine (kept so any process can rebuild it by name), checked by hash."""
    if not name.startswith(TEMPLATE_PREFIX):
        return None
    try:
        record = json.loads(_cache_file(name).read_text())
        return register_record(record, "the edgemed cache")
    except (OSError, ValueError, EdgemedError):
        return None


def register_record(record: Any, where: Any) -> PromptStyle:
    """The template style a lineage records, made known by its name in this process (checked by its hash)."""
    keys = ("name", "head", "user_end", "turn_end")
    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in keys):
        raise EdgemedError(f"{where}: the recorded prompt template is damaged; re-run the stage that wrote it "
                           "with --force")
    name = _style_name(record)
    if name != record["name"]:
        raise EdgemedError(f"{where}: the recorded prompt template does not match its name {record['name']} "
                           "(edited or damaged); re-run the stage that wrote it with --force")
    facts = {k: v for k, v in record.items() if k not in keys}
    style = PromptStyle(name, record["head"], record["user_end"], record["turn_end"], facts)
    if name not in _DERIVED:
        _DERIVED[name] = style
        _save_to_cache(style)
    return style


def _save_to_cache(style: PromptStyle) -> None:
    try:
        from edgemed.fsutil import atomic_write_json

        file = _cache_file(style.name)
        if not file.is_file():
            file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(file, style.record())
    except OSError:  # a read-only cache only costs other processes the lookup by name
        pass


def template_style(
    chat_template: str,
    *,
    bos_token: str | None = None,
    eos_token: str | None = None,
    adds_bos: bool = False,
    model: str = "the model",
) -> PromptStyle:
    """The prompt style the model's chat template produces (see the module docstring); registered by name.

    ``adds_bos``: the tokenizer adds BOS itself when encoding (as every runtime encodes prompts). A template
    that also emits ``bos_token`` would double it, so the style's text leaves it to the tokenizer.
    A template without a system role (it raises on one, or drops it) gets the system text folded into the
    first user turn. Raises ChatTemplateError (exit 2) naming the model when the template cannot be used.
    """
    from edgemed.chat_template import TEMPLATE_VARIABLES, ChatTemplateError, render_messages, template_sha256

    bos, eos = bos_token or "", eos_token or ""

    def render(messages, generation):  # BOS as a slot: where the template emits it is read, not guessed
        return render_messages(chat_template, messages, add_generation_prompt=generation,
                               bos_token=_BOS, eos_token=eos)

    def fail(what: str) -> ChatTemplateError:
        return ChatTemplateError(f"{model}: its chat template cannot be used for edgemed's prompt: {what}; fix the "
                                 "template (tokenizer_config.json chat_template) or choose a style by hand with "
                                 "--prompt-style plain|chatml|llama3")

    answer = f"{ANSWER_CUE} {_ANSWER}"

    def cut(messages) -> tuple[str, str, str]:
        """(head, user_end, what follows the answer) of one way of passing the system text."""
        generation = render(messages, True)
        if SYSTEM not in generation:
            raise ChatTemplateError("the template drops the system message")
        if generation.count(_QUESTION) != 1:
            raise ChatTemplateError("the rendered prompt does not hold the user's message exactly once")
        full = render([*messages, {"role": "assistant", "content": answer}], False)
        after = full[len(generation):] if full.startswith(generation) else ""
        sep = after[:after.find(answer)] if answer in after else None
        if sep is None or sep.strip():  # only whitespace may sit between the generation prompt and the answer
            raise ChatTemplateError("the conversation with the answer does not begin with the generation prompt "
                                    "followed by the answer (the template rewrites the assistant turn)")
        head, user_end = generation.split(_QUESTION)
        return head, user_end + sep, after[len(sep) + len(answer):]

    failures = []
    for system, messages in (("system role", [{"role": "system", "content": SYSTEM},
                                              {"role": "user", "content": _QUESTION}]),
                             ("folded into the first user turn", [{"role": "user",
                                                                   "content": f"{SYSTEM}\n\n{_QUESTION}"}])):
        try:
            head, user_end, rest = cut(messages)
            break
        except ChatTemplateError as exc:
            failures.append(f"with a {system}: {exc}" if not failures else f"{system}: {exc}")
    else:
        raise fail("; ".join(failures))
    if failures:
        system = f"{system} ({failures[0].removeprefix('with a ')})"
    turn_end = rest.split("\n")[0].rstrip() or rest.strip() or eos  # the turn's end marker, not what follows it
    if head.startswith(_BOS) and adds_bos:
        head = head[len(_BOS):]
        bos_rule = "the template and the tokenizer both add BOS: once, by the tokenizer"
    elif head.startswith(_BOS):
        bos_rule = "the template emits BOS (kept in the prompt text; the tokenizer adds none)"
    else:
        bos_rule = "the tokenizer adds BOS; the template has none" if adds_bos else "no BOS"
    if _BOS in head + user_end + turn_end:
        if not bos:
            raise fail("it uses bos_token but the tokenizer has none")
        head, user_end, turn_end = (part.replace(_BOS, bos) for part in (head, user_end, turn_end))
    for known in STYLES.values():  # the same strings as a hand-written style: that style, by its name
        if (known.head.format(system=SYSTEM), known.user_end, known.turn_end) == (head, user_end, turn_end):
            return known
    facts = {"system": system, "bos": bos_rule, "variables": dict(TEMPLATE_VARIABLES),
             "template_sha256": template_sha256(chat_template)}
    record = {"head": head, "user_end": user_end, "turn_end": turn_end, **facts}
    record["name"] = _style_name(record)
    return register_record(record, model)


def detect_style(
    chat_template: str | None,
    *,
    bos_token: str | None = None,
    eos_token: str | None = None,
    adds_bos: bool = False,
    model: str = "the model",
) -> str:
    """The style name for a model: its chat template's (:func:`template_style`), plain when it has none.

    A template that cannot be rendered raises (exit 2): a model with a template is never given ``plain``.
    """
    if not chat_template:
        return "plain"
    return template_style(chat_template, bos_token=bos_token, eos_token=eos_token, adds_bos=adds_bos,
                          model=model).name


def tokenizer_special_tokens(tokenizer) -> dict[str, Any]:
    """bos_token, eos_token and adds_bos (the tokenizer puts BOS first when adding special tokens)."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    with_special = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    without = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    adds_bos = bos_id is not None and len(with_special) > len(without) and with_special[0] == bos_id
    return {"bos_token": getattr(tokenizer, "bos_token", None), "eos_token": getattr(tokenizer, "eos_token", None),
            "adds_bos": adds_bos}


def detect_style_for_folder(folder: Path) -> str:
    """:func:`detect_style` for a model folder: its tokenizer's template, special tokens and BOS rule."""
    from edgemed.models import load_tokenizer

    return detect_style_for_tokenizer(load_tokenizer(str(folder)), str(folder))


def detect_style_for_tokenizer(tokenizer, model: str = "the model") -> str:
    """:func:`detect_style` for a transformers tokenizer (its template, special tokens and BOS rule)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: transformers uses "default"
        template = template.get("default")
    return detect_style(template, **tokenizer_special_tokens(tokenizer), model=model)


def stop_strings(style: str) -> list[str]:
    marker = get_style(style).turn_end
    return [marker] if marker else []


def letter_texts() -> list[str]:
    """The continuations scored after ``Answer:``: one token each in every supported vocabulary."""
    return [f" {letter}" for letter in LETTERS]
