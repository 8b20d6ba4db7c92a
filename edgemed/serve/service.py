"""What the server does with each request, from body to answer: authenticate, check, route, queue, wait (stopping
the engine's work when the client leaves or time runs out), shape, count. The HTTP routes in ``app`` call these."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from edgemed.errors import EdgemedError
from edgemed.serve import protocol
from edgemed.serve.abstain import Threshold, answer
from edgemed.serve.chat import TemplateMissing, render_chat
from edgemed.serve.config import ServeConfig
from edgemed.serve.engine import Engine, Job
from edgemed.serve.errors import APIError, error_body
from edgemed.serve.metrics import NO_MODEL, Metrics
from edgemed.serve.routing import Routes, load_routes
from edgemed.serve.wire import Shape, sse

GRACE_S = 5.0  # past a request's deadline the engine has stopped it itself; this is the wait for its last event


@dataclass
class Service:
    config: ServeConfig
    engines: dict[str, Engine]
    routes: Routes
    thresholds: dict[str, Threshold]
    metrics: Metrics = field(default_factory=Metrics)
    draining: bool = False
    started: float = field(default_factory=time.time)
    loop: Any = None  # the server's event loop, once it runs

    # --- shared steps -------------------------------------------------------------------------------------
    def authorize(self, request: Request) -> None:
        key = self.config.api_key
        if not key:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise APIError(401, "Incorrect or missing API key: send 'Authorization: Bearer KEY'",
                           code="invalid_api_key")

    async def body(self, request: Request) -> dict[str, Any]:
        limit = self.config.max_body_bytes
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            raise APIError(413, f"the body is {length} bytes, above this server's --max-body-bytes {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise APIError(413, f"the body is over this server's --max-body-bytes {limit}")
            chunks.append(chunk)
        return protocol.parse_json(b"".join(chunks))

    def error(self, exc: APIError, endpoint: str, model: str, t0: float) -> JSONResponse:
        self.metrics.answered(endpoint, model, exc.status, time.monotonic() - t0)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    def route(self, req: dict[str, Any]) -> tuple[Engine, str | None]:
        artifact, alias = self.routes.pick(req["model"], req.get("user"), set(self.engines))
        return self.engines[artifact], alias

    def extra(self, engine: Engine, alias: str | None) -> dict[str, Any]:
        return {"artifact": engine.spec.id, "sha256": engine.spec.sha256, "format": engine.spec.format,
                "alias": alias}

    def headers(self, engine: Engine, alias: str | None) -> dict[str, str]:
        h = {"X-Edgemed-Artifact": engine.spec.id, "X-Edgemed-Artifact-Sha256": engine.spec.sha256}
        if alias:
            h["X-Edgemed-Alias"] = alias
        return h

    def submit(self, engine: Engine, request: dict[str, Any], t0: float) -> Job:
        if self.draining:
            raise APIError(503, "the server is shutting down; retry on another instance", code="draining")
        job = Job(request=request, deadline=t0 + self.config.timeout)
        engine.submit(job)
        return job

    async def events(self, job: Job, engine: Engine, request: Request) -> AsyncIterator[tuple]:
        """The job's events until done/fail; a client that leaves or a deadline that passes cancels the job."""
        while True:
            try:
                event = await asyncio.wait_for(job.events.get(), timeout=0.25)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    engine.cancel(job)
                    return
                if time.monotonic() > job.deadline + GRACE_S:
                    engine.cancel(job)
                    yield ("fail", job.rid, 504, f"no answer within --timeout {self.config.timeout:g} s", "timeout")
                    return
                continue
            yield event
            if event[0] in ("done", "fail"):
                return

    @staticmethod
    def failure(event: tuple) -> APIError:
        return APIError(event[2], event[3], code=event[4] if len(event) > 4 else None)

    # --- chat and text completions -------------------------------------------------------------------------
    async def complete(self, request: Request, kind: str) -> Response:
        endpoint = "chat" if kind == "chat" else "completions"
        t0, model = time.monotonic(), NO_MODEL
        try:
            self.authorize(request)
            body = await self.body(request)
            check = protocol.chat_request if kind == "chat" else protocol.completion_request
            req = check(body, self.config.max_tokens_cap)
            engine, alias = self.route(req)
            model = engine.spec.id
            prompt = self.prompt(engine, req)
            job = self.submit(engine, {"kind": "generate", "prompt": prompt, **{k: req[k] for k in (
                "max_tokens", "temperature", "top_p", "seed", "stop", "logprobs")}}, t0)
        except APIError as exc:
            return self.error(exc, endpoint, model, t0)
        shape = Shape(kind, job.rid, model, self.extra(engine, alias), req["logprobs"])
        stream = self.events(job, engine, request)
        first = None
        async for event in stream:  # the first event decides between an answer and an error status
            first = event
            break
        if first is None:
            self.metrics.answered(endpoint, model, 499, time.monotonic() - t0)  # the client left
            return Response(status_code=499)
        if first[0] == "fail":
            return self.error(self.failure(first), endpoint, model, t0)
        headers = self.headers(engine, alias)
        if req["stream"]:
            return StreamingResponse(self._sse(shape, stream, job, engine, endpoint, req, t0),
                                     media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"})
        text, entries, done, timer = [], [], None, _TokenTimer(self.metrics, model, job.arrived)
        async for event in stream:
            if event[0] == "token":
                timer.tick()
                text.append(event[2])
                if event[3] is not None:
                    entries.append(event[3])
            elif event[0] == "done":
                done = event[2]
            elif event[0] == "fail":
                return self.error(self.failure(event), endpoint, model, t0)
        if done is None:
            self.metrics.answered(endpoint, model, 499, time.monotonic() - t0)
            return Response(status_code=499)
        if done["finish_reason"] == "timeout":
            return self.error(APIError(504, f"generation ran past --timeout {self.config.timeout:g} s and was "
                                            "stopped", code="timeout"), endpoint, model, t0)
        self.metrics.answered(endpoint, model, 200, time.monotonic() - t0)
        return JSONResponse(shape.whole("".join(text), entries, done), headers=headers)

    def prompt(self, engine: Engine, req: dict[str, Any]) -> str:
        if req["kind"] != "chat":
            return req["prompt"]
        info = engine.info
        try:
            return render_chat(info.get("chat_template"), req["messages"], info.get("bos_token", ""),
                               info.get("eos_token", ""))
        except TemplateMissing:
            raise APIError(400, f"model '{engine.spec.id}' carries no chat template; send raw text to "
                                "/v1/completions", "messages", "no_chat_template") from None

    async def _sse(self, shape: Shape, stream: AsyncIterator[tuple], job: Job, engine: Engine, endpoint: str,
                   req: dict[str, Any], t0: float) -> AsyncIterator[str]:
        timer, offset, code = _TokenTimer(self.metrics, shape.model, job.arrived), 0, 499
        try:
            if shape.kind == "chat":
                yield shape.chunk(None, None, first=True)
            async for event in stream:
                if event[0] == "token":
                    timer.tick()
                    yield shape.chunk(event[2], event[3], offset=offset)
                    offset += len(event[2])
                elif event[0] == "done":
                    done = event[2]
                    if done["finish_reason"] == "timeout":
                        code = 504
                        yield sse(error_body(504, f"generation ran past --timeout {self.config.timeout:g} s and "
                                                  "was stopped", code="timeout"))
                    else:
                        code = 200
                        yield shape.chunk(None, None, done=done)
                        if req.get("include_usage"):
                            yield shape.usage_chunk(done)
                    yield sse("[DONE]")
                elif event[0] == "fail":
                    code = event[2]
                    yield sse(self.failure(event).body())
                    yield sse("[DONE]")
        finally:  # also when the client disconnects mid-stream: stop the generation
            engine.cancel(job)
            self.metrics.answered(endpoint, shape.model, code, time.monotonic() - t0)

    # --- multiple choice -----------------------------------------------------------------------------------
    async def mcq(self, request: Request) -> Response:
        t0, model, endpoint = time.monotonic(), NO_MODEL, "mcq"
        try:
            self.authorize(request)
            req = protocol.mcq_request(await self.body(request), self.config.max_question_chars)
            engine, alias = self.route(req)
            model = engine.spec.id
            job = self.submit(engine, {"kind": "mcq", "question": req["question"], "options": req["options"]}, t0)
        except APIError as exc:
            return self.error(exc, endpoint, model, t0)
        done = None
        async for event in self.events(job, engine, request):
            if event[0] == "fail":
                return self.error(self.failure(event), endpoint, model, t0)
            if event[0] == "done":
                done = event[2]
        if done is None:
            self.metrics.answered(endpoint, model, 499, time.monotonic() - t0)
            return Response(status_code=499)
        threshold = self.thresholds[model]
        verdict = answer(done["probs"], threshold)
        self.metrics.abstained(model, verdict["abstained"])
        self.metrics.answered(endpoint, model, 200, time.monotonic() - t0)
        body = {"id": f"mcq-{job.rid}", "object": "mcq.answer", "created": int(time.time()), "model": model,
                "sha256": engine.spec.sha256, **verdict, "threshold": threshold.value,
                "threshold_source": threshold.source, "calibration": threshold.describe(),
                "prompt_style": done.get("prompt_style"), "disclaimer": self.config.disclaimer,
                "usage": {"prompt_tokens": done.get("prompt_tokens", 0), "completion_tokens": 0,
                          "total_tokens": done.get("prompt_tokens", 0)},
                "edgemed": self.extra(engine, alias)}
        return JSONResponse(body, headers=self.headers(engine, alias))

    # --- the rest --------------------------------------------------------------------------------------------
    def models(self) -> dict[str, Any]:
        data = []
        for engine in self.engines.values():
            meta = {**engine.spec.metadata(), "state": engine.state, "engine_pid": engine.pid,
                    "context_length": engine.info.get("context_length"),
                    "prompt_style": engine.info.get("prompt_style"),
                    "runtime_info": engine.info.get("runtime_info"),  # the engine's effective settings
                    "mcq_threshold": self.thresholds[engine.spec.id].describe()}
            data.append({"id": engine.spec.id, "object": "model", "created": int(self.started),
                         "owned_by": "edgemed", "edgemed": meta})
        for alias, targets in self.routes.aliases.items():
            data.append({"id": alias, "object": "model", "created": int(self.routes.loaded_at),
                         "owned_by": "edgemed", "edgemed": {"alias_of": dict(targets)}})
        return {"object": "list", "data": data}

    def reload(self) -> Routes:
        """Swap in the routes file as it is now; a file that does not check keeps the old routes (EdgemedError)."""
        if self.config.routes is None:
            raise EdgemedError("no --routes file was given at start: nothing to reload")
        try:
            fresh = load_routes(Path(self.config.routes), set(self.engines))
        except EdgemedError:
            self.metrics.reloads.labels("failed").inc()
            raise
        self.routes = fresh  # one assignment: every request sees the old mapping or the new one
        self.metrics.reloads.labels("ok").inc()
        return fresh

    def health(self) -> tuple[int, dict[str, Any]]:
        states = {eid: e.state if e.alive or e.state != "ready" else "dead" for eid, e in self.engines.items()}
        ok = all(s == "ready" for s in states.values())
        return (200 if ok else 503), {"status": "ok" if ok else "degraded", "engines": states}

    def ready(self) -> tuple[int, dict[str, Any]]:
        code, body = self.health()
        if self.draining:
            return 503, {**body, "status": "draining"}
        return code, {**body, "status": "ready" if code == 200 else body["status"]}

    def dump(self, body: dict[str, Any]) -> bytes:
        return json.dumps(body).encode()


class _TokenTimer:
    """Time to first token (from arrival, queue included) and between tokens, into the histograms."""

    def __init__(self, metrics: Metrics, model: str, arrived: float):
        self.metrics, self.model, self.last = metrics, model, None
        self.arrived = arrived

    def tick(self) -> None:
        now = time.monotonic()
        if self.last is None:
            self.metrics.ttft.labels(self.model).observe(now - self.arrived)
        else:
            self.metrics.itl.labels(self.model).observe(now - self.last)
        self.last = now
