"""The arq worker: `arq jobs.worker.WorkerSettings` starts it.

`worker_options` turns our settings and job kinds into arq's Worker arguments:
JSON (never pickle) for jobs, no arq results (the job record holds the
outcome), clients made in `on_startup` and closed in `on_shutdown`, and the
worker's own background loops (heartbeat, reconciler). Hooks never raise: an
exception in an arq hook would kill the worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

import httpx
from arq.connections import RedisSettings
from prometheus_client import start_http_server

from jobs.alerts import Alerter
from jobs.analysis import ANALYSIS, create_claude_client
from jobs.canary import CANARY
from jobs.claims import install as install_batched_claims
from jobs.clients import (
    REDIS_RETRY_ON,
    freeze_startup_heap,
    json_dumps,
    json_loads,
    redis_retry,
)
from jobs.deps import WorkerDeps
from jobs.exports import EXPORT, abort_stale_uploads
from jobs.health import refresh_queue_gauges
from jobs.leases import keep_beating, keep_reaping
from jobs.logs import configure_logging
from jobs.reconciler import keep_reconciling
from jobs.records import WORKERS_KEY, JobStore
from jobs.runner import JobKind, arq_function
from jobs.settings import Settings, load_settings
from jobs.storage import Storage, open_storage
from jobs.views import JobPresenter
from jobs.wakeup import install as install_wakeable_poll
from jobs.wakeup import keep_listening, wake_this_worker
from jobs.webhooks import WebhookStore, deliver_function, keep_publishing, requeue_outbox

log = logging.getLogger("jobs.worker")

DOMAIN_KINDS: tuple[JobKind, ...] = (ANALYSIS, EXPORT, CANARY)

Hook = Callable[[dict[str, Any]], Awaitable[None]]


def new_worker_id() -> str:
    """A worker id that names its host and process."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


def _startup(settings: Settings, kinds: Sequence[JobKind]) -> Hook:
    async def on_startup(ctx: dict[str, Any]) -> None:
        configure_logging(settings.log_level)
        stack = AsyncExitStack()
        try:
            storage = await stack.enter_async_context(open_storage(settings))
            worker_id = new_worker_id()
            claude = create_claude_client(settings)
            if claude is not None:
                stack.push_async_callback(claude.close)
            http = httpx.AsyncClient(
                timeout=settings.webhook_timeout_seconds,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            )
            stack.push_async_callback(http.aclose)
            deps = WorkerDeps(
                settings=settings,
                redis=ctx["redis"],
                store=JobStore(ctx["redis"], settings),
                storage=storage,
                worker_id=worker_id,
                anthropic=claude,
                claude_slots=asyncio.Semaphore(settings.analysis_concurrency),
                http=http,
                webhooks=WebhookStore(ctx["redis"], settings),
                presenter=JobPresenter(storage, settings),
                alerter=Alerter(ctx["redis"], http, settings),
            )
            if settings.worker_metrics_port:
                try:
                    server, _ = start_http_server(
                        settings.worker_metrics_port, addr=settings.worker_metrics_host
                    )
                    stack.callback(server.shutdown)
                except OSError as exc:
                    # A second worker on the host with the same port: it still runs jobs.
                    log.error(
                        "metrics port %s:%s unavailable (%s); this worker runs without "
                        "metrics: give each worker its own WORKER_METRICS_PORT",
                        settings.worker_metrics_host, settings.worker_metrics_port, exc,
                    )  # fmt: skip
            await deps.store.beat(worker_id, settings.claim_ttl_ms)
            # An enqueue wakes this worker at once instead of at its next poll (jobs/wakeup.py).
            install_wakeable_poll()
            install_batched_claims()
            wake = wake_this_worker()
            tasks = [
                asyncio.create_task(keep_listening(ctx["redis"], settings.queue_name, wake)),
                asyncio.create_task(warm_up_storage(storage)),
                asyncio.create_task(
                    keep_beating(
                        deps.store,
                        lambda: deps.worker_id,
                        settings.worker_lease_seconds,
                        settings.claim_ttl_ms,
                        lambda: deps.fence(new_worker_id()),
                    )
                ),
                asyncio.create_task(keep_publishing(deps)),
                asyncio.create_task(
                    every(5, "queue gauges", lambda: refresh_queue_gauges(deps.redis, settings))
                ),
                asyncio.create_task(
                    every(
                        settings.reconcile_interval_seconds * 6,
                        "stale export uploads",
                        lambda: abort_stale_uploads(deps.storage, deps.store),
                    )
                ),
                asyncio.create_task(
                    keep_reaping(
                        deps.store, settings.worker_lease_seconds, settings.worker_max_crashes
                    )
                ),
                asyncio.create_task(
                    keep_reconciling(
                        deps.store,
                        {k.name for k in kinds},
                        worker_id,
                        settings.reconcile_interval_seconds,
                    )
                ),
            ]
        except BaseException:
            # Nothing can run without the clients: stop now, loudly, rather than fail every job.
            log.critical("worker could not start", exc_info=True)
            await stack.aclose()
            raise
        ctx.update(deps=deps, exit_stack=stack, background=tasks)
        freeze_startup_heap()
        log.info("worker %s started", worker_id, extra={"kinds": [k.name for k in kinds]})

    return on_startup


