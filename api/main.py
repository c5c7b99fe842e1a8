"""The FastAPI app: `uvicorn api.main:app`."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from ulid import ULID

from api.limits import BodyLimit, body_limits
from api.problems import document_problems, install_problem_handlers
from api.routes import (
    canaries,
    dashboard,
    deadletters,
    documents,
    exports,
    health,
    jobs,
    usage,
    webhooks,
)
from jobs import metrics
from jobs.clients import create_redis
from jobs.documents import Documents
from jobs.health import refresh_queue_gauges
from jobs.logs import REQUEST_ID_VAR, configure_logging
from jobs.records import JobStore
from jobs.settings import Settings, load_settings
from jobs.storage import open_storage
from jobs.views import JobPresenter
from jobs.webhooks import WebhookStore

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; settings are read from the environment unless given."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level)
        async with AsyncExitStack() as stack:
            redis = create_redis(settings)
            stack.push_async_callback(redis.aclose)
            app.state.settings = settings
            app.state.redis = redis
            app.state.store = JobStore(redis, settings)
            app.state.storage = await stack.enter_async_context(open_storage(settings))
            app.state.webhooks = WebhookStore(redis, settings)
            app.state.presenter = JobPresenter(app.state.storage, settings)
            app.state.documents = Documents(redis, app.state.storage, settings.max_document_bytes)
            yield

    app = FastAPI(
        title="longrun",
        version="0.1.0",
        summary="Long-running operations behind an HTTP API",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    # Added before the request-id middleware, so it runs inside it: a 413 is counted and logged.
    limit = documents.document_body_limit(settings.max_document_bytes)
    app.add_middleware(BodyLimit, limit_for=body_limits(limit))

    @app.middleware("http")
    async def request_id(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        given = request.headers.get("x-request-id", "")
        request.state.request_id = given if REQUEST_ID.match(given) else f"req_{ULID()}"
        token = REQUEST_ID_VAR.set(request.state.request_id)
        clock = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            response.headers["X-Request-ID"] = request.state.request_id
            return response
        finally:
            route = getattr(request.scope.get("route"), "path", "unmatched")
            metrics.HTTP_REQUESTS.labels(route, request.method, str(status)).inc()
            metrics.HTTP_LATENCY.labels(route, request.method).observe(time.perf_counter() - clock)
            REQUEST_ID_VAR.reset(token)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> PlainTextResponse:
        try:
            await refresh_queue_gauges(request.app.state.redis, settings)
        except Exception:
            logging.getLogger("api").warning("queue gauges not refreshed", exc_info=True)
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    for module in (health, documents, exports, jobs, webhooks, usage, deadletters, canaries):
        app.include_router(module.router)
    app.include_router(dashboard.router)
    dashboard.install_dashboard(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            ))  # fmt: skip
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn api.main:app` builds the app here, so importing this module needs no environment.
    if name == "app":
        return create_app()
    raise AttributeError(name)
