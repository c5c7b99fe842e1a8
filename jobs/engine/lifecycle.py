"""A worker's life: the clients it makes at start, the loops it runs, what it closes.

`worker_settings` turns the settings and the registry into arq's Worker arguments (what
`arq jobs.worker.WorkerSettings` starts). `on_startup` makes the clients once (S3, HTTP,
and each domain's resources), registers the worker, and starts its loops: the wake-up
listener, heartbeat, reaper, reconciler, outbox publisher, queue gauges and the domains'
own loops. Hooks never raise: an exception in an arq hook would kill the worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import httpx
from prometheus_client import start_http_server

from jobs import tracing
from jobs.clients import freeze_startup_heap
from jobs.engine import arq_adapter
from jobs.engine.alerts import Alerter
from jobs.engine.context import WorkerDeps
from jobs.engine.health import refresh_queue_gauges
from jobs.engine.leases import RedisHealth, keep_beating, keep_reaping
from jobs.engine.outbox import keep_publishing, requeue_outbox
from jobs.engine.presenter import JobPresenter
from jobs.engine.reconciler import keep_reconciling
from jobs.engine.registry import Registry
from jobs.engine.runner import entry_for
from jobs.engine.scheduler import Scheduler
from jobs.engine.store import JobStore
from jobs.engine.wakeup import keep_listening
from jobs.logs import configure_logging
from jobs.settings import Settings
from jobs.storage import Storage, open_storage

log = logging.getLogger("jobs.engine.worker")

Hook = Callable[[dict[str, Any]], Awaitable[None]]


def new_worker_id() -> str:
    """A worker id that names its host and process."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


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


async def warm_up_storage(storage: Storage) -> None:
    """One S3 call right after start, so the first jobs do not pay for the S3 client's lazy
    set-up (its HTTP session and TLS context, endpoint rules, parsers): tens of ms of CPU
    on the event loop, which would stall every job running then. Best effort: S3 may be
    down, and the jobs that need it retry."""
    try:
        await asyncio.wait_for(storage.check(), 10)
    except Exception:
        log.debug("S3 warm-up call failed", exc_info=True)


def _serve_metrics(settings: Settings, stack: AsyncExitStack) -> None:
    try:
        server, _ = start_http_server(
            settings.worker_metrics_port, addr=settings.worker_metrics_host
        )
        stack.callback(server.shutdown)
    except OSError as exc:
        # A second worker on the host with the same port: it still runs jobs.
        log.error(
            "metrics port %s:%s unavailable (%s); this worker runs without metrics: give each "
            "worker its own WORKER_METRICS_PORT",
            settings.worker_metrics_host, settings.worker_metrics_port, exc,
        )  # fmt: skip


def _loops(deps: WorkerDeps, wake: asyncio.Event) -> list[asyncio.Task[Any]]:
    settings, store = deps.settings, deps.store
    # The heartbeat's and the reaper's Redis failures, shared: no reaping right after one.
    health = RedisHealth(settings.worker_lease_seconds)
    loops = [
        keep_listening(deps.redis, settings.queue_name, wake),
        warm_up_storage(deps.storage),
        keep_beating(
            store,
            lambda: deps.worker_id,
            lambda: list(deps.running),
            settings.worker_lease_seconds,
            lambda: deps.fence(new_worker_id()),
            health,
        ),
        keep_publishing(deps),
        every(5, "queue gauges", lambda: refresh_queue_gauges(deps.redis, settings)),
        keep_reaping(store, settings.worker_lease_seconds, settings.worker_max_crashes, health),
        keep_reconciling(
            store,
            Scheduler(deps.redis, settings, list(deps.registry.kinds)),
            deps.worker_id,
            settings.reconcile_interval_seconds,
        ),
        *(
            every(chore.interval_s(settings), chore.name, partial(chore.step, deps))
            for chore in deps.registry.chores
        ),
    ]
    return [asyncio.create_task(loop) for loop in loops]


def make_startup(settings: Settings, registry: Registry) -> Hook:
    """arq's `on_startup`: make the clients and start the worker's loops."""

    async def on_startup(ctx: dict[str, Any]) -> None:
        configure_logging(settings.log_level)
        stack = AsyncExitStack()
        try:
            tracing.configure_tracing("longrun-worker")
            storage = await stack.enter_async_context(open_storage(settings))
            http = httpx.AsyncClient(
                timeout=settings.webhook_timeout_seconds,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            )
            stack.push_async_callback(http.aclose)
            resources = {
                kind: await stack.enter_async_context(opener(settings, ctx["redis"]))
                for kind, opener in registry.resources
            }
            deps = WorkerDeps(
                settings=settings,
                redis=ctx["redis"],
                store=JobStore(ctx["redis"], settings, registry),
                storage=storage,
                worker_id=new_worker_id(),
                registry=registry,
                presenter=JobPresenter(storage, settings, registry),
                http=http,
                alerter=Alerter(ctx["redis"], http, settings),
                resources=resources,
            )
            if settings.worker_metrics_port:
                _serve_metrics(settings, stack)
            await deps.store.beat(deps.worker_id)
            scheduler = Scheduler(ctx["redis"], settings, list(registry.kinds))
            await scheduler.publish_limits()
            wake = asyncio.Event()
            tasks = _loops(deps, wake)
        except BaseException:
            # Nothing can run without the clients: stop now, loudly, rather than fail every job.
            log.critical("worker could not start", exc_info=True)
            await stack.aclose()
            raise
        ctx.update(
            deps=deps,
            settings=settings,
            scheduler=scheduler,
            wake=wake,
            exit_stack=stack,
            background=tasks,
        )
        freeze_startup_heap()
        log.info("worker %s started", deps.worker_id, extra={"kinds": sorted(registry.kinds)})

    return on_startup


async def stop_loops(loops: list[asyncio.Task[Any]], rounds: int = 10) -> None:
    """Cancel the worker's loops and wait for them to end. A loop can survive its cancel
    (seen on a loaded machine: the reconciler went on after shutdown's one cancel; on
    Python 3.11 a cancel arriving as a Redis call's `asyncio.timeout` expires can surface
    as a TimeoutError, which the loop logs and survives), so a loop still running a second
    after its cancel is cancelled again, a bounded number of times."""
    pending = {task for task in loops if not task.done()}
    for _ in range(rounds):
        if not pending:
            return
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
    if pending:
        log.error("worker loops did not stop: %s", sorted(t.get_name() for t in pending))


async def on_shutdown(ctx: dict[str, Any]) -> None:
    """Stop the loops, leave the worker registry and close the clients; never raises."""
    try:
        await stop_loops(ctx.get("background", []))
        deps: WorkerDeps | None = ctx.get("deps")
        if deps is not None:
            # The publisher may have stopped half-way through an event: give it back.
            await requeue_outbox(deps.redis, deps.worker_id)
            # Leave the registry, handing back any job whose run never got to record it.
            await deps.store.reap_worker(deps.worker_id, 0, crashed=False)
        stack: AsyncExitStack | None = ctx.get("exit_stack")
        if stack is not None:
            await stack.aclose()
        await asyncio.to_thread(tracing.flush)
    except Exception:
        log.exception("worker shutdown hook failed")


def worker_settings(settings: Settings, registry: Registry) -> dict[str, Any]:
    """arq Worker arguments for these settings and the registry's job kinds."""
    return arq_adapter.worker_arguments(
        settings,
        sorted(registry.kinds),
        lambda name: entry_for(registry[name]),
        make_startup(settings, registry),
        on_shutdown,
    )
