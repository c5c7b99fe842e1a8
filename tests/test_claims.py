"""Batched claims (jobs/claims.py): one round trip claims as many due jobs as there are free
slots, with arq's own test, so no job is claimed twice and none is lost; and a succeeded job
ends arq's job in its final record, without arq's own finish round trip."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace

import arq.worker
from arq.connections import create_pool
from arq.worker import Worker
from redis.asyncio import Redis

from jobs.claims import install, start_jobs_batched
from jobs.records import JobStore
from jobs.settings import Settings
from jobs.worker import worker_options
from tests.conftest import eventually, running_worker
from tests.support.kinds import TEST_KINDS

IN_PROGRESS = "arq:in-progress:"


@asynccontextmanager
async def idle_worker(settings: Settings, concurrency: int) -> AsyncIterator[Worker]:
    """An arq Worker with our options whose poll loop is not running: the test drives
    `start_jobs` itself."""
    settings = settings.model_copy(update={"worker_concurrency": concurrency})
    pool = await create_pool(worker_options(settings, TEST_KINDS)["redis_settings"])
    worker = Worker(**worker_options(settings, TEST_KINDS), redis_pool=pool, handle_signals=False)
    install()
    try:
        yield worker
    finally:
        await pool.aclose()


def stop_started(worker: Worker) -> set[str]:
    """The ids the worker started; their tasks are cancelled before they run (no await
    between `start_jobs` returning and this), so only the claim touched Redis."""
    started = set(worker.tasks)
    for task in worker.tasks.values():
        task.cancel()
    return started


async def queued(redis: Redis, store: JobStore, n: int) -> list[bytes]:
    for _ in range(n):
        await store.create(kind="test.sleepy", account="acme", args={"seconds": 0.1})
    return await redis.zrange(store.settings.queue_name, 0, -1)


async def calls(redis: Redis, command: str) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_a_burst_of_due_jobs_is_claimed_in_one_round_trip(settings, redis):
    store = JobStore(redis, settings)
    ids = await queued(redis, store, 30)
    async with idle_worker(settings, concurrency=50) as worker:
        assert arq.worker.Worker.start_jobs is start_jobs_batched
        await worker.start_jobs([b"job_not_queued"])  # loads the script (NOSCRIPT, LOAD)
        assert worker.job_counter == 0 and not worker.tasks
        before_eval, before_watch = await calls(redis, "evalsha"), await calls(redis, "watch")
        await worker.start_jobs(ids)
        started = stop_started(worker)
        assert started == {i.decode() for i in ids}
        # one claim script for all 30 (arq: 30 x WATCH, EXISTS, ZSCORE, MULTI/EXEC)
        assert await calls(redis, "evalsha") - before_eval == 1
        assert await calls(redis, "watch") == before_watch
        for job_id in ids:
            ttl = await redis.pttl(IN_PROGRESS + job_id.decode())
            assert 0 < ttl <= int(worker.in_progress_timeout_s * 1000)


async def test_only_free_slots_are_claimed_and_the_rest_stay_queued(settings, redis):
    store = JobStore(redis, settings)
    ids = await queued(redis, store, 12)
    async with idle_worker(settings, concurrency=5) as worker:
        task = asyncio.create_task(worker.start_jobs(ids))
        # arq waits for a slot to free when the worker is full; so do we
        started = await _settled(worker, 5)
        assert len(started) == 5 and worker.job_counter == 5
        unclaimed = [i for i in ids if i.decode() not in started]
        assert not any([await redis.exists(IN_PROGRESS + i.decode()) for i in unclaimed])
        task.cancel()
        stop_started(worker)


async def _settled(worker: Worker, n: int) -> set[str]:
    for _ in range(200):
        if len(worker.tasks) >= n:
            break
        await asyncio.sleep(0)
    return set(worker.tasks)


async def test_jobs_running_elsewhere_or_not_yet_due_are_skipped_and_their_slots_kept(
    settings, redis
):
    store = JobStore(redis, settings)
    ids = await queued(redis, store, 4)
    elsewhere, later, free = ids[0].decode(), ids[1].decode(), {i.decode() for i in ids[2:]}
    await redis.set(IN_PROGRESS + elsewhere, b"1", px=60_000)
    await redis.zadd(settings.queue_name, {later: 32_503_680_000_000})  # year 3000
    async with idle_worker(settings, concurrency=10) as worker:
        await worker.start_jobs(ids)
        assert stop_started(worker) == free
        assert worker.job_counter == 2
        assert worker.sem._value == 10 + 1 - 2  # arq's semaphore has max_jobs + 1 slots
        assert not await redis.exists(IN_PROGRESS + later)


async def test_two_workers_claiming_the_same_jobs_at_once_split_them(settings, redis):
    store = JobStore(redis, settings)
    ids = await queued(redis, store, 40)
    async with idle_worker(settings, 40) as one, idle_worker(settings, 40) as two:
        await asyncio.gather(one.start_jobs(ids), two.start_jobs(list(reversed(ids))))
        first, second = stop_started(one), stop_started(two)
        assert not first & second
        assert first | second == {i.decode() for i in ids}
        assert one.job_counter + two.job_counter == 40


def test_arq_still_has_the_shape_the_claim_relies_on():
    # start_jobs_batched starts each job exactly as arq 0.28's start_jobs does.
    assert list(inspect.signature(Worker.run_job).parameters) == ["self", "job_id", "score"]
    assert callable(Worker._release_sem_dec_counter_on_complete)
    assert arq.worker.in_progress_key_prefix == IN_PROGRESS


async def test_a_backlog_drains_without_waiting_for_the_poll_delay(settings, redis):
    # 150 jobs, 5 slots: each poll fills the slots and leaves due jobs behind, so the jobs
    # wake the next poll as they end; arq would find the next 5 at its next timed poll,
    # 10 s later.
    settings = settings.model_copy(
        update={"worker_concurrency": 5, "worker_poll_delay_seconds": 10.0}
    )
    store = JobStore(redis, settings)
    ids = [i.decode() for i in await queued(redis, store, 150)]

    async def all_done() -> bool:
        records = [await store.get(job_id) for job_id in ids]
        return all(r is not None and r.state.value == "succeeded" for r in records)

    async with running_worker(settings):
        await eventually(all_done, timeout=8)


async def test_a_succeeded_job_ends_arq_s_job_in_its_final_record(settings, redis, caplog):
    store = JobStore(redis, settings)
    job_id = (await store.create(kind="test.sleepy", account="acme", args={"seconds": 0})).job_id
    caplog.set_level("INFO")
    async with running_worker(settings) as worker:
        await eventually(lambda: _succeeded(store, job_id))
        await eventually(lambda: _no_task(worker))
        assert not worker.ctx["deps"].arq_finished  # arq's finish_job took the mark off
    for key in ("arq:job:", IN_PROGRESS, "arq:retry:"):
        assert not await redis.exists(key + job_id)
    assert await redis.zscore(settings.queue_name, job_id) is None
    arq_lines = [r.getMessage() for r in caplog.records if r.name == "arq.worker"]
    assert any("→" in line and job_id in line for line in arq_lines)
    # arq's own success line repeats our `job succeeded`, and is dropped
    assert not any("←" in line for line in arq_lines)
    assert any(r.getMessage() == "job succeeded" for r in caplog.records)


async def _succeeded(store: JobStore, job_id: str) -> bool:
    record = await store.get(job_id)
    return record is not None and record.state.value == "succeeded"


async def _no_task(worker: Worker) -> bool:
    return not any(not t.done() for t in worker.tasks.values())


async def test_arq_s_finish_is_skipped_only_for_a_job_the_record_finished(settings, redis):
    async with idle_worker(settings, concurrency=5) as worker:
        worker.ctx["deps"] = SimpleNamespace(arq_finished={"job_recorded"})
        before = await calls(redis, "exec")
        await worker.finish_job("job_recorded", True, None, 0, False, None, None)
        assert await calls(redis, "exec") == before  # no MULTI/EXEC round trip
        assert not worker.ctx["deps"].arq_finished
        await worker.finish_job("job_other", True, None, 0, False, None, None)
        assert await calls(redis, "exec") == before + 1
