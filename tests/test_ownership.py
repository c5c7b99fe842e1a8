"""Who owns a run: the start, finish, reap and beat scripts' ownership checks.

A job runs on one live worker at a time. Another worker that is handed the same job while
its owner beats is told it is busy; a worker declared dead learns so at its next beat,
and neither its outcome nor the reaper of its jobs may touch a run its successor holds.
"""

from __future__ import annotations

import time

from jobs.engine import keys
from jobs.engine.leases import reap_once
from jobs.engine.records import Busy, JobState
from jobs.engine.store import JobStore

KIND = "test.sleepy"


async def _job(store: JobStore) -> str:
    return (await store.create(kind=KIND, account="acme", args={})).job_id


async def _silent(store: JobStore, worker: str) -> None:
    """The worker's last beat is a minute old: its lease has lapsed."""
    await store.redis.zadd(keys.WORKERS, {worker: time.time() - 60})


async def test_a_job_running_on_a_live_worker_is_busy_for_another(settings, store):
    job_id = await _job(store)
    await store.beat("w-1")
    await store.beat("w-2")
    await store.mark_started(job_id, KIND, "w-1")
    answer = await store.mark_started(job_id, KIND, "w-2")
    assert isinstance(answer, Busy) and answer.owner == "w-1"
    record = await store.get(job_id)
    assert record.worker == "w-1" and record.attempt == 1


async def test_a_job_whose_owner_stopped_beating_is_started_by_another(settings, store):
    job_id = await _job(store)
    await store.beat("w-1")
    await store.mark_started(job_id, KIND, "w-1")
    await _silent(store, "w-1")
    await store.beat("w-2")
    taken = await store.mark_started(job_id, KIND, "w-2")
    assert taken.state == JobState.RUNNING and taken.worker == "w-2" and taken.attempt == 2


async def test_a_dead_owner_can_neither_finish_nor_have_its_successors_run_reaped(settings, store):
    job_id = await _job(store)
    await store.beat("w-1")
    first = await store.mark_started(job_id, KIND, "w-1")
    await _silent(store, "w-1")
    await store.beat("w-2")
    await store.mark_started(job_id, KIND, "w-2")
    # The stalled owner comes back with an outcome: refused, the run is w-2's.
    assert not await store.finish(first, JobState.SUCCEEDED, owner="w-1", result={"late": 1})
    # Its reaper releases what w-1 held: not the run w-2 holds now.
    released = await store.reap_worker("w-1", crash_cap=3)
    assert released == {job_id: "skipped"}
    record = await store.get(job_id)
    assert record.state == JobState.RUNNING and record.worker == "w-2" and record.attempt == 2
    assert record.result is None


async def test_a_worker_declared_dead_learns_it_at_its_next_beat(settings, store):
    await store.beat("w-1")
    await _silent(store, "w-1")
    await store.reap_worker("w-1", crash_cap=3)
    assert not await store.beat("w-1")
    assert await store.beat("w-2")


async def test_a_dead_workers_half_published_events_go_back_to_the_outbox(settings, store):
    await store.beat("w-1")
    await _silent(store, "w-1")
    await store.redis.rpush(keys.outbox_processing("w-1"), "job_half_published")
    await reap_once(store, settings.worker_lease_seconds, crash_cap=3)
    assert await store.redis.lrange(keys.OUTBOX, 0, -1) == [b"job_half_published"]
    assert not await store.redis.exists(keys.outbox_processing("w-1"))
