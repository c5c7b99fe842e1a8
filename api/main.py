"""The FastAPI app: `uvicorn api.main:app`."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from ulid import ULID

from api.deps import Services
from api.events import JobEvents
from api.limits import BodyLimit, body_limits
from api.problems import document_problems, install_problem_handlers
from api.routes import (
    analyses,
    analysis_batches,
    canaries,
    dashboard,
    dead_letters,
    documents,
    exports,
    health,
    jobs,
    queues,
    usage,
    webhooks,
)
from api.sessions import end_orphaned_sessions
from api.tracing import request_telemetry
from jobs import metrics, tracing
from jobs.clients import create_redis, freeze_startup_heap
from jobs.documents import Documents
from jobs.domains import REGISTRY
from jobs.engine.health import refresh_queue_gauges
from jobs.engine.limits import AccountLimiter
from jobs.engine.presenter import JobPresenter
from jobs.engine.registry import Registry
from jobs.engine.store import JobStore
from jobs.logs import REQUEST_ID_VAR, configure_logging
from jobs.settings import Settings, load_settings
from jobs.storage import open_storage
from jobs.webhooks import DeliveryLog, EndpointStore

REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class RequestContext:
    """ASGI middleware: the request id (a valid `X-Request-ID` is kept, else one is made),
    set on `request.state`, in the log context and on the answer, and the HTTP metrics.

    Plain ASGI rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware runs
    the app in a task group of its own and streams the answer through memory channels,
    a large share of a small request's CPU.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode(
            "latin-1"
        )
        request_id = given if REQUEST_ID.fullmatch(given) else f"req_{ULID()}"
        scope.setdefault("state", {})["request_id"] = request_id
        tracing.set_attribute("longrun.request_id", request_id)  # on the request's span
        token = REQUEST_ID_VAR.set(request_id)
        clock = time.perf_counter()
        status = 500
        answered_after: float | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered_after
            if message["type"] == "http.response.start":
                status = message["status"]
                # Latency to the answer's start, as before (an event stream runs on after it).
                answered_after = time.perf_counter() - clock
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                limit = scope["state"].get("ratelimit_headers")
                present = {name.lower() for name, _ in headers}
                if limit:
                    headers += [
                        (name.lower().encode(), value.encode())
                        for name, value in limit.items()
                        if name.lower().encode() not in present
                    ]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            metrics.HTTP_REQUESTS.labels(route, method, str(status)).inc()
            metrics.HTTP_LATENCY.labels(route, method).observe(
                time.perf_counter() - clock if answered_after is None else answered_after
            )
            REQUEST_ID_VAR.reset(token)


def create_app(settings: Settings | None = None, registry: Registry = REGISTRY) -> FastAPI:
    """Build the app; settings are read from the environment unless given."""
    settings = settings or load_settings()
    tracing.configure_tracing("longrun-api")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level)
        async with AsyncExitStack() as stack:
            # Last on the way out: the spans of the requests served until then.
            stack.push_async_callback(asyncio.to_thread, tracing.flush)
            redis = create_redis(settings)
            stack.push_async_callback(redis.aclose)
            storage = await stack.enter_async_context(open_storage(settings))
            events = JobEvents(redis)
            store = JobStore(redis, settings, registry)
            endpoints = EndpointStore(redis, settings)
            limiter = AccountLimiter(redis, settings)
            services = Services(
                settings=settings,
                redis=redis,
                store=store,
                storage=storage,
                presenter=JobPresenter(storage, settings, registry),
                endpoints=endpoints,
                deliveries=DeliveryLog(store, endpoints),
                documents=Documents(redis, storage, settings.max_document_bytes),
                events=events,
                limiter=limiter,
            )
            app.state.services = services
            for name in Services.__dataclass_fields__:  # also one by one, for the getters
                setattr(app.state, name, getattr(services, name))
            await events.start()
            stack.push_async_callback(events.close)
            await end_orphaned_sessions(redis, settings)
            freeze_startup_heap()
            yield

    app = FastAPI(
        title="longrun",
        version="0.1.0",
        summary="Long-running operations behind an HTTP API",
        lifespan=lifespan,
        telemetry=request_telemetry(),
    )
    install_problem_handlers(app)
    # Added before the request-id middleware, so it runs inside it: a 413 is counted and logged.
    limit = documents.document_body_limit(settings.max_document_bytes)
    app.add_middleware(BodyLimit, limit_for=body_limits(limit))

    app.add_middleware(RequestContext)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> PlainTextResponse:
        try:
            await refresh_queue_gauges(request.app.state.redis, settings)
        except Exception:
            logging.getLogger("api").warning("queue gauges not refreshed", exc_info=True)
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    routers = (
        health, documents, analyses, analysis_batches, exports, jobs, webhooks, usage,
        dead_letters, canaries, queues,
    )  # fmt: skip
    for module in routers:
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
