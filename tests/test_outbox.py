"""The outbox: a finished job's news reaches every listener, also when publishing it fails."""

from __future__ import annotations

from typing import Any

from jobs.engine import keys
from jobs.engine.registry import Domain, Registry
from jobs.engine.store import JobStore
from tests.conftest import eventually, running_worker
from tests.support.kinds import BROKEN_FLAG, TEST_REGISTRY


async def test_an_event_whose_publishing_fails_half_way_is_published_again(settings, redis):
    heard: list[str] = []

    async def listener(deps: Any, record: Any, kind: Any) -> None:
        heard.append(record.id)
        if len(heard) == 1:
            raise RuntimeError("the listener failed half-way")

    registry = Registry([*TEST_REGISTRY.domains, Domain("listening", listeners=[listener])])
    await redis.set(BROKEN_FLAG, 1)  # the job fails for good: a dead letter, on the outbox
    store = JobStore(redis, settings, registry)
    job_id = (await store.create(kind="test.broken", account="acme", args={})).job_id

    async def heard_twice() -> bool:
        return heard.count(job_id) >= 2

    async with running_worker(settings, registry):
        await eventually(heard_twice, timeout=30)
    assert heard == [job_id, job_id]
    assert await redis.llen(keys.OUTBOX) == 0
