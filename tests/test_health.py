"""Liveness, readiness and queue health against real Redis and S3."""

from __future__ import annotations

from jobs.engine.store import JobStore
from tests.conftest import api_client, eventually, make_settings, running_worker
from tests.support.kinds import BROKEN_FLAG, TEST_REGISTRY
from tests.support.services import free_port


async def test_live_and_ready_answer_200_when_redis_and_s3_answer(client):
    assert (await client.get("/health/live")).status_code == 200
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"redis": "ok", "s3": "ok"}


async def test_ready_is_a_503_problem_naming_what_is_down(redis_server):
    dead_port = free_port()
    settings = make_settings(redis_server.url, f"http://127.0.0.1:{dead_port}")
    async with api_client(settings) as client:
        answer = await client.get("/health/ready")
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["checks"]["redis"] == "ok"
    assert body["checks"]["s3"] != "ok" and "s3" in body["detail"]


async def test_queue_health_counts_queued_running_retrying_and_dead(settings, redis, client):
    store = JobStore(redis, settings, TEST_REGISTRY)
    empty = (await client.get("/health/queues")).json()
    assert empty["queued"] == empty["running"] == empty["dead_letters"] == 0
    assert empty["workers_online"] == 0 and empty["healthy"] is True

    await redis.set(BROKEN_FLAG, 1)  # test.broken jobs fail permanently
    for _ in range(3):
        await store.create(kind="test.flaky", account="acme", args={})
    health = (await client.get("/health/queues")).json()
    assert health["queued"] == 3 and health["by_kind"]["test.flaky"]["queued"] == 3
    assert health["oldest_queued_age_seconds"] >= 0
    assert health["healthy"] is False  # work is waiting and no worker is online

    async with running_worker(settings):
        sleepers = [
            (await store.create(kind="test.sleepy", account="acme", args={"seconds": 30})).job_id
            for _ in range(2)
        ]
        broken = (await store.create(kind="test.broken", account="acme", args={})).job_id
        retrying = (
            await store.create(
                kind="test.flaky", account="acme", args={"fail_times": 1, "retry_after": 30}
            )
        ).job_id

        async def settled():
            h = (await client.get("/health/queues")).json()
            return (
                h if h["running"] == 2 and h["dead_letters"] == 1 and h["retrying"] == 1 else None
            )

        health = await eventually(settled)
        assert health["queued"] == 0 and health["workers_online"] == 1
        assert health["by_kind"]["test.sleepy"]["running"] == 2
        assert health["by_kind"]["test.flaky"]["retrying"] == 1
        assert health["healthy"] is True
        assert (await store.get(broken)).state == "failed"
        assert (await store.get(retrying)).state == "retrying"
        assert [(await store.get(s)).state for s in sleepers] == ["running", "running"]

    async def worker_gone():
        h = (await client.get("/health/queues")).json()
        return h["workers_online"] == 0

    await eventually(worker_gone)
