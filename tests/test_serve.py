"""edgemed serve, end to end: the real server (uvicorn, engine processes running llama.cpp on a tiny-random GGUF) on
loopback, driven by the official `openai` client and by raw HTTP (httpx). Nothing is mocked."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx", reason="the serve extra is not installed (pip install edgemed[serve])")
openai = pytest.importorskip("openai", reason="the dev extra's openai client is not installed")
pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install edgemed[serve])")

KEY = "test-key"
CAP = 256


class Server:
    """`edgemed serve ...` in a subprocess on a free loopback port."""

    def __init__(self, *args: str, env: dict | None = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "edgemed.cli.main", "serve", *map(str, args),
                                      "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.stderr: list[str] = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.wait(30)
            raise AssertionError(f"server did not start: {line!r} {''.join(self.stderr)}")
        self.base = line.split("listening on ")[1].split()[0]  # http://127.0.0.1:PORT/v1
        self.root = self.base.removesuffix("/v1")

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base, api_key=key, max_retries=0, timeout=60)

    def post(self, path: str, body=None, raw: bytes | None = None, key: str | None = KEY, **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers["Content-Type"] = "application/json"
        content = raw if raw is not None else json.dumps(body).encode()
        return httpx.post(self.root + path, content=content, headers=headers, timeout=60, **kw)

    def get(self, path: str, key: str | None = KEY) -> httpx.Response:
        return httpx.get(self.root + path, headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=30)

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def tiny_gguf(request) -> Path:
    """The tiny model's gguf-q8_0 artifact: from the shared session export (conftest's tiny_hf_gguf) where there is
    one, else exported once for these tests; EDGEMED_TEST_SERVE_GGUF names an existing artifact folder instead, to
    iterate on these tests without exporting again."""
    given = os.environ.get("EDGEMED_TEST_SERVE_GGUF")
    if given:
        return Path(given)
    try:
        return request.getfixturevalue("tiny_hf_gguf") / "gguf-q8_0"
    except pytest.FixtureLookupError:
        pass
    made = getattr(request.config, "_edgemed_serve_gguf", None)  # once per session, whichever module asks first
    if made is None:
        from conftest import run_cli

        model = request.getfixturevalue("tiny_model")
        out = request.getfixturevalue("tmp_path_factory").mktemp("serve-gguf") / "exports"
        proc = run_cli("export", model, "--formats", "gguf-q8_0", "--no-verify", "--out", out, timeout=600)
        assert proc.returncode == 0, proc.stderr
        made = request.config._edgemed_serve_gguf = out / "gguf-q8_0"
    return made


@pytest.fixture(scope="module")
def gguf(request) -> Path:
    return tiny_gguf(request)


@pytest.fixture(scope="module")
def routes_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("routes") / "routes.toml"
    path.write_text('[aliases]\nmedqa = "a"\nsplit = {a = 0.5, b = 0.5}\n')
    return path


@pytest.fixture(scope="module")
def server(gguf, routes_file):
    s = Server(f"a={gguf}", f"b={gguf}", "--api-key", KEY, "--queue-size", "2", "--max-tokens-cap", CAP,
               "--n-ctx", "512", "--max-body-bytes", "20000", "--threshold", "0.3", "--routes", routes_file,
               "--threads", "1", "--timeout", "120", "--wait-policy", "passive")
    yield s
    assert s.stop() == 0, "".join(s.stderr)


def test_openai_client_chat_plain_and_streamed_agree(server):
    c = server.client()
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a bone."}]
    plain = c.chat.completions.create(model="a", messages=messages, max_tokens=12, temperature=0, seed=1)
    assert plain.model == "a" and plain.object == "chat.completion"
    assert plain.choices[0].message.role == "assistant"
    assert 1 <= plain.usage.completion_tokens <= 12 and plain.usage.prompt_tokens > 5
    assert plain.choices[0].finish_reason in ("stop", "length")
    chunks = list(c.chat.completions.create(model="a", messages=messages, max_tokens=12, temperature=0, seed=1,
                                            stream=True, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == plain.choices[0].message.content  # greedy: the stream carries the same answer
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    raw = server.post("/v1/chat/completions", {"model": "a", "messages": messages, "max_tokens": 4, "stream": True})
    assert raw.status_code == 200 and raw.headers["x-edgemed-artifact"] == "a"
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_chat_prompt_is_the_models_own_template(server, gguf):
    """The prompt counted in usage is the chat template's rendering, tokenized by the model (not a second format)."""
    from edgemed.chat_template import render_messages
    from edgemed.runtimes.base import open_runtime

    messages = [{"role": "user", "content": "Hello there"}]
    with open_runtime(gguf, threads=1) as rt:
        n = len(rt.tokenize(render_messages(rt.chat_template(), messages)))
    got = server.client().chat.completions.create(model="a", messages=messages, max_tokens=1)
    assert got.usage.prompt_tokens == n


