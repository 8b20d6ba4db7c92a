"""Request bodies checked field by field: each problem is a 400 naming the field and what it must be (OpenAI's
own limits where it has them), never a 500. The checked request is a plain dict the engine reads."""

from __future__ import annotations

import json
import math
from typing import Any

from edgemed.serve.errors import APIError

LETTERS = ("A", "B", "C", "D")
ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_STOPS = 4
MAX_TOP_LOGPROBS = 20  # OpenAI's chat limit
MAX_COMPLETION_LOGPROBS = 5  # OpenAI's completions limit
UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "response_format", "logit_bias", "suffix",
               "best_of")


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the body is not valid JSON ({exc}); send a JSON object") from None
    if not isinstance(body, dict):
        raise APIError(400, f"the body must be a JSON object, not {type(body).__name__}")
    return body


def _kind(value: Any) -> str:
    return "null" if value is None else {bool: "boolean", int: "integer", float: "number", str: "string",
                                        list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _number(body: dict, name: str, default: float, lo: float, hi: float, lo_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise APIError(400, f"'{name}' must be a number, not {_kind(value)}", name)
    if value < lo or value > hi or (lo_open and value == lo):
        span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise APIError(400, f"'{name}' must be in {span}, not {value}", name)
    return float(value)


def _integer(body: dict, name: str, default: int | None, lo: int, hi: int | None = None,
             hi_reason: str = "") -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise APIError(400, f"'{name}' must be an integer, not {_kind(value)}", name)
    if value < lo:
        raise APIError(400, f"'{name}' must be at least {lo}, not {value}", name)
    if hi is not None and value > hi:
        raise APIError(400, f"'{name}' is {value}, above {hi}{hi_reason}", name)
    return value


def _boolean(body: dict, name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise APIError(400, f"'{name}' must be true or false, not {_kind(value)}", name)
    return value


def _string(body: dict, name: str, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise APIError(400, f"'{name}' is required", name)
        return None
    if not isinstance(value, str):
        raise APIError(400, f"'{name}' must be a string, not {_kind(value)}", name)
    return value


def model_name(body: dict) -> str:
    name = _string(body, "model", required=True)
    if not name.strip():
        raise APIError(400, "'model' is empty; name one of GET /v1/models", "model")
    return name


def _stop(body: dict) -> list[str]:
    value = body.get("stop")
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise APIError(400, f"'stop' must be a string or an array of strings, not {_kind(value)}", "stop")
    if len(stops) > MAX_STOPS:
        raise APIError(400, f"'stop' holds {len(stops)} strings; at most {MAX_STOPS}", "stop")
    if any(not s for s in stops):
        raise APIError(400, "'stop' holds an empty string", "stop")
    return stops


def _unsupported(body: dict) -> None:
    for name in UNSUPPORTED:
        if body.get(name) not in (None, [], {}):
            raise APIError(400, f"'{name}' is not supported by this server; drop it", name)
    for name in ("presence_penalty", "frequency_penalty"):
        if _number(body, name, 0.0, -2.0, 2.0) != 0.0:
            raise APIError(400, f"'{name}' is not supported by this server (only 0); drop it", name)
    if _integer(body, "n", 1, 1) != 1:
        raise APIError(400, "'n' must be 1 here (one choice per request)", "n")


def _sampling(body: dict, max_tokens_cap: int, tokens_field: str | None = None) -> dict[str, Any]:
    field = tokens_field or ("max_completion_tokens" if body.get("max_completion_tokens") is not None
                             else "max_tokens")
    return {
        "max_tokens": _integer(body, field, None, 1, max_tokens_cap,
                               " (this server's --max-tokens-cap); ask for fewer tokens"),
        "max_tokens_field": field,
        "temperature": _number(body, "temperature", 1.0, 0.0, 2.0),
        "top_p": _number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True),
        "seed": _integer(body, "seed", None, -(2**63), 2**64 - 1),
        "stop": _stop(body),
        "stream": _boolean(body, "stream"),
        "user": _string(body, "user"),
    }


def _content(message: dict, i: int) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise APIError(400, f"messages[{i}].content: only text parts ({{'type': 'text', 'text': ...}}) "
                                    "are supported", f"messages[{i}].content")
            parts.append(part["text"])
        return "".join(parts)
    raise APIError(400, f"messages[{i}].content must be a string or an array of text parts, not {_kind(content)}",
                   f"messages[{i}].content")


def chat_request(body: dict, max_tokens_cap: int) -> dict[str, Any]:
    _unsupported(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty array of {role, content}", "messages")
    checked = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise APIError(400, f"messages[{i}] must be an object, not {_kind(m)}", f"messages[{i}]")
        if m.get("role") not in ROLES:
            raise APIError(400, f"messages[{i}].role must be one of {', '.join(ROLES)}, not {m.get('role')!r}",
                           f"messages[{i}].role")
        role = "system" if m["role"] == "developer" else m["role"]
        checked.append({"role": role, "content": _content(m, i)})
    if not any(m["content"].strip() for m in checked):
        raise APIError(400, "every message is empty; send some text", "messages")
    logprobs = _boolean(body, "logprobs")
    top = _integer(body, "top_logprobs", None, 0, MAX_TOP_LOGPROBS)
    if top is not None and not logprobs:
        raise APIError(400, "'top_logprobs' needs 'logprobs': true", "top_logprobs")
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise APIError(400, f"'stream_options' must be an object, not {_kind(stream_options)}", "stream_options")
    return {"kind": "chat", "model": model_name(body), "messages": checked, **_sampling(body, max_tokens_cap),
            "logprobs": (top or 0) if logprobs else None,
            "include_usage": bool((stream_options or {}).get("include_usage"))}


def completion_request(body: dict, max_tokens_cap: int) -> dict[str, Any]:
    _unsupported(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise APIError(400, "'prompt' must be a string (or an array of one string)", "prompt")
    if not prompt:
        raise APIError(400, "'prompt' is empty", "prompt")
    if _boolean(body, "echo"):
        raise APIError(400, "'echo' is not supported by this server; drop it", "echo")
    logprobs = _integer(body, "logprobs", None, 0, MAX_COMPLETION_LOGPROBS)
    request = {"kind": "completion", "model": model_name(body), "prompt": prompt, **_sampling(body, max_tokens_cap),
               "logprobs": logprobs, "include_usage": False}
    if body.get("max_tokens") is None:
        request["max_tokens"] = min(16, max_tokens_cap)  # OpenAI's default for completions
    return request


def mcq_request(body: dict, max_question_chars: int) -> dict[str, Any]:
    question = _string(body, "question", required=True)
    if not question.strip():
        raise APIError(400, "'question' is empty; send the question text", "question")
    if len(question) > max_question_chars:
        raise APIError(400, f"'question' is {len(question)} characters, above {max_question_chars}", "question")
    options = body.get("options")
    if isinstance(options, list):
        if len(options) != 4:
            raise APIError(400, f"'options' holds {len(options)} answers; exactly four (A-D)", "options")
        options = dict(zip(LETTERS, options, strict=True))
    if not isinstance(options, dict):
        raise APIError(400, "'options' must be an object with keys A, B, C and D (or an array of four strings)",
                       "options")
    keys = set(options)
    if keys != set(LETTERS):
        missing, extra = sorted(set(LETTERS) - keys), sorted(keys - set(LETTERS))
        what = "; ".join(filter(None, [f"missing {', '.join(missing)}" if missing else "",
                                       f"unexpected {', '.join(map(str, extra))}" if extra else ""]))
        raise APIError(400, f"'options' must have exactly the keys A, B, C and D ({what})", "options")
    for letter in LETTERS:
        text = options[letter]
        if not isinstance(text, str):
            raise APIError(400, f"options.{letter} must be a string, not {_kind(text)}", f"options.{letter}")
        if not text.strip():
            raise APIError(400, f"options.{letter} is empty", f"options.{letter}")
    return {"kind": "mcq", "model": model_name(body), "question": question.strip(),
            "options": [options[a].strip() for a in LETTERS], "user": _string(body, "user")}
