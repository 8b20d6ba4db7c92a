"""OpenAI wire format of the answers: chat and text completions, whole or as server-sent-event chunks, with
``logprobs`` in each endpoint's own shape."""

from __future__ import annotations

import json
import time
from typing import Any


def _bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def chat_logprob(entry: dict[str, Any]) -> dict[str, Any]:
    return {"token": entry["token"], "logprob": entry["logprob"], "bytes": _bytes(entry["token"]),
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": _bytes(t)} for t, lp in entry.get("top", [])]}


def completion_logprobs(entries: list[dict[str, Any]], offset: int = 0) -> dict[str, Any]:
    tokens, offsets, pos = [], [], offset
    for e in entries:
        tokens.append(e["token"])
        offsets.append(pos)
        pos += len(e["token"])
    return {"tokens": tokens, "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [dict(e.get("top", [])) for e in entries], "text_offset": offsets}


def usage(done: dict[str, Any]) -> dict[str, int]:
    p, c = int(done.get("prompt_tokens", 0)), int(done.get("completion_tokens", 0))
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def finish_reason(done: dict[str, Any]) -> str:
    return "length" if done.get("finish_reason") in ("length", "timeout") else "stop"


class Shape:
    """Builds one response's bodies (whole or chunks) for chat or text completions."""

    def __init__(self, kind: str, rid: str, model: str, extra: dict[str, Any], logprobs: int | None):
        self.kind, self.model, self.extra, self.logprobs = kind, model, extra, logprobs
        self.id = ("chatcmpl-" if kind == "chat" else "cmpl-") + rid
        self.created = int(time.time())
        self.fingerprint = "edgemed-" + extra.get("sha256", "")[:12]

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": self.fingerprint}

    def whole(self, text: str, entries: list[dict[str, Any]], done: dict[str, Any]) -> dict[str, Any]:
        if self.kind == "chat":
            lp = {"content": [chat_logprob(e) for e in entries]} if self.logprobs is not None else None
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": lp,
                      "finish_reason": finish_reason(done)}
            body = self._head("chat.completion")
        else:
            lp = completion_logprobs(entries) if self.logprobs is not None else None
            choice = {"index": 0, "text": text, "logprobs": lp, "finish_reason": finish_reason(done)}
            body = self._head("text_completion")
        return {**body, "choices": [choice], "usage": usage(done), "edgemed": self.extra}

    def chunk(self, delta: str | None, entry: dict[str, Any] | None, done: dict[str, Any] | None = None,
              first: bool = False, offset: int = 0) -> str:
        reason = finish_reason(done) if done is not None else None
        if self.kind == "chat":
            d: dict[str, Any] = {"role": "assistant", "content": ""} if first else (
                {"content": delta} if delta is not None else {})
            lp = {"content": [chat_logprob(entry)]} if entry is not None else None
            choice = {"index": 0, "delta": d, "logprobs": lp, "finish_reason": reason}
            body = self._head("chat.completion.chunk")
        else:
            lp = completion_logprobs([entry], offset) if entry is not None else None
            choice = {"index": 0, "text": delta or "", "logprobs": lp, "finish_reason": reason}
            body = self._head("text_completion")
        body = {**body, "choices": [choice]}
        if done is not None or first:
            body["edgemed"] = self.extra
        return sse(body)

    def usage_chunk(self, done: dict[str, Any]) -> str:
        return sse({**self._head("chat.completion.chunk"), "choices": [], "usage": usage(done)})


def sse(body: dict[str, Any] | str) -> str:
    return f"data: {body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)}\n\n"