def test_logprobs_in_openai_format(server):
    c = server.client()
    r = c.chat.completions.create(model="a", messages=[{"role": "user", "content": "Say hi"}], max_tokens=6,
                                  temperature=0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for entry in content:
        tops = [t.logprob for t in entry.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True) and all(t <= 0 for t in tops)
        assert entry.logprob == pytest.approx(tops[0], abs=1e-6)  # greedy picks the most likely token
        assert entry.bytes == list(entry.token.encode())
    comp = c.completions.create(model="a", prompt="The heart has", max_tokens=5, temperature=0, logprobs=2)
    lp = comp.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == comp.usage.completion_tokens
    assert all(len(t) <= 2 for t in lp.top_logprobs)


def test_stop_strings_seed_and_sampling(server):
    c = server.client()
    free = c.completions.create(model="a", prompt="x", max_tokens=24, temperature=0).choices[0].text
    stop = free[2:5]  # a piece of what greedy decoding writes: generation must end before it
    cut = c.completions.create(model="a", prompt="x", max_tokens=24, temperature=0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop" and cut.choices[0].text == free[: free.find(stop)]
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model="a", prompt="x", max_tokens=24, temperature=0, stop=[stop], stream=True))
    assert streamed == cut.choices[0].text  # held-back text that turned out to be the stop string is never sent
    sampled = [c.completions.create(model="a", prompt="Tell me", max_tokens=12, temperature=1.5, top_p=0.95,
                                    seed=seed).choices[0].text for seed in (7, 7, 8)]
    assert sampled[0] == sampled[1] and sampled[0] != sampled[2]  # the seed fixes a sampled answer


