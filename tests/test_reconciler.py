"""Jobs arq drops without a hook still end `failed` with a dead letter."""

from __future__ import annotations

import pytest

from jobs.records import JobStore
from tests.conftest import ADMIN, eventually, running_worker
from tests.support.processes import kill, start_worker


async def dead_letter(client, job_id):
    async def check():
        answer = await client.get(f"/v1/dead-letters/{job_id}", headers=ADMIN)
        return answer.json() if answer.status_code == 200 else None

    return await eventually(check, timeout=60)


async def test_job_given_up_by_arq_at_pickup_is_failed_by_the_reconciler(settings, redis, client):
    store = JobStore(redis, settings)
    job_id = (await store.create(kind="test.flaky", account="acme", args={})).job_id
    # What earlier crashed runs leave behind: arq's try counter at the limit, our record
    # still saying the job runs.
    await redis.set(f"arq:retry:{job_id}", settings.job_max_tries)
    record = await store.mark_started(job_id, "test.flaky", settings.job_max_tries, "crashed-w")
    assert record.state == "running"

    async with running_worker(settings):
        dead = await dead_letter(client, job_id)
    assert dead["error"]["type"] == "attempts_exhausted"
    assert dead["error"]["retryable"] is False
    job = await store.get(job_id)
    assert job.state == "failed" and job.finished_at is not None
    assert await redis.exists(f"arq:job:{job_id}") == 0


async def test_job_of_a_kind_no_worker_runs_is_failed_by_the_reconciler(settings, redis, client):
    store = JobStore(redis, settings)
    job_id = (await store.create(kind="test.retired", account="acme", args={"x": 1})).job_id
    async with running_worker(settings):
        dead = await dead_letter(client, job_id)
    assert dead["error"]["type"] == "unknown_kind"
    assert dead["arguments"] == {"x": 1}


async def test_reconciler_leaves_live_jobs_alone(settings, redis, client):
    store = JobStore(redis, settings)
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


@pytest.mark.slow
async def test_worker_killed_until_arq_gives_up_ends_failed_with_dead_letter(
    settings, redis, client, tmp_path
):
    fast = settings.model_copy(update={"job_timeout_seconds": 1.0, "job_max_tries": 2})
    store = JobStore(redis, fast)
    job_id = (await store.create(kind="test.sleepy", account="acme", args={"seconds": 60})).job_id
    for attempt in (1, 2):
        proc = start_worker(fast, tmp_path / f"worker{attempt}.log")
        try:
            await eventually(lambda: redis.llen(f"test:started:{job_id}"), timeout=60, interval=0.1)
            await eventually(
                lambda n=attempt: _started_n(redis, job_id, n), timeout=60, interval=0.1
            )
        finally:
            kill(proc)
    # The third pickup finds the tries used up: arq drops the job without any hook.
    proc = start_worker(fast, tmp_path / "worker3.log")
    try:
        dead = await dead_letter(client, job_id)
    finally:
        kill(proc)
    assert dead["error"]["type"] == "attempts_exhausted"
    assert [a["attempt"] for a in dead["attempts"]] == [1, 2]


async def _started_n(redis, job_id, n):
    return await redis.llen(f"test:started:{job_id}") >= n
