"""The HTTP routes (FastAPI): OpenAI's /v1/models, /v1/chat/completions, /v1/completions; /v1/mcq; /health,
/ready, /metrics; /admin/reload. Every error, the framework's own included (404, 405), in OpenAI's error shape."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from edgemed.errors import EdgemedError
from edgemed.serve.errors import APIError, error_body
from edgemed.serve.metrics import NO_MODEL
from edgemed.serve.service import Service


def build_app(service: Service) -> FastAPI:
    """The FastAPI app of `service`: its lifespan (engines attached to the running loop; stopped at shutdown), the
    error handlers, the OpenAI routes and the operational ones."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        service.loop = loop
        for engine in service.engines.values():
            engine.attach(loop)
            service.metrics.depth.labels(engine.spec.id).set(0)
        yield
        service.draining = True
        await asyncio.gather(*(asyncio.to_thread(e.stop) for e in service.engines.values()))

    app = FastAPI(title="edgemed serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    add_error_handlers(app, service)
    add_openai_routes(app, service)
    add_operations_routes(app, service)
    return app


def add_error_handlers(app: FastAPI, service: Service) -> None:
    """Every error the framework raises itself (unknown route 404, method 405, validation) and any bug (500), in
    OpenAI's error shape, counted; the server goes on."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = {404: f"no route {request.url.path}; see GET /v1/models, POST /v1/chat/completions, "
                        "/v1/completions, /v1/mcq", 405: f"{request.method} is not allowed on {request.url.path}"}
        service.metrics.answered("other", NO_MODEL, exc.status_code)
        return JSONResponse(error_body(exc.status_code, message.get(exc.status_code, str(exc.detail))),
                            status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(400, str(exc)), status_code=400)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:  # a bug: answered, and the server goes on
        service.metrics.answered("other", NO_MODEL, 500)
        return JSONResponse(error_body(500, f"internal error: {type(exc).__name__}: {exc}"), status_code=500)


def guarded(service: Service, endpoint: str):
    """Run a handler that may raise APIError; answer it in OpenAI's shape."""
    def wrap(fn):
        async def handler(request: Request) -> Response:
            try:
                return await fn(request)
            except APIError as exc:
                service.metrics.answered(endpoint, NO_MODEL, exc.status)
                return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
        handler.__name__ = fn.__name__
        return handler
    return wrap


def add_openai_routes(app: FastAPI, service: Service) -> None:
    """GET /v1/models[/ID], POST /v1/chat/completions, /v1/completions and /v1/mcq."""

    @app.get("/v1/models")
    @guarded(service, "models")
    async def models(request: Request) -> Response:
        service.authorize(request)
        return JSONResponse(service.models())

    @app.get("/v1/models/{model_id:path}")
    async def model(request: Request, model_id: str) -> Response:
        try:
            service.authorize(request)
        except APIError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        for entry in service.models()["data"]:
            if entry["id"] == model_id:
                return JSONResponse(entry)
        return JSONResponse(error_body(404, f"The model '{model_id}' does not exist", "model", "model_not_found"),
                            status_code=404)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await service.complete(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await service.complete(request, "completion")

    @app.post("/v1/mcq")
    async def mcq(request: Request) -> Response:
        return await service.mcq(request)


def add_operations_routes(app: FastAPI, service: Service) -> None:
    """GET /health, /ready, /metrics; POST /admin/reload."""

    @app.get("/health")
    async def health() -> Response:
        code, body = service.health()
        return JSONResponse(body, status_code=code)

    @app.get("/ready")
    async def ready() -> Response:
        code, body = service.ready()
        return JSONResponse(body, status_code=code)

    @app.get("/metrics")
    @guarded(service, "metrics")
    async def metrics(request: Request) -> Response:
        service.authorize(request)
        for engine in service.engines.values():
            service.metrics.depth.labels(engine.spec.id).set(engine.depth)
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload")
    @guarded(service, "admin")
    async def reload(request: Request) -> Response:
        service.authorize(request)
        try:
            routes = service.reload()
        except EdgemedError as exc:
            raise APIError(400, f"reload refused, the old routes keep serving: {exc}", code="reload_failed") from None
        body: dict[str, Any] = {"reloaded": True, **routes.describe()}
        return JSONResponse(body)
