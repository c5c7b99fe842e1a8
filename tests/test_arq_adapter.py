"""The arq adapter (jobs/engine/arq_adapter.py): claims in one round trip per poll, outcomes
recorded by the engine (arq's finish skipped), wake-ups instead of a fixed poll, and the
shapes of arq it relies on."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import arq.cli
import arq.worker
from redis.asyncio import Redis

from jobs.engine import keys
from jobs.engine.arq_adapter import (
    ABORT_KEY,
    LongrunWorker,
    build_worker,
    connect,
    job_keys,
    job_payload,
    use_longrun_worker,
)
from jobs.engine.lifecycle import worker_settings
from jobs.engine.records import JobState
from jobs.engine.scheduler import Scheduler
from jobs.engine.scripts import CLAIM
from jobs.engine.store import JobStore
from jobs.settings import Settings
from tests.conftest import eventually, running_worker
from tests.support.kinds import TEST_REGISTRY


@asynccontextmanager
async def idle_worker(settings: Settings, concurrency: int) -> AsyncIterator[LongrunWorker]:
    """A worker whose poll loop is not running: the test drives its claims itself."""
    settings = settings.model_copy(update={"worker_concurrency": concurrency})
    pool = await connect(settings)
    worker = build_worker(
        worker_settings(settings, TEST_REGISTRY), redis_pool=pool, handle_signals=False
    )
    worker.ctx["settings"] = settings
    worker.ctx["scheduler"] = Scheduler(pool, settings, list(TEST_REGISTRY.kinds))
    try:
        yield worker
    finally:
        await pool.aclose()


def stop_started(worker: LongrunWorker) -> set[str]:
    """The ids the worker started; their tasks are cancelled before they run (no await
    between the claim returning and this), so only the claim touched Redis."""
    started = set(worker.tasks)
    for task in worker.tasks.values():
        task.cancel()
    return started


async def queued(store: JobStore, n: int, **create: Any) -> list[str]:
    return [
        (
            await store.create(kind="test.sleepy", account="acme", args={"seconds": 0.1}, **create)
        ).job_id
        for _ in range(n)
    ]


async def calls(redis: Redis, command: str) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_a_burst_of_due_jobs_is_claimed_in_one_round_trip(settings, redis, store):
    ids = await queued(store, 30)
    await redis.script_load(CLAIM.source)  # cached, as after a worker's first claim
    async with idle_worker(settings, concurrency=50) as worker:
        before_eval, before_watch = await calls(redis, "evalsha"), await calls(redis, "watch")
        await worker._claim()
        started = stop_started(worker)
        assert started == set(ids)
        # one claim script for all 30 (arq: 30 x WATCH, EXISTS, ZSCORE, MULTI/EXEC)
        assert await calls(redis, "evalsha") - before_eval == 1
        assert await calls(redis, "watch") == before_watch
        assert await redis.zcard(keys.fair_claimed("test.sleepy")) == 30
        assert await redis.zcard(keys.fair_queue("test.sleepy")) == 0


async def test_only_free_slots_are_claimed_and_the_rest_stay_queued(settings, store, redis):
    await queued(store, 12)
    async with idle_worker(settings, concurrency=5) as worker:
        await worker._claim()
        assert worker.sem._value == 5 + 1 - 5  # arq's semaphore has max_jobs + 1 slots
        assert len(stop_started(worker)) == 5 and worker.job_counter == 5
        assert worker._backlog  # every slot found a job: a job ending wakes the next poll
        assert await redis.zcard(keys.fair_queue("test.sleepy")) == 7


async def test_jobs_not_yet_due_are_skipped_and_their_slots_kept(settings, store, redis):
    due = set(await queued(store, 2))
    later = await queued(store, 2, delay_s=3600)
    async with idle_worker(settings, concurrency=10) as worker:
        await worker._claim()
        assert worker.sem._value == 10 + 1 - 2
        assert stop_started(worker) == due
        assert worker.job_counter == 2 and not worker._backlog
    assert await redis.zcard(keys.fair_queue("test.sleepy")) == len(later)


async def test_two_workers_claiming_at_once_split_the_jobs(settings, store):
    ids = await queued(store, 40)
    async with idle_worker(settings, 40) as one, idle_worker(settings, 40) as two:
        await asyncio.gather(one._claim(), two._claim())
        first, second = stop_started(one), stop_started(two)
        assert not first & second
        assert first | second == set(ids)
        assert one.job_counter + two.job_counter == 40


def test_arq_still_has_the_shape_the_adapter_relies_on():
    # LongrunWorker starts and ends jobs exactly as arq 0.28's worker does.
    worker = arq.worker.Worker
    assert list(inspect.signature(worker.run_job).parameters) == ["self", "job_id", "score"]
    assert list(inspect.signature(worker.finish_job).parameters) == [
        "self", "job_id", "finish", "result_data", "result_timeout_s", "keep_result_forever",
        "incr_score", "keep_in_progress",
    ]  # fmt: skip
    for name in ("_poll_iteration", "_cancel_aborted_jobs", "heart_beat"):
        assert inspect.iscoroutinefunction(getattr(worker, name)), name
    assert callable(worker._release_sem_dec_counter_on_complete)
    # The keys and the payload the engine writes for arq.
    assert job_keys("j").job == arq.worker.job_key_prefix + "j"
    assert job_keys("j").in_progress == arq.worker.in_progress_key_prefix + "j"
    assert job_keys("j").retry == arq.worker.retry_key_prefix + "j"
    assert arq.worker.abort_jobs_ss == ABORT_KEY
    function, args, kwargs, job_try, enqueued = arq.worker.deserialize_job_raw(
        job_payload("export", "job_x", 123).encode(),
        deserializer=lambda raw: __import__("json").loads(raw),
    )
    assert (function, list(args), kwargs, job_try, enqueued) == ("export", ["job_x"], {}, None, 123)
    # The arq CLI builds its worker through `create_worker`, which reads this name.
    assert "Worker(" in inspect.getsource(arq.worker.create_worker)
    assert arq.cli.run_worker is arq.worker.run_worker


def test_the_arq_cli_builds_the_engine_s_worker(monkeypatch):
    monkeypatch.setenv("ENVIRONMENT", "development")  # the settings are read from the env
    original = arq.worker.Worker
    try:
        use_longrun_worker()
        from tests.support.worker import WorkerSettings

        built = arq.worker.create_worker(WorkerSettings, handle_signals=False)
        assert isinstance(built, LongrunWorker)
    finally:
        arq.worker.Worker = original  # type: ignore[misc]


async def test_a_backlog_drains_without_waiting_for_the_poll_delay(settings, store):
    # 150 jobs, 5 slots: each poll fills the slots and leaves due jobs behind, so the jobs
    # wake the next poll as they end; a timed poll would find the next 5 only 10 s later.
    settings = settings.model_copy(
        update={"worker_concurrency": 5, "worker_poll_delay_seconds": 10.0}
    )
    ids = await queued(store, 150)

    async def all_done() -> bool:
        records = [await store.get(job_id) for job_id in ids]
        return all(r is not None and r.state == JobState.SUCCEEDED for r in records)

    async with running_worker(settings):
        await eventually(all_done, timeout=8)


async def test_a_succeeded_job_ends_arq_s_job_in_its_final_record(settings, redis, store, caplog):
    job_id = (await store.create(kind="test.sleepy", account="acme", args={"seconds": 0})).job_id
    caplog.set_level("INFO")
    async with running_worker(settings) as worker:
        await eventually(lambda: _succeeded(store, job_id))
        await eventually(lambda: _no_task(worker))
    arq_keys = job_keys(job_id)
    for key in (arq_keys.job, arq_keys.retry):
        assert not await redis.exists(key)
    assert await redis.zscore(settings.queue_name, job_id) is None
    assert any(r.getMessage() == "job succeeded" for r in caplog.records)


async def test_arq_s_own_finish_is_skipped(settings, redis, store):
    # The record's final step already ended arq's job: arq's finish_job would be one more
    # MULTI/EXEC round trip, and on a retry it would move the job's due time again.
    job_id = (await queued(store, 1))[0]
    async with idle_worker(settings, concurrency=5) as worker:
        before = await calls(redis, "exec")
        await worker.finish_job(job_id, True, None, 0, False, None, None)
        await worker.finish_job(job_id, False, None, 0, False, 5000, None)
        assert await calls(redis, "exec") == before
    assert await redis.exists(job_keys(job_id).job)


async def test_a_retried_job_stays_with_arq_due_at_its_next_attempt(settings, redis, store):
    job = await store.create(
        kind="test.flaky", account="acme", args={"fail_times": 1, "retry_after": 30}
    )
    async with running_worker(settings):

        async def retrying() -> bool:
            record = await store.get(job.job_id)
            return record is not None and record.state == JobState.RETRYING

        await eventually(retrying)
    due = await redis.zscore(settings.queue_name, job.job_id)
    assert due is not None and due > time.time() * 1000 + 25_000  # at its retry-after
    assert await redis.exists(job_keys(job.job_id).job)
    assert await redis.zcard(keys.fair_queue("test.flaky")) == 1  # waiting for its turn


async def _succeeded(store: JobStore, job_id: str) -> bool:
    record = await store.get(job_id)
    return record is not None and record.state == JobState.SUCCEEDED


async def _no_task(worker: LongrunWorker) -> bool:
    return not any(not t.done() for t in worker.tasks.values())


async def test_idle_worker_starts_a_new_job_long_before_its_next_poll(settings, redis):
    slow_poll = settings.model_copy(update={"worker_poll_delay_seconds": 5.0})
    store = JobStore(redis, slow_poll, TEST_REGISTRY)
    async with running_worker(slow_poll) as worker:
        # Online, and past its first look at the queue: waiting for its next poll.
        await eventually(lambda: redis.zcard(keys.WORKERS), timeout=20)
        await eventually(lambda: _waiting(worker), timeout=20)
        for _ in range(3):
            clock = time.monotonic()
            job_id = (await store.create(kind="test.flaky", account="acme", args={})).job_id
            await eventually(lambda job_id=job_id: _succeeded(store, job_id), interval=0.01)
            # Well under the 5 s poll (no timing is asserted beyond that).
            assert time.monotonic() - clock < 2.5


async def _waiting(worker: LongrunWorker) -> bool:
    wake = worker.ctx.get("wake")
    return wake is not None and not wake.is_set() and worker.job_counter == 0
