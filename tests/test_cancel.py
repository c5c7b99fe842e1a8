"""Cancellation and time limits with a real worker."""

from __future__ import annotations

import json
import time
from datetime import datetime

from jobs.engine.store import JobStore
from tests.conftest import ACME, GLOBEX, eventually, running_worker
from tests.support.kinds import TEST_REGISTRY

PROBLEM = "application/problem+json"


async def create(settings, redis, kind="test.sleepy", **args) -> str:
    return (
        await JobStore(redis, settings, TEST_REGISTRY).create(kind=kind, account="acme", args=args)
    ).job_id


async def state_of(client, job_id, headers=ACME) -> dict:
    return (await client.get(f"/v1/jobs/{job_id}", headers=headers)).json()


async def test_cancelled_queued_job_never_runs(settings, redis, client):
    job_id = await create(settings, redis, seconds=0.1)
    answer = await client.post(f"/v1/jobs/{job_id}/cancel", headers=ACME)
    assert answer.status_code == 202 and answer.json()["state"] == "cancelled"
    assert answer.headers["Location"] == f"/v1/jobs/{job_id}"
    async with running_worker(settings):
        canary = await create(settings, redis, "test.flaky")  # proves the worker ran meanwhile

        async def canary_done():
            return (await state_of(client, canary))["state"] == "succeeded"

        await eventually(canary_done)
    assert await redis.llen(f"test:started:{job_id}") == 0
    job = await state_of(client, job_id)
    assert job["state"] == "cancelled" and job["attempt"] == 0 and job["finished_at"]
    assert await redis.exists(f"arq:job:{job_id}") == 0
    assert await redis.zscore("arq:queue", job_id) is None


async def test_cancelled_running_job_stops_within_a_second_after_its_cleanup(
    settings, redis, client, worker
):
    job_id = await create(settings, redis, seconds=30)
    await eventually(lambda: redis.llen(f"test:started:{job_id}"))
    asked_at = time.time()
    answer = await client.post(f"/v1/jobs/{job_id}/cancel", headers=ACME)
    assert answer.status_code == 202
    assert answer.json()["state"] == "running" and answer.json()["cancel_requested_at"]

    async def cancelled():
        job = await state_of(client, job_id)
        return job if job["state"] == "cancelled" else None

    job = await eventually(cancelled, timeout=5, interval=0.02)
    cleanup = [json.loads(m) for m in await redis.lrange(f"test:cleanup:{job_id}", 0, -1)]
    assert len(cleanup) == 1 and cleanup[0]["soft"] is False
    # Its cleanup ran, and its record says cancelled, within a second of the request.
    assert cleanup[0]["at"] - asked_at < 1.0
    finished_at = datetime.fromisoformat(job["finished_at"].replace("Z", "+00:00")).timestamp()
    assert finished_at - asked_at < 1.0, finished_at - asked_at
    assert job["attempts"][-1]["outcome"] == "cancelled"
    assert await redis.exists(f"arq:job:{job_id}") == 0
    assert await redis.zscore("arq:abort", job_id) is None  # arq's abort marker is cleared
    again = await client.post(f"/v1/jobs/{job_id}/cancel", headers=ACME)
    assert again.status_code == 409 and again.json()["state"] == "cancelled"


async def test_cancelling_a_finished_job_is_409(settings, redis, client, worker):
    job_id = await create(settings, redis, "test.flaky")

    async def done():
        return (await state_of(client, job_id))["state"] == "succeeded"

    await eventually(done)
    answer = await client.post(f"/v1/jobs/{job_id}/cancel", headers=ACME)
    assert answer.status_code == 409 and answer.headers["content-type"] == PROBLEM


async def test_another_account_cannot_cancel_a_job(settings, redis, client):
    job_id = await create(settings, redis, seconds=1)
    answer = await client.post(f"/v1/jobs/{job_id}/cancel", headers=GLOBEX)
    assert answer.status_code == 404
    assert (await state_of(client, job_id))["state"] == "queued"


async def test_job_past_its_soft_limit_cleans_up_before_the_hard_limit(settings, redis, client):
    limited = settings.model_copy(
        update={"job_timeout_seconds": 2.0, "job_cleanup_seconds": 0.5, "job_max_tries": 1}
    )
    async with running_worker(limited):
        job_id = await create(limited, redis, seconds=30)

        async def failed():
            job = await state_of(client, job_id)
            return job if job["state"] == "failed" else None

        job = await eventually(failed, timeout=15)
    started = [json.loads(m) for m in await redis.lrange(f"test:started:{job_id}", 0, -1)]
    cleanup = [json.loads(m) for m in await redis.lrange(f"test:cleanup:{job_id}", 0, -1)]
    assert len(cleanup) == 1 and cleanup[0]["soft"] is True
    elapsed = cleanup[0]["at"] - started[0]["at"]
    assert 1.4 <= elapsed < 2.0  # told at the soft limit (1.5 s), before the hard one (2 s)
    assert job["error"]["type"] == "job_timeout" and job["error"]["retryable"] is True