async def on_shutdown(ctx: dict[str, Any]) -> None:
    """Stop the background loops, leave the worker registry and close the clients; never raises."""
    try:
        for task in ctx.get("background", []):
            task.cancel()
        await asyncio.gather(*ctx.get("background", []), return_exceptions=True)
        deps: WorkerDeps | None = ctx.get("deps")
        if deps is not None:
            # The publisher may have stopped half-way through an event: give it back.
            await requeue_outbox(deps.redis, deps.worker_id)
            await deps.redis.zrem(WORKERS_KEY, deps.worker_id)
        stack: AsyncExitStack | None = ctx.get("exit_stack")
        if stack is not None:
            await stack.aclose()
    except Exception:
        log.exception("worker shutdown hook failed")


async def warm_up_storage(storage: Storage) -> None:
    """One S3 call right after start, so the first jobs do not pay for the S3 client's lazy
    set-up (its HTTP session and TLS context, endpoint rules, parsers): tens of ms of CPU
    on the event loop, which would stall every job running then. Best effort: S3 may be
    down, and the jobs that need it retry."""
    try:
        await asyncio.wait_for(storage.check(), 10)
    except Exception:
        log.debug("S3 warm-up call failed", exc_info=True)


async def every(interval_s: float, what: str, step: Callable[[], Awaitable[object]]) -> None:
    """Run `step` every `interval_s` until cancelled; a failed step is logged, not fatal."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("%s: pass failed; will try again", what, exc_info=True)
        await asyncio.sleep(interval_s)


def worker_options(settings: Settings, kinds: Sequence[JobKind]) -> dict[str, Any]:
    """arq Worker arguments for these settings and job kinds."""
    return {
        "functions": [arq_function(kind) for kind in kinds] + [deliver_function()],
        "redis_settings": replace(
            RedisSettings.from_dsn(settings.redis_url),
            retry=redis_retry(settings),
            retry_on_error=list(REDIS_RETRY_ON),
        ),
        "queue_name": settings.queue_name,
        "on_startup": _startup(settings, kinds),
        "on_shutdown": on_shutdown,
        "job_serializer": json_dumps,
        "job_deserializer": json_loads,
        "max_jobs": settings.worker_concurrency,
        # Running jobs stay at the head of arq's queue: a poll reads past them to the jobs
        # it can start (claimed in one round trip each poll, jobs/claims.py).
        "queue_read_limit": max(100, 2 * settings.worker_concurrency),
        "job_timeout": settings.job_timeout_seconds,
        # On SIGTERM: stop taking jobs, let running ones finish for this long, then hand
        # the rest back (the runner undoes their try).
        "job_completion_wait": settings.worker_drain_seconds,
        "max_tries": settings.job_max_tries,
        # The record holds every outcome; an arq result would only block the job id.
        "keep_result": 0,
        "poll_delay": settings.worker_poll_delay_seconds,
        "allow_abort_jobs": True,
        "expires_extra_ms": settings.job_retention_seconds * 1000,
        "health_check_interval": 60,
    }


def settings_class(settings: Settings, kinds: Sequence[JobKind]) -> type:
    """A flat WorkerSettings class (arq ignores inherited attributes)."""
    return type("WorkerSettings", (), worker_options(settings, kinds))


def __getattr__(name: str) -> Any:
    # `arq jobs.worker.WorkerSettings` reads the settings here, so importing this
    # module (tests, tools) does not need a valid environment.
    if name == "WorkerSettings":
        return settings_class(load_settings(), DOMAIN_KINDS)
    raise AttributeError(name)
