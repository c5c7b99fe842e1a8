"""An enqueue wakes an idle worker at once, instead of at its next poll (jobs/wakeup.py)."""

from __future__ import annotations

import asyncio
import time

import arq.worker

from jobs.records import JobState, JobStore
from jobs.wakeup import wakeable_poll
from tests.conftest import eventually, running_worker


async def test_idle_worker_starts_a_new_job_long_before_its_next_poll(settings, redis):
    slow_poll = settings.model_copy(update={"worker_poll_delay_seconds": 5.0})
    store = JobStore(redis, slow_poll)
    async with running_worker(slow_poll):
        # Online, and past its first look at the queue: asleep until its next poll.
        await eventually(lambda: redis.zcard("lr:workers"), timeout=20)
        await asyncio.sleep(0.5)
        assert arq.worker.poll is wakeable_poll  # arq still loops over it
        for _ in range(3):
            clock = time.monotonic()
            job_id = (await store.create(kind="test.flaky", account="acme", args={})).job_id

            async def done(job_id: str = job_id) -> bool:
                record = await store.get(job_id)
                return record is not None and record.state == JobState.SUCCEEDED

            await eventually(done, timeout=10, interval=0.01)
            # Well under the 5 s poll (no timing is asserted beyond that).
            assert time.monotonic() - clock < 2.5
