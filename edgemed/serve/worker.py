"""The engine process: one artifact loaded through :func:`edgemed.runtimes.base.open_runtime` (the runtime the bench
measures), serving one request at a time from its inbox and streaming each token back to the server.

Generation runs the runtimes' own decoding loop (:meth:`Runtime.token_stream`); a multiple-choice question is
scored as ``edgemed eval`` scores one (the prompt style of the artifact's lineage, the log-probabilities of
" A".." D" after "Answer:", renormalised over the four letters). Between two tokens the inbox is polled, so a
cancelled request (a client gone, a timeout) stops at the next token."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import numpy as np


def _held_back(text: str, stops: list[str]) -> int:
    """Characters at the end of `text` that may be the start of a stop string (not sent until decided)."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:k]):
                hold = k
                break
    return hold


def _top(runtime, logprobs: np.ndarray, token: int, k: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": int(token), "token": runtime.detokenize([int(token)]),
                             "logprob": float(logprobs[token])}
    if k:
        idx = np.argpartition(-logprobs, k - 1)[:k]
        idx = idx[np.argsort(-logprobs[idx], kind="stable")]
        entry["top"] = [(runtime.detokenize([int(i)]), float(logprobs[i])) for i in idx]
    return entry


class _Cancelled(Exception):
    pass


