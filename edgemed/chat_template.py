"""Render a model's own chat template as transformers renders it (Jinja2, same environment and globals).

:func:`render_messages` turns a list of chat messages into the text ``tokenizer.apply_chat_template(...,
tokenize=False)`` gives: a sandboxed Jinja2 environment with ``trim_blocks``/``lstrip_blocks``, the loop
controls extension, the ``{% generation %}`` block (rendered as its body), a ``tojson`` filter that keeps
non-ASCII text, and the globals ``raise_exception`` and ``strftime_now``. The special tokens are template
variables (``bos_token``, ``eos_token``, ...) and so is every extra keyword (``enable_thinking``).

Only jinja2 is needed (no transformers), so a GGUF runtime renders the template its file carries
(``tokenizer.chat_template``) exactly as the training process rendered the tokenizer's.

A template that does not compile, or that fails while rendering, raises :class:`ChatTemplateError` naming
what failed; callers refuse the model (exit 2) instead of guessing another prompt format.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from edgemed.errors import EdgemedError

# The variables edgemed renders every template with. ``enable_thinking=False`` turns the thinking phase off in
# the templates that have one (Qwen3, SmolLM3: an empty think block before the answer); templates without it
# ignore the variable, as they ignore any undefined name.
TEMPLATE_VARIABLES: dict[str, Any] = {"enable_thinking": False}


class ChatTemplateError(EdgemedError):
    """A chat template edgemed cannot compile or render (the message names what failed)."""


def template_sha256(template: str) -> str:
    return hashlib.sha256(template.encode("utf-8")).hexdigest()


@lru_cache(maxsize=16)
def compile_template(template: str):
    """The compiled Jinja2 template, in the environment transformers uses for chat templates."""
    try:
        import jinja2
        from jinja2 import nodes
        from jinja2.ext import Extension, loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ChatTemplateError("rendering a chat template needs jinja2: pip install jinja2") from None

    class GenerationBlock(Extension):
        """``{% generation %}...{% endgeneration %}`` marks the assistant's tokens; its text is the body's."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationBlock, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateError as exc:
        raise ChatTemplateError(f"the chat template does not compile: {_first_line(exc)}") from None


def render_messages(
    template: str,
    messages: list[dict[str, Any]],
    *,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    **variables: Any,
) -> str:
    """The text the template renders for ``messages`` (``[{"role": ..., "content": ...}, ...]``).

    ``add_generation_prompt`` ends the text with the assistant turn's opening, as for generation.
    ``bos_token``/``eos_token`` are the tokenizer's special token texts (a template that starts with
    ``{{ bos_token }}`` emits it: tokenize the result without adding special tokens, or strip it when the
    tokenizer adds BOS itself). Further keywords are template variables; :data:`TEMPLATE_VARIABLES`
    (thinking off) apply unless given.
    """
    import jinja2

    if not template:
        raise ChatTemplateError("the model has no chat template")
    compiled = compile_template(template)
    context = {**TEMPLATE_VARIABLES, **variables}
    try:
        return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                               bos_token=bos_token, eos_token=eos_token, **context)
    except jinja2.exceptions.TemplateError as exc:
        raise ChatTemplateError(f"the chat template failed to render: {_first_line(exc)}") from None
    except Exception as exc:  # a template is code: a TypeError or KeyError inside it is its failure, not ours
        raise ChatTemplateError(f"the chat template failed to render ({type(exc).__name__}: "
                                f"{_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