def test_models_list_names_each_artifact_with_its_sha256(server, gguf):
    models = {m.id: m for m in server.client().models.list().data}
    assert {"a", "b", "medqa", "split"} <= set(models)
    meta = models["a"].model_extra["edgemed"]
    file = next(gguf.glob("*.gguf"))
    assert meta["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert meta["format"] == "gguf-q8_0" and meta["lineage"]["prompt_style"]
    runtime = meta["runtime_info"]  # the engine's effective settings, as the server was told
    assert runtime["threads"] == 1 and runtime["n_ctx"] == 512 and "repack" in runtime and runtime["kernel_path"]
    assert runtime["omp_wait_policy"].startswith("PASSIVE")  # --wait-policy reached the engine before it loaded
    assert meta["mcq_threshold"]["from"] == "--threshold" and meta["mcq_threshold"]["threshold"] == 0.3


BAD = [
    ("/v1/chat/completions", b"{not json", 400, None),
    ("/v1/chat/completions", b"[1, 2]", 400, None),
    ("/v1/chat/completions", {"model": "a", "messages": "hi"}, 400, "messages"),
    ("/v1/chat/completions", {"model": "a", "messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"model": "a", "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0].role"),
    ("/v1/chat/completions", {"model": 7, "messages": [{"role": "user", "content": "x"}]}, 400, "model"),
    ("/v1/chat/completions", {"model": "a", "messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"},
     400, "max_tokens"),
    ("/v1/chat/completions", {"model": "a", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
     400, "temperature"),
    ("/v1/chat/completions", {"model": "a", "messages": [{"role": "user", "content": "x"}], "max_tokens": CAP + 1},
     400, "max_tokens"),
    ("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
    ("/v1/chat/completions", {"model": "a", "messages": [{"role": "user", "content": "x " * 12000}]}, 413, None),
    ("/v1/completions", {"model": "a", "prompt": ""}, 400, "prompt"),
    ("/v1/completions", {"model": "a", "prompt": "x", "logprobs": 9}, 400, "logprobs"),
    ("/v1/mcq", {"model": "a", "question": "  ", "options": {"A": "1", "B": "2", "C": "3", "D": "4"}}, 400,
     "question"),
    ("/v1/mcq", {"model": "a", "question": "Q?", "options": {"A": "1", "B": "2", "C": "3"}}, 400, "options"),
    ("/v1/mcq", {"model": "a", "question": "Q?", "options": {"A": "1", "B": "2", "C": "3", "D": "4", "E": "5"}},
     400, "options"),
    ("/v1/mcq", {"model": "a", "question": "Q?", "options": {"A": "1", "B": "2", "C": "", "D": "4"}}, 400,
     "options.C"),
    ("/v1/mcq", {"model": "a", "question": "Q?", "options": ["1", "2", "3"]}, 400, "options"),
    ("/v1/mcq", {"model": "a", "question": "Q?", "options": {"A": 1, "B": "2", "C": "3", "D": "4"}}, 400,
     "options.A"),
    ("/v1/mcq", {"model": "zzz", "question": "Q?", "options": ["1", "2", "3", "4"]}, 404, "model"),
]


@pytest.mark.parametrize("path,body,status,param", BAD, ids=[f"{i}-{b[0].rsplit('/', 1)[1]}" for i, b in
                                                             enumerate(BAD)])
def test_bad_input_gets_a_4xx_in_openai_shape(server, path, body, status, param):
    r = server.post(path, raw=body if isinstance(body, bytes) else None, body=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"] and err["param"] == param


def test_prompt_over_context_and_unknown_routes_then_still_serving(server):
    long = "word " * 600  # over --n-ctx 512 but under the body limit
    r = server.post("/v1/completions", {"model": "a", "prompt": long, "max_tokens": 4})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    r = server.post("/v1/mcq", {"model": "a", "question": long, "options": ["1", "2", "3", "4"]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert server.post("/v1/nothing", {}).status_code == 404
    assert server.get("/v1/chat/completions").status_code == 405
    ok = server.client().completions.create(model="a", prompt="still here", max_tokens=2)
    assert ok.usage.completion_tokens >= 1


def test_api_key_is_required(server):
    r = server.post("/v1/chat/completions", {"model": "a", "messages": [{"role": "user", "content": "x"}]}, key=None)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert server.get("/v1/models", key="wrong").status_code == 401
    with pytest.raises(openai.AuthenticationError):
        server.client("wrong").models.list()
    assert server.get("/health", key=None).status_code == 200 and server.get("/ready", key=None).status_code == 200


def test_mcq_answers_or_abstains_at_the_threshold(server):
    q = {"model": "a", "question": "Which vitamin deficiency causes scurvy?",
         "options": {"A": "Vitamin A", "B": "Vitamin B12", "C": "Vitamin C", "D": "Vitamin D"}}
    r = server.post("/v1/mcq", q)
    assert r.status_code == 200, r.text
    body = r.json()
    probs = body["probabilities"]
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
    best = max(probs, key=probs.get)
    assert body["probability"] == pytest.approx(probs[best])
    assert body["threshold"] == 0.3 and body["abstained"] == (probs[best] < 0.3)
    assert body["letter"] == (None if body["abstained"] else best)
    assert body["disclaimer"] and body["sha256"] and body["model"] == "a"
    assert r.headers["x-edgemed-artifact"] == "a"


def test_mcq_probability_is_the_evaluators(server, gguf):
    """The served probability is the eval's restricted softmax for the same question (same runtime, same prompt)."""
    from edgemed.data.medmcqa import Question
    from edgemed.evaluator.run import evaluate
    from edgemed.runtimes.base import open_runtime

    opts = ("Femur", "Tibia", "Radius", "Ulna")
    q = Question(id="q1", question="Which is the longest bone?", options=opts, answer=0)
    with open_runtime(gguf, threads=1) as rt:
        pred = evaluate(rt, [q], show_progress=False).predictions[0]
    body = server.post("/v1/mcq", {"model": "a", "question": q.question, "options": list(opts)}).json()
    for letter in "ABCD":
        assert body["probabilities"][letter] == pytest.approx(pred["probs"][letter], abs=1e-5)


def test_queue_full_gets_429_with_retry_after_and_every_held_request_is_answered(server):
    """One long generation holds engine 'b'; then 8 clients at once: the queue (2) takes two, the rest get 429."""
    busy = {}

    def long_one():
        busy["r"] = server.post("/v1/completions", {"model": "b", "prompt": "x", "max_tokens": CAP,
                                                    "temperature": 0})

    holder = threading.Thread(target=long_one)
    holder.start()
    deadline = time.monotonic() + 30
    while server.metric("edgemed_queue_depth", model="b") < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def one():
        r = server.post("/v1/completions", {"model": "b", "prompt": "y", "max_tokens": 2})
        with lock:
            results.append(r)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    holder.join(120)
    codes = sorted(r.status_code for r in results)
    assert set(codes) <= {200, 429}, codes
    assert codes.count(200) >= 2  # at least as many answers as the queue holds
    assert codes.count(429) >= 1  # and the queue is bounded: 8 do not all wait
    for r in results:
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1 and r.json()["error"]["code"] == "queue_full"
    assert busy["r"].status_code == 200


def test_client_disconnect_stops_generation(server):
    before = server.metric("edgemed_cancelled_requests_total", model="b", reason="cancelled")
    with httpx.stream("POST", server.root + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": "b", "prompt": "x", "max_tokens": CAP, "stream": True, "temperature": 0},
                      timeout=30) as r:
        for _ in r.iter_lines():
            break  # one chunk, then hang up
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if server.metric("edgemed_cancelled_requests_total", model="b", reason="cancelled") > before:
            break
        time.sleep(0.05)
    assert server.metric("edgemed_cancelled_requests_total", model="b", reason="cancelled") == before + 1


def test_aliases_route_sticky_and_reload_keeps_old_mapping_on_a_broken_file(server, routes_file):
    def who(model: str, user: str | None = None) -> str:
        body = {"model": model, "question": "Q?", "options": ["1", "2", "3", "4"]}
        if user:
            body["user"] = user
        r = server.post("/v1/mcq", body)
        assert r.status_code == 200, r.text
        assert r.json()["edgemed"]["artifact"] == r.headers["x-edgemed-artifact"]
        return r.headers["x-edgemed-artifact"]

    assert who("medqa") == "a"
    assert len({who("split", "alice") for _ in range(5)}) == 1  # sticky per user
    assert {who("split", f"user-{i}") for i in range(24)} == {"a", "b"}  # both sides of the split get users
    original = routes_file.read_text()
    try:
        routes_file.write_text("[aliases]\nmedqa = {a = \n")  # broken TOML
        server.proc.send_signal(signal.SIGHUP)
        r = server.post("/admin/reload", {})
        assert r.status_code == 400 and r.json()["error"]["code"] == "reload_failed"
        assert who("medqa") == "a"  # the old mapping keeps serving
        routes_file.write_text('[aliases]\nmedqa = "ghost"\n')  # names an artifact not served
        assert server.post("/admin/reload", {}).status_code == 400 and who("medqa") == "a"
        assert server.post("/admin/reload", {}, key=None).status_code == 401
        routes_file.write_text('[aliases]\nmedqa = "b"\nsplit = {a = 1, b = 0}\n')
        server.proc.send_signal(signal.SIGHUP)  # the signal reloads as well as the admin call
        deadline = time.monotonic() + 10
        while who("medqa") != "b" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert who("medqa") == "b" and who("split", "alice") == "a"
    finally:
        routes_file.write_text(original)
        assert server.post("/admin/reload", {}).status_code == 200
    assert server.metric("edgemed_route_reloads_total", outcome="failed") >= 2


def test_metrics_count_requests_errors_latency_and_abstention(server):
    text = server.get("/metrics").text
    for name in ("edgemed_requests_total", "edgemed_request_errors_total", "edgemed_time_to_first_token_seconds",
                 "edgemed_inter_token_latency_seconds", "edgemed_queue_depth", "edgemed_abstention_rate"):
        assert name in text, name
    assert server.metric("edgemed_request_errors_total", code="400") > 0
    assert server.metric("edgemed_time_to_first_token_seconds_count", model="a") > 0


def test_non_loopback_needs_an_api_key(gguf, cli):
    proc = cli("serve", gguf, "--host", "0.0.0.0", timeout=60, env={"EDGEMED_API_KEY": ""})
    assert proc.returncode == 2 and "--api-key" in proc.stderr and "Traceback" not in proc.stderr


def test_sigterm_drains_requests_in_flight_and_exits_0(gguf):
    s = Server(f"a={gguf}", "--queue-size", "4", "--max-tokens-cap", CAP, "--threads", "1")
    results: list = []

    def one(i):
        try:
            results.append(s.client().completions.create(model="a", prompt=f"n{i}", max_tokens=CAP, temperature=0))
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            results.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if s.metric("edgemed_queue_depth", model="a") >= 3:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    assert s.metric("edgemed_queue_depth", model="a") >= 2  # requests are in flight when the signal comes
    code = s.stop()
    for t in threads:
        t.join(60)
    assert code == 0, "".join(s.stderr)
    assert len(results) == 3 and all(not isinstance(r, Exception) for r in results), results
    assert all(r.usage.completion_tokens >= 1 for r in results)
    assert "drained" in "".join(s.stderr)


def test_per_request_timeout_stops_generation_with_504(gguf):
    s = Server(f"a={gguf}", "--timeout", "1", "--max-tokens-cap", "2000", "--n-ctx", "2048", "--threads", "1")
    try:
        start = time.monotonic()
        r = s.post("/v1/completions", {"model": "a", "prompt": "x", "max_tokens": 2000, "temperature": 0}, key=None)
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout", r.text
        assert time.monotonic() - start < 10  # stopped at the deadline, not after 2000 tokens
        assert s.metric("edgemed_cancelled_requests_total", model="a", reason="timeout") == 1
        assert s.post("/v1/completions", {"model": "a", "prompt": "x", "max_tokens": 2}, key=None).status_code == 200
    finally:
        assert s.stop() == 0


def test_a_dead_engine_is_answered_503_and_started_again(gguf):
    s = Server(f"a={gguf}", "--threads", "1")
    try:
        pid = s.get("/v1/models", key=None).json()["data"][0]["edgemed"]["engine_pid"]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r = s.post("/v1/completions", {"model": "a", "prompt": "x", "max_tokens": 2}, key=None)
            assert r.status_code in (200, 503), r.text  # never a 500 or a hang
            if r.status_code == 200:
                break
            time.sleep(0.2)
        assert r.status_code == 200 and s.get("/health", key=None).status_code == 200
        assert s.get("/v1/models", key=None).json()["data"][0]["edgemed"]["engine_pid"] != pid
    finally:
        assert s.stop() == 0


def test_served_connections_send_small_writes_at_once():
    """The listening socket says TCP, so asyncio turns Nagle's algorithm off on every accepted connection: with it on,
    each small write (a response body, an SSE token) waited for the client's delayed ACK, about 40 ms."""
    import asyncio
    import socket

    from edgemed.serve.server import bind

    sock = bind("127.0.0.1", 0)

    async def accepted_nodelay() -> int:
        loop = asyncio.get_running_loop()
        seen = loop.create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport):
                seen.set_result(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        server = await loop.create_server(Probe, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        value = await asyncio.wait_for(seen, 10)
        writer.close()
        server.close()
        return value

    assert asyncio.run(accepted_nodelay()) != 0


def test_streamed_text_decoder_is_detokenize_of_every_prefix(gguf):
    """The engine's incremental text (llama.cpp's per-token pieces) equals detokenize of all tokens so far, at every
    token: across UTF-8 characters split over byte tokens, special tokens, and BOS first or later."""
    from edgemed.runtimes.base import TextDecoder
    from edgemed.runtimes.llamacpp import LlamaCppRuntime

    with LlamaCppRuntime(gguf, threads=1) as rt:
        bos = rt.llm.token_bos()
        generated = [t for t, _ in rt.token_stream(rt.tokenize("Question: what is a fever?"), 24)]
        words = rt.tokenize(" 日本語 é ü<|im_end|> x", add_special=False)
        assert any(not rt.detokenize([t]) for t in words)  # a character split over byte tokens
        space = rt.tokenize(" a", add_special=False)
        for ids in (generated + words, words + [bos] + space, [bos] + space + words, space + words[:2]):
            decoder = rt.text_decoder()
            for i, token in enumerate(ids):
                assert decoder.add(token) == rt.detokenize(ids[: i + 1]) == decoder.text
        assert type(rt.text_decoder()) is not TextDecoder  # the per-token one, not the generic one
