"""Jobs arq drops without a hook still end `failed` with a dead letter."""

from __future__ import annotations

from jobs.engine.arq_adapter import job_keys
from jobs.engine.store import JobStore
from tests.conftest import ADMIN, eventually, running_worker
from tests.support.kinds import TEST_REGISTRY


async def dead_letter(client, job_id):
    async def check():
        answer = await client.get(f"/v1/dead-letters/{job_id}", headers=ADMIN)
        return answer.json() if answer.status_code == 200 else None

    return await eventually(check, timeout=60)


async def test_job_given_up_by_arq_at_pickup_is_failed_by_the_reconciler(settings, redis, client):
    store = JobStore(redis, settings, TEST_REGISTRY)
    job_id = (await store.create(kind="test.flaky", account="acme", args={})).job_id
    # Its payload is gone (expired, or lost with Redis data): arq finds the queue entry,
    # says "job expired", cleans up, and calls no hook.
    await redis.delete(job_keys(job_id).job)

    async with running_worker(settings):
        dead = await dead_letter(client, job_id)
    assert dead["error"]["type"] == "job_lost"
    assert dead["error"]["retryable"] is False
    job = await store.get(job_id)
    assert job.state == "failed" and job.finished_at is not None and job.attempt == 0
    assert await redis.zscore(settings.queue_name, job_id) is None


async def test_job_of_a_kind_no_worker_runs_is_failed_by_the_reconciler(settings, redis, client):
    store = JobStore(redis, settings, TEST_REGISTRY)
    job_id = (await store.create(kind="test.retired", account="acme", args={"x": 1})).job_id
    async with running_worker(settings):
        dead = await dead_letter(client, job_id)
    assert dead["error"]["type"] == "unknown_kind"
    assert dead["arguments"] == {"x": 1}


async def test_reconciler_leaves_live_jobs_alone(settings, redis, client):
    store = JobStore(redis, settings, TEST_REGISTRY)
    async with running_worker(settings):
        job_id = (
            await store.create(kind="test.sleepy", account="acme", args={"seconds": 1.5})
        ).job_id
        job = await eventually(lambda: _succeeded(store, job_id), timeout=30)
    assert job.attempt == 1
    assert await redis.zcard("lr:dlq") == 0


async def _succeeded(store, job_id):
    job = await store.get(job_id)
    return job if job.state == "succeeded" else None


async def test_job_whose_result_cannot_be_stored_fails_instead_of_staying_running(
    settings, redis, client
):
    store = JobStore(redis, settings, TEST_REGISTRY)
    job_id = (await store.create(kind="test.unstorable", account="acme", args={})).job_id
    async with running_worker(settings):
        dead = await dead_letter(client, job_id)
    assert dead["error"]["type"] == "internal_error" and "JSON" in dead["traceback"]
    assert [a["outcome"] for a in dead["attempts"]] == ["failed"]


async def test_running_job_that_arq_dropped_is_failed_while_its_worker_still_beats(
    settings, redis, client
):
    # A run that raised before its outcome was recorded: arq deleted its job, the record
    # says running on a worker that is alive and beating.
    store = JobStore(redis, settings, TEST_REGISTRY)
    job_id = (await store.create(kind="test.sleepy", account="acme", args={})).job_id
    await store.beat("live-w")
    await store.mark_started(job_id, "test.sleepy", "live-w")
    await redis.delete(job_keys(job_id).job)
    await redis.zrem(settings.queue_name, job_id)

    async def failed_while_beating():
        await store.beat("live-w")
        job = await store.get(job_id)
        return job if job.state.finished else None

    async with running_worker(settings):
        job = await eventually(failed_while_beating, timeout=30)
    assert job.state == "failed" and job.error["type"] == "job_lost"
    assert (await dead_letter(client, job_id))["id"] == job_id
    assert not await redis.sismember("lr:worker:live-w:jobs", job_id)
