"""Chat messages -> prompt text with the model's own chat template (the one its artifact carries: the GGUF's
``tokenizer.chat_template`` or tokenizer_config.json's), rendered by :func:`edgemed.chat_template.render_messages`,
the renderer training and evaluation use. :func:`render_chat` is the server's one call of it."""

from __future__ import annotations

from typing import Any

from edgemed.serve.errors import APIError


class TemplateMissing(Exception):
    """The model carries no chat template: chat completions cannot be rendered for it."""


def render_chat(template: str | None, messages: list[dict[str, Any]], bos_token: str = "", eos_token: str = "",
                add_generation_prompt: bool = True) -> str:
    """The prompt text of `messages` (a 400 APIError when the template refuses them, e.g. a role order it does not
    allow; TemplateMissing when there is no template)."""
    from edgemed.chat_template import ChatTemplateError, render_messages

    if not template:
        raise TemplateMissing("the model carries no chat template")
    try:
        return render_messages(template, messages, add_generation_prompt=add_generation_prompt, bos_token=bos_token,
                               eos_token=eos_token)
    except ChatTemplateError as exc:
        raise APIError(400, f"the model's chat template refused these messages: {exc}", "messages") from None
