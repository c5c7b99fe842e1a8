"""Worker heartbeats: each worker announces itself every few seconds with a short TTL.

`workers_online` counts the heartbeats younger than `WORKER_LEASE_SECONDS`, so
a dead worker drops out within one lease, not after arq's hourly health key.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis

from jobs.records import PREFIX

WORKERS_KEY = f"{PREFIX}workers"
log = logging.getLogger("jobs.heartbeats")


async def beat(redis: Redis, worker_id: str) -> None:
    """Record that this worker is alive now."""
    await redis.zadd(WORKERS_KEY, {worker_id: time.time()})


async def leave(redis: Redis, worker_id: str) -> None:
    """Remove this worker at a clean shutdown."""
    await redis.zrem(WORKERS_KEY, worker_id)


async def workers_online(redis: Redis, lease_s: float) -> int:
    """How many workers beat within the last lease; prunes long-dead entries."""
    now = time.time()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zremrangebyscore(WORKERS_KEY, "-inf", now - 3600)
        pipe.zcount(WORKERS_KEY, now - lease_s, "+inf")
        _, count = await pipe.execute()
    return int(count)


async def keep_beating(redis: Redis, worker_id: str, lease_s: float) -> None:
    """Beat every third of a lease until cancelled; a Redis outage is logged, not fatal."""
    while True:
        try:
            await beat(redis, worker_id)
        except Exception:
            log.warning("heartbeat failed; retrying", exc_info=True)
        await asyncio.sleep(max(0.2, lease_s / 3))
