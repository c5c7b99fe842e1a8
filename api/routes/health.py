"""Liveness, readiness (Redis and S3) and queue health."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import RedisDep, SettingsDep, StorageDep
from api.problems import problem
from jobs.engine.health import queue_health
from jobs.engine.retry import as_service_error
from jobs.errors import TransientError

router = APIRouter(prefix="/health", tags=["health"])
CHECK_TIMEOUT_S = 3.0
log = logging.getLogger("api.health")


def failure_class(exc: BaseException) -> str:
    """What a failed check answers, for anyone to read: a short class, never the error's
    message, which names hosts, ports and buckets (that goes to the log)."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(as_service_error(exc), TransientError):
        return "unavailable"  # no connection, or an answer worth trying again
    return "refused"  # it answered, and said no: credentials, permissions, a missing bucket


@router.get("/live")
async def live() -> dict[str, str]:
    """200 while the process runs."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "a dependency is down"}})
async def ready(redis: RedisDep, storage: StorageDep) -> JSONResponse:
    """200 when Redis and S3 answer; else a 503 problem naming what is down, each check
    `ok`, `timeout` (no answer within 3 s), `unavailable` or `refused`."""

    async def check(name: str, probe: asyncio.Future | object) -> tuple[str, str]:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                await probe  # type: ignore[misc]
            return name, "ok"
        except Exception as exc:
            log.warning("readiness: %s is down: %s: %s", name, type(exc).__name__, exc)
            return name, failure_class(exc)

    results = dict(await asyncio.gather(check("redis", redis.ping()), check("s3", storage.check())))
    down = [name for name, status in results.items() if status != "ok"]
    if down:
        return problem(
            503,
            "not_ready",
            "Not ready",
            f"down: {', '.join(down)}",
            headers={"Retry-After": "5"},
            checks=results,
        )
    return JSONResponse({"status": "ok", "checks": results})


@router.get("/queues")
async def queues(redis: RedisDep, settings: SettingsDep) -> dict[str, object]:
    """Work in the queue (due now, waiting for a retry, running), dead letters, workers online."""
    return (await queue_health(redis, settings)).as_dict()
