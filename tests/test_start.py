"""Starting an attempt is one step, even when its command reaches Redis twice.

redis-py sends a command again when the connection drops before the answer arrives (the
retry that rides out a Redis restart). Redis may have run it already: the start script
must recognise the same start (its run token) and not count a second attempt.
"""

from __future__ import annotations

from jobs.clients import create_redis
from jobs.engine import keys
from jobs.engine.records import JobRecord, JobState
from jobs.engine.scripts import START
from jobs.engine.store import JobStore
from tests.conftest import make_settings
from tests.support.kinds import TEST_REGISTRY
from tests.support.proxy import Proxy


async def _attempts(store: JobStore, job_id: str) -> tuple[JobRecord, int]:
    record = await store.get(job_id)
    logged = await store.redis.llen(keys.attempts(job_id))
    return record, logged


async def test_the_same_start_sent_twice_starts_one_attempt(settings, store):
    job_id = (await store.create(kind="test.sleepy", account="acme", args={})).job_id
    await store.beat("w-1")
    first = await store.mark_started(job_id, "test.sleepy", "w-1", run_token="run-1")
    again = await store.mark_started(job_id, "test.sleepy", "w-1", run_token="run-1")
    assert first.state == again.state == JobState.RUNNING
    assert first.attempt == again.attempt == 1
    record, logged = await _attempts(store, job_id)
    assert record.attempt == 1 and logged == 1


async def test_a_new_start_by_the_same_worker_is_a_new_attempt(settings, store):
    job_id = (await store.create(kind="test.sleepy", account="acme", args={})).job_id
    await store.beat("w-1")
    await store.mark_started(job_id, "test.sleepy", "w-1", run_token="run-1")
    second = await store.mark_started(job_id, "test.sleepy", "w-1", run_token="run-2")
    assert second.attempt == 2
    record, logged = await _attempts(store, job_id)
    assert record.attempt == 2 and logged == 2


async def test_a_start_whose_answer_is_lost_is_retried_by_redis_py_without_a_second_attempt(
    settings, store, redis_server
):
    proxy = Proxy(redis_server.port).start()
    through = create_redis(
        make_settings(f"redis://127.0.0.1:{proxy.port}/0", settings.s3_endpoint_url)
    )
    try:
        lossy = JobStore(through, settings, TEST_REGISTRY)
        job_id = (await store.create(kind="test.sleepy", account="acme", args={})).job_id
        await store.beat("w-1")
        # Load the script and open the connection first: the lost answer is the start's.
        await through.script_load(START.source)
        proxy.lose_answers = 1
        started = await lossy.mark_started(job_id, "test.sleepy", "w-1")
        assert proxy.answers_lost == 1, "the start's answer was not lost: the test proves nothing"
        assert started.state == JobState.RUNNING and started.attempt == 1
        record, logged = await _attempts(store, job_id)
        assert record.attempt == 1 and logged == 1
    finally:
        await through.aclose()
        proxy.stop()
