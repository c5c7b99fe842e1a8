"""The reconciler: finish the jobs that arq dropped without telling anyone.

arq fires no hook when it gives up on a job at pickup (tries used up by
crashes or shutdowns, job key expired, function not registered). Such a job's
arq keys are gone while its record still says queued, running or retrying.
Every worker runs this loop; a short Redis lock lets one of them work at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection

from redis.asyncio import Redis

from jobs.engine import arq_adapter as arq
from jobs.engine import keys
from jobs.engine.records import JobRecord, JobState, now_ms
from jobs.engine.runner import fail_job
from jobs.engine.scheduler import Scheduler
from jobs.engine.store import JobStore

BATCH = 500
# How often the dead-letter index is swept of entries whose record has expired.
DEAD_LETTER_SWEEP_S = 3600.0
# A job of a kind no worker runs fails after waiting this many reconciler intervals.
UNKNOWN_KIND_PASSES = 10
# How often the running count is swept of places no run holds any more.
RUNNING_SWEEP_S = 60.0
log = logging.getLogger("jobs.reconciler")


def orphan_error(record: JobRecord, known_kinds: Collection[str]) -> dict[str, object]:
    """Why arq dropped this job, as best the record tells."""
    if record.kind not in known_kinds:
        return {
            "type": "unknown_kind",
            "message": f"no worker runs jobs of kind {record.kind!r}",
            "retryable": False,
        }
    if record.attempt >= record.max_attempts:
        return {
            "type": "attempts_exhausted",
            "message": (
                f"all {record.max_attempts} attempts were used up by runs that never finished "
                "(worker crashes or shutdowns)"
            ),
            "retryable": False,
        }
    return {
        "type": "job_lost",
        "message": "the queue no longer holds this job (it expired or was removed)",
        "retryable": False,
    }


async def _orphans(redis: Redis, ids: list[str]) -> list[str]:
    # arq deletes its job only after the record holds the outcome; an unfinished record
    # without an arq job was dropped, even if a claim key outlives it.
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.exists(arq.job_keys(job_id).job)
        present = await pipe.execute()
    return [job_id for job_id, n in zip(ids, present, strict=True) if n == 0]


async def fail_unknown_kinds(store: JobStore, known_kinds: Collection[str], grace_ms: int) -> int:
    """Fail the jobs of kinds no worker runs that have waited longer than `grace_ms` (long
    enough for a deploy that brings a new kind to reach every worker)."""
    finished = 0
    cutoff = now_ms() - grace_ms
    for raw in await store.redis.smembers(keys.KINDS):
        kind = raw.decode()
        if kind in known_kinds:
            continue
        for member in await store.redis.zrangebyscore(keys.waiting(kind), "-inf", cutoff):
            record = await store.get(member.decode())
            if record is None or record.state.finished or record.created_at > cutoff:
                continue
            error = orphan_error(record, known_kinds)
            finished += await fail_job(store, None, record, error, None, waiting_only=True)
    return finished


async def reconcile_once(store: JobStore, known_kinds: Collection[str]) -> int:
    """One pass over the unfinished jobs; returns how many it finished."""
    redis = store.redis
    finished = 0
    batch: list[str] = []
    async for member, _ in redis.zscan_iter(keys.ACTIVE, count=BATCH):
        batch.append(member.decode())
        if len(batch) >= BATCH:
            finished += await _reconcile_batch(store, known_kinds, batch)
            batch = []
    if batch:
        finished += await _reconcile_batch(store, known_kinds, batch)
    return finished


async def _reconcile_batch(store: JobStore, known_kinds: Collection[str], ids: list[str]) -> int:
    finished = 0
    for job_id in await _orphans(store.redis, ids):
        record = await store.get(job_id)
        if record is None:
            # The record expired: only its index entry is left.
            await store.redis.zrem(keys.ACTIVE, job_id)
        elif record.state.finished:
            continue
        elif record.cancel_requested_at:
            # arq aborted it before it started: the client's cancel, not a failure.
            finished += await store.finish(record, JobState.CANCELLED, orphan_only=True)
        else:
            error = orphan_error(record, known_kinds)
            kind = store.registry.kind(record.kind)
            finished += await fail_job(store, kind, record, error, None, orphan_only=True)
    return finished


async def keep_reconciling(
    store: JobStore, scheduler: Scheduler, worker_id: str, interval_s: float
) -> None:
    """Run `reconcile_once` every interval when this worker wins the lock, and put back the
    scheduler's lost claims; errors are logged.

    The lock only spreads the work: two passes at once are safe, since a job is
    failed only if it is still unfinished and absent from arq at that instant.
    """
    known_kinds = set(scheduler.kinds)
    lock_ms = max(100, int(interval_s * 900))
    next_sweep = next_running_sweep = 0.0
    while True:
        try:
            if await store.redis.set(keys.RECONCILER_LOCK, worker_id, nx=True, px=lock_ms):
                count = await reconcile_once(store, known_kinds)
                count += await fail_unknown_kinds(
                    store, known_kinds, int(interval_s * UNKNOWN_KIND_PASSES * 1000)
                )
                if count:
                    log.warning("reconciler failed %d job(s) that arq had dropped", count)
                requeued = await scheduler.requeue_stale()
                if requeued:
                    log.warning("%d claimed job(s) never started; they are queued again", requeued)
                if time.monotonic() >= next_running_sweep:
                    next_running_sweep = time.monotonic() + RUNNING_SWEEP_S
                    await scheduler.sweep_running()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + DEAD_LETTER_SWEEP_S
                    await store.forget_expired_dead_letters()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reconciler pass failed; will try again")
        await asyncio.sleep(interval_s)