class Worker:
    def __init__(self, runtime, inbox, outbox):
        self.rt = runtime
        self.inbox = inbox
        self.outbox = outbox
        self.stopping = False
        from edgemed.lineage import prompt_style_for

        self.style, self.style_source = prompt_style_for(runtime.path, runtime.chat_template)
        special = runtime.template_tokens()  # the texts the chat template prints for BOS/EOS
        self.bos, self.eos = special.get("bos_token") or "", special.get("eos_token") or ""
        self.adds_bos = bool(special.get("adds_bos"))

    def info(self) -> dict[str, Any]:
        try:
            info = dict(self.rt.info())
        except Exception as exc:  # descriptive only
            info = {"runtime": self.rt.name, "info_error": str(exc)}
        return {"context_length": self.rt.context_length, "chat_template": self.rt.chat_template(),
                "bos_token": self.bos, "eos_token": self.eos, "prompt_style": self.style,
                "prompt_style_source": self.style_source, "runtime_info": info}

    def _poll(self, rid: str) -> None:
        while self.inbox.poll():
            msg = self.inbox.recv()
            if msg[0] == "cancel" and msg[1] == rid:
                raise _Cancelled
            if msg[0] == "stop":
                self.stopping = True

    def tokens(self, text: str) -> list[int]:
        if self.adds_bos and self.bos and text.startswith(self.bos):
            text = text[len(self.bos):]  # the template printed BOS and the tokenizer adds it: once, not twice
        return self.rt.tokenize(text)

    def generate(self, rid: str, req: dict[str, Any]) -> None:
        from edgemed.runtimes.base import cut_at_stop
        from edgemed.runtimes.logits import log_softmax_rows

        ids = self.tokens(req["prompt"])
        context = self.rt.context_length
        max_tokens = req.get("max_tokens")
        if context:
            room = context - len(ids)
            if room < 1 or (max_tokens is not None and max_tokens > room):
                need = f"{len(ids)} + {max_tokens} tokens asked" if max_tokens else f"{len(ids)} tokens"
                self.outbox.send(("fail", rid, 400, f"the prompt ({need}) does not fit the context of {context} "
                                  "tokens; shorten the messages or lower max_tokens", "context_length_exceeded"))
                return
            max_tokens = max_tokens or room
        max_tokens = max_tokens or 256
        self.outbox.send(("start", rid, len(ids)))
        seed = req.get("seed")
        seed = int(seed) % (2**63) if seed is not None else int.from_bytes(np.random.bytes(4), "big")
        stops, k = req.get("stop") or [], req.get("logprobs")
        deadline = time.monotonic() + float(req.get("timeout_s") or 1e9)
        new: list[int] = []
        decoder = self.rt.text_decoder()  # the text of `new`, without detokenizing all of it at every token
        sent, finish, cut_by_stop = "", "length", False
        start = time.perf_counter()
        times: list[float] = []
        try:
            for token, logits in self.rt.token_stream(ids, max_tokens, req["temperature"], req["top_p"], seed):
                times.append(time.perf_counter() - start)
                self._poll(rid)
                if self.rt.is_end(token):
                    finish = "stop"
                    break
                new.append(token)
                text = decoder.add(token)
                entry = None
                if k is not None:
                    row = log_softmax_rows(np.asarray(logits, dtype=np.float32)[None, :])[0]
                    entry = _top(self.rt, row, token, k)
                if stops:
                    cut, stopped = cut_at_stop(text, stops)
                    if stopped:
                        self.outbox.send(("token", rid, cut[len(sent):], entry))
                        sent, finish, cut_by_stop = cut, "stop", True
                        break
                    visible = text[: len(text) - _held_back(text, stops)]
                else:
                    visible = text
                delta = visible[len(sent):] if visible.startswith(sent) else ""
                if delta or entry is not None:
                    self.outbox.send(("token", rid, delta, entry))
                    sent = sent + delta
                if time.monotonic() > deadline:
                    finish = "timeout"
                    break
            rest = decoder.text if new and not cut_by_stop else sent
            if rest.startswith(sent) and rest[len(sent):]:  # what was held back for a stop string that never came
                self.outbox.send(("token", rid, rest[len(sent):], None))
        except _Cancelled:
            finish = "cancelled"
        total = time.perf_counter() - start
        self.outbox.send(("done", rid, {"finish_reason": finish, "prompt_tokens": len(ids),
                                        "completion_tokens": len(new), "ttft_s": times[0] if times else total,
                                        "total_s": total}))

    def mcq(self, rid: str, req: dict[str, Any]) -> None:
        from edgemed.data.medmcqa import Question
        from edgemed.prompts import get_style
        from edgemed.runtimes.logits import softmax_rows

        q = Question(id=rid, question=req["question"], options=tuple(req["options"]), answer=-1)
        prompt = get_style(self.style).prompt(q)
        n = len(self.rt.tokenize(prompt))
        context = self.rt.context_length
        if context and n + 1 > context:
            self.outbox.send(("fail", rid, 400, f"the question and options are {n} tokens, over the context of "
                              f"{context}; shorten them", "context_length_exceeded"))
            return
        start = time.perf_counter()
        lp = self.rt.letter_logprobs([prompt], batch_size=1)
        with np.errstate(invalid="ignore"):
            probs = softmax_rows(lp)[0]
        valid = bool(np.isfinite(probs).all())
        self.outbox.send(("done", rid, {"probs": [float(p) for p in probs] if valid else None,
                                        "letter_mass": float(np.exp(lp[0]).sum()) if valid else None,
                                        "prompt_tokens": n, "prompt_style": self.style,
                                        "total_s": time.perf_counter() - start}))

    def serve(self) -> None:
        while not self.stopping:
            try:
                msg = self.inbox.recv()
            except (EOFError, OSError):
                return  # the server is gone
            if msg[0] == "stop":
                return
            if msg[0] != "run":
                continue  # a cancel for a request already finished
            rid, req = msg[1], msg[2]
            try:
                if req["kind"] == "mcq":
                    self.mcq(rid, req)
                else:
                    self.generate(rid, req)
            except Exception as exc:  # a failed request is answered; the engine keeps serving
                from edgemed.errors import EdgemedError

                status = 400 if isinstance(exc, EdgemedError) else 500
                self.outbox.send(("fail", rid, status, f"{type(exc).__name__}: {exc}" if status == 500 else str(exc),
                                  None))


def engine_main(path: str, threads: int | None, device: str, options: dict[str, Any], inbox, outbox,
                env: dict[str, str] | None = None) -> None:
    """Entry point of the engine process; `env` is set before any engine library loads (--wait-policy)."""
    import os

    os.environ.update(env or {})
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server drains, then sends "stop"
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        from edgemed.runtimes.base import open_runtime

        runtime = open_runtime(Path(path), threads=threads, device=device, **options)
        worker = Worker(runtime, inbox, outbox)
        outbox.send(("ready", worker.info()))
    except Exception as exc:
        outbox.send(("load_failed", f"{type(exc).__name__}: {exc}" if not _is_edgemed(exc) else str(exc)))
        return
    try:
        worker.serve()
    finally:
        runtime.close()


def _is_edgemed(exc: BaseException) -> bool:
    from edgemed.errors import EdgemedError

    return isinstance(exc, EdgemedError)
