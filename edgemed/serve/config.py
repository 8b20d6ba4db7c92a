"""``ServeConfig``: every option of ``edgemed serve``, declared once and checked before any model loads."""

from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgemed.errors import EdgemedError
from edgemed.serve.abstain import DEFAULT_DISCLAIMER


@dataclass
class ServeConfig:
    """Serve artifacts behind an OpenAI-compatible API with calibrated abstention.

    Args:
        host: address to bind (default loopback; any other needs --api-key).
        port: TCP port (0: any free port, printed at start).
        api_key: key clients send as 'Authorization: Bearer KEY' (default: $EDGEMED_API_KEY); required off loopback.
        threads: CPU threads of each engine (default: physical cores minus one, at least 1: the HTTP server and
            its clients need a core; on a 2-core box, 2 engine threads decoded 4x slower than 1 when serving).
        device: auto, cpu, cuda, cuda:N or mps.
        wait_policy: how each engine's idle threads wait between steps, as edgemed bench's --wait-policy: 'default'
            leaves the engine's own (llama.cpp's OpenMP threads and onnxruntime's pool spin), 'passive' makes them
            sleep (OMP_WAIT_POLICY=PASSIVE, onnxruntime allow_spinning=0: they leave the CPU to the HTTP side between
            tokens), 'active' spins; /v1/models' runtime_info records what was in force.
        n_ctx: llama.cpp context length in tokens (default: the runtime's, 2048).
        queue_size: requests each engine holds waiting besides the one it runs; one more gets 429 + Retry-After.
        timeout: seconds a request may take, queue wait included (504 after; generation stops).
        max_tokens_cap: most tokens one request may ask for (a larger max_tokens gets 400).
        max_body_bytes: largest request body accepted (413 above).
        max_question_chars: longest /v1/mcq question accepted.
        routes: TOML file of aliases ([aliases] medqa = {v1 = 0.9, v2 = 0.1}); reloaded on SIGHUP or
            POST /admin/reload.
        calibration: results.json of 'edgemed eval' or bench.json of 'edgemed bench' holding each artifact's
            calibrated threshold, used only for the same bytes (sha256) and the evaluation side its lineage records;
            comma-separated or repeated.
        threshold: answer /v1/mcq when the letter's probability reaches this (overrides --calibration).
        disclaimer: text returned with every /v1/mcq answer.
        drain_timeout: seconds SIGTERM waits for requests in flight before closing.
        load_timeout: seconds an engine may take to load its model.
        log_level: uvicorn log level (critical, error, warning, info, debug).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    threads: int | None = None
    device: str = "auto"
    wait_policy: Literal["default", "passive", "active"] = "default"
    n_ctx: int | None = None
    queue_size: int = 8
    timeout: float = 300.0
    max_tokens_cap: int = 1024
    max_body_bytes: int = 1_000_000
    max_question_chars: int = 8000
    routes: Path | None = None
    calibration: list[Path] | None = None
    threshold: float | None = None
    disclaimer: str = DEFAULT_DISCLAIMER
    drain_timeout: float = 60.0
    load_timeout: float = 600.0
    log_level: str = "warning"

    def validate(self) -> ServeConfig:
        if self.api_key is None:
            self.api_key = os.environ.get("EDGEMED_API_KEY") or None
        if not self.loopback and not self.api_key:
            raise EdgemedError(f"--host {self.host} is not a loopback address: anyone on the network could query the "
                               "model; pass --api-key KEY (or set EDGEMED_API_KEY), or bind 127.0.0.1")
        if not 0 <= self.port <= 65535:
            raise EdgemedError(f"--port must be in 0..65535, not {self.port}")
        for name, low in (("queue_size", 0), ("max_tokens_cap", 1), ("max_body_bytes", 256),
                          ("max_question_chars", 1), ("n_ctx", 16)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise EdgemedError(f"--{name.replace('_', '-')} must be at least {low}, not {value}")
        for name in ("timeout", "drain_timeout", "load_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise EdgemedError(f"--{name.replace('_', '-')} must be a positive number of seconds, not {value}")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise EdgemedError(f"--threshold is a probability in [0, 1], not {self.threshold}")
        if self.wait_policy not in ("default", "passive", "active"):
            raise EdgemedError(f"--wait-policy must be default, passive or active, not {self.wait_policy}")
        if self.log_level not in ("critical", "error", "warning", "info", "debug"):
            raise EdgemedError(f"--log-level must be critical, error, warning, info or debug, not {self.log_level}")
        if self.routes is not None and not Path(self.routes).is_file():
            raise EdgemedError(f"--routes {self.routes} is not a file; give the TOML file of aliases")
        for file in self.calibration or []:
            if not Path(file).exists():
                raise EdgemedError(f"--calibration {file} does not exist; give the results.json of 'edgemed eval'")
        return self

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def runtime_options(self) -> dict:
        options: dict = {"n_ctx": self.n_ctx} if self.n_ctx else {}
        if self.wait_policy != "default":
            options["allow_spinning"] = self.wait_policy == "active"
        return options

    def engine_env(self) -> dict[str, str]:
        """What the engine process sets in its environment before its engine loads (nothing by default)."""
        return {"OMP_WAIT_POLICY": self.wait_policy.upper()} if self.wait_policy != "default" else {}
