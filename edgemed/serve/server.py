"""Start everything and run until SIGTERM/SIGINT: check the artifacts, load each in its engine, bind, serve; on the
signal stop taking connections, answer every request in flight (up to --drain-timeout), stop the engines, exit 0.
SIGHUP reloads the routes file."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
from pathlib import Path

from edgemed.errors import EdgemedError
from edgemed.serve.config import ServeConfig


def require(packages: tuple[str, ...], what: str) -> None:
    """Refuse (exit 2, naming the extra) when the serve extra's packages are not installed."""
    import importlib.util

    from edgemed.errors import MissingDependency

    for module, package in (p.split(":") if ":" in p else (p, p) for p in packages):
        if importlib.util.find_spec(module) is None:
            raise MissingDependency(package, "serve", what)


SERVER_PACKAGES = ("fastapi", "uvicorn", "prometheus_client:prometheus-client", "jinja2")


def prepare(artifacts: list[str], config: ServeConfig):
    """Everything that can be refused before a model loads: the config, each artifact (manifest, digest), the
    calibration files (results.json or bench.json: each must hold a served artifact's sha256, calibrated on its
    evaluation side), the routes file. Returns (specs, thresholds, routes)."""
    from edgemed.serve.abstain import match_calibrations, read_calibrations, threshold_for
    from edgemed.serve.identity import identify
    from edgemed.serve.routing import load_routes

    require(SERVER_PACKAGES, "edgemed serve")
    config.validate()
    if not artifacts:
        raise EdgemedError("give at least one artifact to serve")
    specs = [identify(a) for a in artifacts]
    ids = [s.id for s in specs]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise EdgemedError(f"two artifacts share the model id {', '.join(dupes)}; name them: NAME=PATH")
    calibrations = match_calibrations(specs, read_calibrations(list(config.calibration or [])))
    thresholds = {s.id: threshold_for(s.id, calibrations, config.threshold) for s in specs}
    routes = load_routes(Path(config.routes) if config.routes else None, set(ids))
    return specs, thresholds, routes


def check_styles(thresholds: dict, engines: dict) -> None:
    """Refuse a threshold calibrated under another prompt style than the one the engine serves with (the
    probabilities would not be the same numbers); say where each threshold came from."""
    for artifact_id, t in thresholds.items():
        served_style = engines[artifact_id].info.get("prompt_style")
        if t.prompt_style and t.prompt_style != served_style:
            raise EdgemedError(f"{t.source}: the threshold of {artifact_id} was calibrated with prompt style "
                               f"'{t.prompt_style}', but the artifact is served with '{served_style}' (its "
                               "lineage); re-run eval/bench without --prompt-style")
        if t.value is not None:
            line = f"/v1/mcq threshold {t.value:.4f} from {t.source}"
        elif t.origin == "none":
            line = f"/v1/mcq abstains on every question: {t.source}"
        else:
            line = f"/v1/mcq abstains on every question: no threshold is certified in {t.source}"
        print(f"edgemed serve: {artifact_id}: {line}", file=sys.stderr, flush=True)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without it
    # Nagle's algorithm holds each small write (a response's body, an SSE token) until the client's delayed ACK,
    # about 40 ms on Linux
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise EdgemedError(f"cannot bind {host}:{port} ({exc.strerror}); pick another --port or stop what holds it"
                           ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_serve(artifacts: list[str], config: ServeConfig) -> int:
    import uvicorn

    from edgemed.console import err_console
    from edgemed.resources import resolved
    from edgemed.serve.app import build_app
    from edgemed.serve.engine import Engine
    from edgemed.serve.metrics import Metrics
    from edgemed.serve.service import Service

    specs, thresholds, routes = prepare(artifacts, config)
    sock = bind(config.host, config.port)  # before minutes of loading: a taken port is refused at once
    where = resolved(config.threads, config.device)
    if config.threads is None:  # leave the HTTP side a core: see ServeConfig.threads
        from edgemed.resources import physical_cores

        where["threads"] = max(1, physical_cores() - 1)
    metrics = Metrics()
    engines: dict[str, Engine] = {}

    def depth(engine: Engine) -> None:
        metrics.depth.labels(engine.spec.id).set(engine.depth)

    try:
        for spec in specs:
            err_console.print(f"[dim]loading {spec.id} ({spec.format}, {spec.path})[/dim]")
            engine = Engine(spec, where["threads"], where["device"], config.runtime_options(), config.queue_size,
                            on_depth=depth, on_done=metrics.engine_done, env=config.engine_env())
            engines[spec.id] = engine
            engine.start(config.load_timeout)
        check_styles(thresholds, engines)
        service = Service(config, engines, routes, thresholds, metrics)
        app = build_app(service)
        uv_config = uvicorn.Config(app, log_level=config.log_level, timeout_graceful_shutdown=config.drain_timeout,
                                   access_log=config.log_level in ("info", "debug"), lifespan="on")
        server = _Server(uv_config, service)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(f"edgemed serve: listening on http://{shown}:{port}/v1 (models: {', '.join(engines)}"
              f"{'; aliases: ' + ', '.join(routes.aliases) if routes.aliases else ''})", flush=True)
        server.run(sockets=[sock])
        if not server.started:
            raise EdgemedError("the HTTP server did not start; see the lines above")
    finally:
        for engine in engines.values():
            engine.stop()
        sock.close()
    print("edgemed serve: drained and stopped", file=sys.stderr, flush=True)
    return 0


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server with edgemed's signals: SIGTERM/SIGINT drain and exit 0 (uvicorn would re-raise them
        after shutdown, and edgemed's CLI turns a re-raised SIGTERM into exit 143), SIGHUP reloads the routes."""

        def __init__(self, config, service):
            super().__init__(config)
            self.service = service

        @contextlib.contextmanager
        def capture_signals(self):
            handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
            previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        def _on_signal(self, signum, frame):
            if signum == signal.SIGHUP:
                loop = self.service.loop
                if loop is not None:
                    loop.call_soon_threadsafe(self._reload)
                return
            self.service.draining = True  # /ready says so at once; new requests get 503
            self.handle_exit(signum, frame)

        def _reload(self):
            from edgemed.console import err_console

            try:
                routes = self.service.reload()
                err_console.print(f"routes reloaded from {routes.source}: {routes.describe()['aliases']}",
                                  markup=False, highlight=False)
            except EdgemedError as exc:
                err_console.print(f"routes NOT reloaded, the old ones keep serving: {exc}", style="yellow",
                                  markup=False, highlight=False)

    return Server


def _Server(config, service):  # noqa: N802 - a factory: uvicorn is imported only when serving
    return _server_class()(config, service)
