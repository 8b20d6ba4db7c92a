"""The server's side of one engine process: start it, hold its bounded queue, send it one request at a time, route
its events back to the request that waits for them.

Capacity is the request running plus ``queue_size`` waiting; one more is refused at once (429 with Retry-After, the
expected wait from the measured service time). Every request taken is answered: with its result, a 504 when its
deadline passes while it waits, or a 503 when the engine process dies under it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import multiprocessing as mp
import time
from dataclasses import dataclass, field
from typing import Any

from edgemed.errors import EdgemedError
from edgemed.serve.errors import APIError
from edgemed.serve.identity import ArtifactSpec

_IDS = itertools.count(1)
RESTARTS, RESTART_WINDOW_S = 3, 300.0


@dataclass
class Job:
    """One request in an engine: its events arrive on ``events`` (start, token, done, fail)."""

    request: dict[str, Any]
    deadline: float  # time.monotonic() by which it must finish
    rid: str = field(default_factory=lambda: f"r{next(_IDS)}")
    arrived: float = field(default_factory=time.monotonic)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    finished: bool = False


class Engine:
    """One artifact's engine process and its queue."""

    def __init__(self, spec: ArtifactSpec, threads: int | None, device: str, options: dict[str, Any],
                 queue_size: int, on_depth=None, on_done=None, env: dict[str, str] | None = None):
        self.spec = spec
        self.env = dict(env or {})  # set in the engine process before its engine loads
        self.threads, self.device, self.options = threads, device, options
        self.queue_size = queue_size
        self.info: dict[str, Any] = {}
        self.state = "stopped"
        self.active: Job | None = None
        self.service_s = 1.0  # moving average of one request's time in the engine (for Retry-After)
        self.load_timeout = 600.0
        self.restarts: list[float] = []
        self._on_depth = on_depth or (lambda engine: None)
        self._on_done = on_done or (lambda engine, job, result: None)  # every result, the cancelled ones too
        self._queue: asyncio.Queue[Job] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proc = None
        self._inbox = self._outbox = None

    # --- lifecycle ------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 600.0) -> None:
        """Spawn the engine process and wait for its model to load (EdgemedError naming why when it cannot)."""
        from edgemed.serve.worker import engine_main

        self.load_timeout = timeout_s

        ctx = mp.get_context("spawn")  # a fresh interpreter: no event loop, threads or locks inherited
        child_in, self._inbox = ctx.Pipe(duplex=False)
        self._outbox, child_out = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=engine_main, name=f"edgemed-engine-{self.spec.id}", daemon=True,
                                 args=(str(self.spec.path), self.threads, self.device, self.options, child_in,
                                       child_out, self.env))
        self.state = "loading"
        self._proc.start()
        child_in.close()
        child_out.close()
        if not self._outbox.poll(timeout_s):
            self.kill()
            raise EdgemedError(f"{self.spec.id}: the engine did not load {self.spec.path} within {timeout_s:.0f} s")
        try:
            msg = self._outbox.recv()
        except EOFError:
            code = self._proc.exitcode if self._proc.join(5) is None else None
            raise EdgemedError(f"{self.spec.id}: the engine process died while loading {self.spec.path} "
                               f"(exit {code}); run 'edgemed eval {self.spec.path}' to see why") from None
        if msg[0] != "ready":
            self.kill()
            raise EdgemedError(f"{self.spec.id}: cannot load {self.spec.path}: {msg[1]}")
        self.info = msg[1]
        self.state = "ready"

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start routing events into `loop` and taking requests from the queue (called inside the server's loop)."""
        self._loop = loop
        self._queue = asyncio.Queue()
        self._listen()
        self._worker = loop.create_task(self._work())

    def _listen(self) -> None:
        """Read the engine's events in the event loop itself, when its pipe is readable (no reader thread: one wake-up
        per token instead of a thread's and then the loop's)."""
        self._loop.add_reader(self._outbox.fileno(), self._read, self._outbox)

    async def _restart(self) -> None:
        """A dead engine is started again (at most RESTARTS times in RESTART_WINDOW_S; then it stays down and
        /health says so). The requests it held were answered 503; the queue takes new ones once it is back."""
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW_S] + [now]
        if len(self.restarts) > RESTARTS:
            return
        try:
            await asyncio.to_thread(self.start, self.load_timeout)
        except EdgemedError:
            self.state = "failed"
            return
        self._listen()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the engine to exit (after the request it runs), then make sure it has."""
        if self._proc is None:
            return
        self.state = "stopped"
        with contextlib.suppress(OSError, ValueError):
            self._inbox.send(("stop",))
        self._proc.join(timeout_s)
        self.kill()

    def kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)

    @property
    def alive(self) -> bool:
        return self.state == "ready" and self._proc is not None and self._proc.is_alive()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def depth(self) -> int:
        """Requests held: waiting plus running."""
        return (self._queue.qsize() if self._queue else 0) + (1 if self.active else 0)

    # --- requests -------------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        if not self.alive:
            raise APIError(503, f"model '{self.spec.id}' is {self.state if self.state != 'ready' else 'down'}; "
                                "retry later", code="engine_unavailable")
        if self.depth >= self.queue_size + 1:
            wait = max(1, math.ceil(self.service_s * self.depth))
            raise APIError(429, f"model '{self.spec.id}' is busy: {self.depth} requests held (its queue holds "
                                f"{self.queue_size} besides the one running); retry after {wait} s",
                           code="queue_full", headers={"Retry-After": str(wait)})
        self._queue.put_nowait(job)
        self._on_depth(self)

    def cancel(self, job: Job) -> None:
        """The client is gone or its time is up: drop it if it waits, stop it at the next token if it runs."""
        if job.finished or job.cancelled:
            return
        job.cancelled = True
        if self.active is job:
            with contextlib.suppress(OSError, ValueError):
                self._inbox.send(("cancel", job.rid))

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            if job.cancelled:
                self._on_depth(self)
                continue
            if not self.alive:
                self._finish(job, ("fail", job.rid, 503, f"model '{self.spec.id}' is down", "engine_unavailable"))
                continue
            remaining = job.deadline - time.monotonic()
            if remaining <= 0:
                self._finish(job, ("fail", job.rid, 504, "the request's time ran out while it waited in the queue",
                                   "timeout"))
                continue
            self.active = job
            self._on_depth(self)
            start = time.monotonic()
            done = asyncio.Event()
            job._done = done  # type: ignore[attr-defined]
            try:
                self._inbox.send(("run", job.rid, {**job.request, "timeout_s": remaining}))
            except (OSError, ValueError):
                self._finish(job, ("fail", job.rid, 503, f"model '{self.spec.id}' is down", "engine_unavailable"))
            await done.wait()
            self.service_s = 0.7 * self.service_s + 0.3 * (time.monotonic() - start)
            self.active = None
            self._on_depth(self)

    def _finish(self, job: Job, event: tuple) -> None:
        if job.finished:
            return
        job.finished = True
        job.events.put_nowait(event)
        done = getattr(job, "_done", None)
        if done is not None:
            done.set()

    def _read(self, outbox) -> None:
        """Route every event waiting in the pipe (the engine writes each in one piece); at its end the engine died."""
        try:
            while outbox.poll():
                self._route(outbox.recv())
        except (EOFError, OSError):
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(outbox.fileno())
            self._died()

    def _route(self, msg: tuple) -> None:
        job = self.active
        if job is None or msg[1] != job.rid:
            return
        if msg[0] in ("done", "fail"):
            if msg[0] == "done":
                self._on_done(self, job, msg[2])
            self._finish(job, msg)
        else:
            job.events.put_nowait(msg)

    def _died(self) -> None:
        if self.state == "stopped":
            return
        self.state = "failed"
        code = self._proc.exitcode if self._proc is not None else None
        if self.active is not None:
            self._finish(self.active, ("fail", self.active.rid, 503, f"the engine of '{self.spec.id}' died (exit "
                                       f"{code}) while answering", "engine_died"))
        while self._queue is not None and not self._queue.empty():
            job = self._queue.get_nowait()
            self._finish(job, ("fail", job.rid, 503, f"the engine of '{self.spec.id}' died", "engine_died"))
        self.active = None
        self._loop.create_task(self._restart())
