"""``edgemed serve``: artifacts behind an OpenAI-compatible API (chat, completions, /v1/mcq with calibrated
abstention), each in an engine process of its own running the runtime the bench measures."""

from __future__ import annotations

from edgemed.serve.config import ServeConfig


def serve(artifacts: list[str], config: ServeConfig) -> int:
    """Serve artifacts behind an OpenAI-compatible API with calibrated abstention on multiple-choice questions.

    Endpoints: GET /v1/models, POST /v1/chat/completions, POST /v1/completions, POST /v1/mcq, GET /health,
    GET /ready, GET /metrics, POST /admin/reload. SIGTERM or Ctrl-C drains the requests in flight and exits 0;
    SIGHUP reloads --routes. Exit codes: 0 stopped cleanly, 2 bad usage or input (an artifact, a port, a
    calibration file), 3 a bug.

    Args:
        artifacts: artifact folders, .gguf files or aliases, each optionally named NAME=PATH (the model id clients
            send; default: the folder's name).
    """
    from edgemed.serve.server import run_serve

    return run_serve(artifacts, config)
