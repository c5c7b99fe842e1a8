"""The reaper after a Redis outage: the outage silenced every worker's heartbeat, so right
after it every live worker looks dead; a worker that lost Redis itself reaps nobody for
a lease, and then reaps the truly dead."""

from __future__ import annotations

import asyncio
import contextlib
import time

from jobs.clients import create_redis
from jobs.engine import keys
from jobs.engine.leases import DEAD_AFTER, RedisHealth, keep_beating, keep_reaping
from jobs.engine.store import JobStore
from tests.conftest import eventually, make_settings
from tests.support.kinds import TEST_REGISTRY
from tests.support.services import RedisServer

LEASE_S = 2.0


def test_health_counts_errors_and_slow_calls_and_holds_the_reaper_for_a_lease():
    now = [100.0]
    health = RedisHealth(LEASE_S, clock=lambda: now[0])
    assert health.may_reap()
    health.took(now[0] - health.slow_s / 2)  # a quick call: no failure
    assert health.may_reap()
    health.took(now[0] - health.slow_s - 0.01)  # stuck in retries: Redis was away
    assert not health.may_reap()
    now[0] += LEASE_S - 0.01
    assert not health.may_reap()
    now[0] += 0.02
    assert health.may_reap()
    health.failed()
    assert not health.may_reap()


async def test_a_worker_that_lost_redis_reaps_no_live_worker_after_the_outage():
    server = RedisServer(appendonly=True).start()
    settings = make_settings(
        server.url, "http://127.0.0.1:9", redis_retry_seconds=0.2, worker_lease_seconds=LEASE_S
    )
    redis = create_redis(settings)
    store = JobStore(redis, settings, TEST_REGISTRY)
    health = RedisHealth(LEASE_S)
    loops: list[asyncio.Task[None]] = []
    try:
        assert await store.beat("alive") and await store.beat("gone")
        loops = [
            asyncio.create_task(
                keep_beating(store, lambda: "reaper", list, LEASE_S, lambda: None, health)
            ),
            asyncio.create_task(keep_reaping(store, LEASE_S, 3, health)),
        ]
        await eventually(lambda: redis.zscore(keys.WORKERS, "reaper"))
        # An outage longer than a lease's DEAD_AFTER: every beat (ours too) fails meanwhile.
        assert server.proc is not None
        server.proc.kill()
        server.proc.wait(10)
        cut = time.monotonic()
        await eventually(lambda: _true(health.last_failure is not None), timeout=10)
        await eventually(
            lambda: _true(time.monotonic() - cut > LEASE_S * DEAD_AFTER + 0.2), timeout=10
        )
        server.start()  # same port, same AOF
        back = time.time()
        # Our own beat goes through again, then a few reaper passes while "alive" is
        # still silent (its loop sleeps): each sees it past DEAD_AFTER.
        await eventually(lambda: _beat_since(redis, "reaper", back), timeout=10)
        await asyncio.sleep(LEASE_S / 2)  # "alive" beats late: the scenario, not a wait
        assert await store.beat("alive"), "a live worker was reaped after a Redis outage"
        assert not await redis.exists(keys.fence("alive"))
        # And the reaper still reaps: "gone" never beats again.
        await eventually(lambda: redis.exists(keys.fence("gone")), timeout=LEASE_S * 4)
    finally:
        for loop in loops:
            loop.cancel()
        for loop in loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        await redis.aclose()
        server.stop()


async def _true(value: bool) -> bool:
    return value


async def _beat_since(redis, worker: str, since: float) -> bool:
    score = await redis.zscore(keys.WORKERS, worker)
    return score is not None and score >= since
