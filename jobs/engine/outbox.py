"""The outbox: what happens after a job ends, done once, even if a worker dies meanwhile.

A job that ends with something to tell (a kind with webhook events, or a dead letter) is
pushed on the outbox in the same Redis step that records its outcome. A publisher loop
in every worker moves one id at a time to a list of its own, tells the domains'
listeners (the webhooks domain turns it into deliveries) and the failure alerter, then
drops it. A worker that dies half-way leaves the id in its own list; the reaper puts it
back, and listeners are idempotent (deterministic delivery ids), so nothing is lost and
nothing is sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis

from jobs import tracing
from jobs.engine import keys
from jobs.engine.context import WorkerDeps
from jobs.engine.records import JobState

log = logging.getLogger("jobs.engine.outbox")


async def publish_one(deps: WorkerDeps, job_id: str) -> None:
    """Tell every listener, and the alerter for a dead letter, that this job ended."""
    record = await deps.store.get(job_id)
    if record is None:
        return
    kind = deps.store.policy(record.kind)
    # Under the job's trace: what the listeners enqueue (webhook deliveries) carries it on.
    with tracing.job_span(record, "publish", tracing.PRODUCER):
        for listener in deps.registry.listeners:
            await listener(deps, record, kind)
        if record.state == JobState.FAILED and kind.dead_letters and deps.alerter is not None:
            await deps.alerter.dead_letter(record)


async def keep_publishing(deps: WorkerDeps) -> None:
    """Drain the outbox until cancelled; a failed pass puts the event back and tries again."""
    redis: Redis = deps.redis
    while True:
        processing = keys.outbox_processing(deps.worker_id)
        try:
            member = await redis.blmove(keys.OUTBOX, processing, 1, "LEFT", "RIGHT")
            if member is None:
                continue
            await publish_one(deps, member.decode())
            await redis.lrem(processing, 1, member)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("outbox publisher failed; the event goes back to the outbox")
            with contextlib.suppress(Exception):
                await requeue_outbox(redis, deps.worker_id)
            await asyncio.sleep(1)


async def requeue_outbox(redis: Redis, worker: str) -> None:
    """Give a worker's half-published events back to the outbox (a dead worker's, or this
    one's after a failure or at shutdown)."""
    while await redis.lmove(keys.outbox_processing(worker), keys.OUTBOX, "RIGHT", "LEFT"):
        pass
