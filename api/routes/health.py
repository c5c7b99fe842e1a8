"""Liveness, readiness (Redis and S3) and queue health."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import RedisDep, SettingsDep, StorageDep
from api.problems import problem
from jobs.engine.health import queue_health
from jobs.engine.retry import as_service_error

router = APIRouter(prefix="/health", tags=["health"])
CHECK_TIMEOUT_S = 3.0


@router.get("/live")
async def live() -> dict[str, str]:
    """200 while the process runs."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "a dependency is down"}})
async def ready(redis: RedisDep, storage: StorageDep) -> JSONResponse:
    """200 when Redis and S3 answer; else a 503 problem naming what is down."""

    async def check(name: str, probe: asyncio.Future | object) -> tuple[str, str]:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                await probe  # type: ignore[misc]
            return name, "ok"
        except TimeoutError:
            return name, f"no answer within {CHECK_TIMEOUT_S:g}s"
        except Exception as exc:
            return name, as_service_error(exc).message

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
