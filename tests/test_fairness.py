"""Accounts share the service fairly: round-robin between accounts, per-account limits
(max_running across workers, max_queued, requests_per_second, webhook endpoints, event
streams), and operators' pause and resume."""

from __future__ import annotations

import json
import time
from contextlib import AsyncExitStack

import httpx
import pytest

from jobs.engine.store import JobStore
from jobs.settings import AccountLimits
from tests.conftest import ACME, ADMIN, GLOBEX, api_client, eventually, running_worker
from tests.support.api_server import ApiServer
from tests.support.kinds import TEST_REGISTRY

PROBLEM = "application/problem+json"


async def marks(redis, what: str, job_id: str) -> list[dict]:
    return [json.loads(m) for m in await redis.lrange(f"test:{what}:{job_id}", 0, -1)]


async def sleepy(store: JobStore, account: str, n: int, seconds: float) -> list[str]:
    return [
        (await store.create(kind="test.sleepy", account=account, args={"seconds": seconds})).job_id
        for _ in range(n)
    ]


async def started_at(redis, ids: list[str]) -> dict[str, float]:
    found = {}
    for job_id in ids:
        runs = await marks(redis, "started", job_id)
        if runs:
            found[job_id] = runs[0]["at"]
    return found


async def _all_started(redis, ids: list[str]) -> bool:
    return len(await started_at(redis, ids)) == len(ids)


async def flood_jumped_by_trickle(settings, redis) -> int:
    """How many of a flooding account's jobs start between a second account's enqueue and
    the start of its last job, with two slots."""
    settings = settings.model_copy(update={"worker_concurrency": 2})
    store = JobStore(redis, settings, TEST_REGISTRY)
    flood = await sleepy(store, "acme", 40, 0.2)
    async with running_worker(settings):
        await eventually(lambda: _some_started(redis, flood, 2))
        enqueued = time.time()
        trickle = await sleepy(store, "globex", 3, 0.05)
        await eventually(lambda: _all_started(redis, trickle), timeout=60)
    last = max((await started_at(redis, trickle)).values())
    return sum(1 for at in (await started_at(redis, flood)).values() if enqueued < at < last)


async def _some_started(redis, ids: list[str], n: int) -> bool:
    return len(await started_at(redis, ids)) >= n


async def test_a_trickle_beside_a_flood_starts_as_slots_free_not_after_the_flood(settings, redis):
    # Round-robin: globex's three jobs alternate with acme's (a few acme jobs in between,
    # those that were already due or claimed), not after acme's 38 waiting ones.
    assert await flood_jumped_by_trickle(settings, redis) <= 6


async def test_without_fair_scheduling_the_trickle_waits_behind_the_flood(settings, redis):
    fifo = settings.model_copy(update={"fair_scheduling": False})
    assert await flood_jumped_by_trickle(fifo, redis) >= 30


async def test_max_running_holds_across_workers_while_other_accounts_go_ahead(settings, redis):
    limited = settings.model_copy(
        update={
            "worker_concurrency": 5,
            "account_limits": {"acme": AccountLimits(max_running=2)},
        }
    )
    store = JobStore(redis, limited, TEST_REGISTRY)
    acme = await sleepy(store, "acme", 8, 0.4)
    globex = await sleepy(store, "globex", 4, 0.4)
    async with running_worker(limited), running_worker(limited):

        async def all_done() -> bool:
            records = await store.get_many(acme + globex)
            return all(r.state == "succeeded" for r in records)

        await eventually(all_done, timeout=60)
    assert await most_at_once(redis, acme) == 2
    assert await most_at_once(redis, globex) >= 3  # not held behind acme's limit


async def most_at_once(redis, ids: list[str]) -> int:
    """The most of these jobs that ran at the same time (from their start and end marks)."""
    edges = []
    for job_id in ids:
        (start,) = await marks(redis, "started", job_id)
        (end,) = await marks(redis, "finished", job_id)
        edges += [(start["at"], 1), (end["at"], -1)]
    running = most = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        running += step
        most = max(most, running)
    return most


async def test_a_full_account_queue_is_a_429_and_nothing_is_created(settings, redis):
    limited = settings.model_copy(update={"account_limits": {"*": AccountLimits(max_queued=2)}})
    async with api_client(limited) as client:
        body = {"user_id": "u", "format": "zip"}
        for _ in range(2):
            assert (await client.post("/v1/exports", headers=ACME, json=body)).status_code == 202
        before = sorted(await redis.keys("*"))
        refused = await client.post(
            "/v1/exports", headers=ACME | {"Idempotency-Key": "k1"}, json=body
        )
        assert refused.status_code == 429 and refused.headers["content-type"] == PROBLEM
        assert refused.json()["type"].endswith("/account-queue-full")
        assert int(refused.headers["Retry-After"]) >= 1
        assert sorted(await redis.keys("*")) == before  # nothing written, the key included
        # Another account is not held by acme's queue.
        assert (await client.post("/v1/exports", headers=GLOBEX, json=body)).status_code == 202
        listed = (await client.get("/v1/jobs", headers=ACME)).json()["data"]
        assert len(listed) == 2
        # Once a job has ended there is room again, for the same key too.
        await client.post(f"/v1/jobs/{listed[0]['id']}/cancel", headers=ACME)
        again = await client.post(
            "/v1/exports", headers=ACME | {"Idempotency-Key": "k1"}, json=body
        )
        assert again.status_code == 202


async def test_requests_above_the_account_s_rate_are_429_across_api_processes(settings, redis):
    limited = settings.model_copy(
        update={"account_limits": {"acme": AccountLimits(requests_per_second=2)}}
    )
    async with AsyncExitStack() as stack:
        one = await stack.enter_async_context(api_client(limited))
        two = await stack.enter_async_context(api_client(limited))
        answers = [await (one if i % 2 else two).get("/v1/jobs", headers=ACME) for i in range(6)]
        first = answers[0]
        assert first.status_code == 200
        assert first.headers["RateLimit-Policy"] == '"default";q=2;w=1'
        assert first.headers["RateLimit"].startswith('"default";r=')
        refused = [a for a in answers if a.status_code == 429]
        assert len(refused) >= 3  # six at once against 2 a second (burst 2), in any process
        for answer in refused:
            assert answer.headers["content-type"] == PROBLEM
            assert answer.json()["type"].endswith("/rate-limited")
            assert int(answer.headers["Retry-After"]) >= 1
            assert answer.headers["RateLimit"].startswith('"default";r=0;')
        # A refused POST creates nothing; another account is not limited by acme's rate.
        before = sorted(await redis.keys("lr:job:*"))
        post = await one.post("/v1/exports", headers=ACME, json={"user_id": "u", "format": "zip"})
        assert post.status_code == 429
        assert sorted(await redis.keys("lr:job:*")) == before
        assert all(
            [(await two.get("/v1/jobs", headers=GLOBEX)).status_code == 200 for _ in range(6)]
        )
        assert "RateLimit" not in (await two.get("/v1/jobs", headers=GLOBEX)).headers


async def test_webhook_endpoints_above_the_account_s_cap_are_409(settings):
    capped = settings.model_copy(
        update={"webhook_max_endpoints_per_account": 2, "webhook_allow_private_networks": True}
    )
    hook = {"url": "http://127.0.0.1:9/hooks", "events": ["export.completed"]}
    async with api_client(capped) as client:
        made = [await client.post("/v1/webhook-endpoints", headers=ACME, json=hook)
                for _ in range(2)]  # fmt: skip
        assert [m.status_code for m in made] == [201, 201]
        third = await client.post("/v1/webhook-endpoints", headers=ACME, json=hook)
        assert third.status_code == 409 and third.json()["type"].endswith("/too-many-endpoints")
        assert len((await client.get("/v1/webhook-endpoints", headers=ACME)).json()["data"]) == 2
        assert (await client.post("/v1/webhook-endpoints", headers=GLOBEX, json=hook)).is_success
        gone = await client.delete(f"/v1/webhook-endpoints/{made[0].json()['id']}", headers=ACME)
        assert gone.status_code == 204
        assert (await client.post("/v1/webhook-endpoints", headers=ACME, json=hook)).is_success


async def test_open_event_streams_above_the_account_s_cap_are_429(settings, redis, tmp_path):
    capped = settings.model_copy(update={"event_streams_per_account": 1})
    store = JobStore(redis, capped, TEST_REGISTRY)
    job_id = (await store.create(kind="test.flaky", account="acme", args={})).job_id
    server = ApiServer(capped, tmp_path / "api.log")
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            path = f"/v1/jobs/{job_id}/events"
            async with http.stream("GET", path, headers=ACME) as first:
                assert first.status_code == 200
                second = await http.get(path, headers=ACME)
                assert second.status_code == 429
                assert second.json()["type"].endswith("/too-many-streams")
                assert int(second.headers["Retry-After"]) >= 1
                other = await http.get(f"/v1/jobs/{job_id}", headers=ACME)
                assert other.status_code == 200  # only streams are capped
                # The job ends: the first stream closes, and its place is free again.
                await store.cancel(await store.get(job_id))
                body = "".join([chunk async for chunk in first.aiter_text()])
                assert '"state":"cancelled"' in body

            async def admitted() -> bool:
                return (await http.get(path, headers=ACME)).status_code == 200

            await eventually(admitted, timeout=10)
    finally:
        server.stop()


async def test_a_paused_account_keeps_its_jobs_queued_until_resumed(settings, redis, client):
    store = JobStore(redis, settings, TEST_REGISTRY)
    paused = await client.post("/v1/queues/accounts/acme/pause", headers=ADMIN)
    assert paused.status_code == 200 and paused.json() == {"kinds": [], "accounts": ["acme"]}
    held = await sleepy(store, "acme", 3, 0)
    free = await sleepy(store, "globex", 3, 0)
    async with running_worker(settings):

        async def ended(ids) -> bool:
            return all(r.state == "succeeded" for r in await store.get_many(ids))

        await eventually(lambda: ended(free))
        assert all(r.state == "queued" for r in await store.get_many(held))
        health = (await client.get("/health/queues")).json()
        assert health["paused"] == {"kinds": [], "accounts": ["acme"]}
        assert health["by_account"][0]["account"] == "acme"
        assert health["by_account"][0]["queued"] == 3
        resumed = await client.post("/v1/queues/accounts/acme/resume", headers=ADMIN)
        assert resumed.json() == {"kinds": [], "accounts": []}
        await eventually(lambda: ended(held))


async def test_a_paused_kind_keeps_its_jobs_queued_and_running_ones_finish(settings, redis, client):
    store = JobStore(redis, settings, TEST_REGISTRY)
    async with running_worker(settings):
        (running,) = await sleepy(store, "acme", 1, 1.0)
        await eventually(lambda: _all_started(redis, [running]))
        assert (await client.post("/v1/queues/kinds/test.sleepy/pause", headers=ADMIN)).is_success
        waiting = await sleepy(store, "acme", 2, 0)
        other = (await store.create(kind="test.flaky", account="acme", args={})).job_id

        async def state(job_id: str, wanted: str) -> bool:
            return (await store.get(job_id)).state == wanted

        await eventually(lambda: state(running, "succeeded"))  # it finished
        await eventually(lambda: state(other, "succeeded"))  # other kinds go on
        assert [r.state for r in await store.get_many(waiting)] == ["queued", "queued"]
        assert (await client.post("/v1/queues/kinds/test.sleepy/resume", headers=ADMIN)).is_success
        for job_id in waiting:
            await eventually(lambda job_id=job_id: state(job_id, "succeeded"))


async def test_queue_controls_are_for_operators_only(client):
    for path in ("/v1/queues/kinds/export/pause", "/v1/queues/accounts/acme/resume"):
        assert (await client.post(path, headers=ACME)).status_code == 403
    bad = await client.post("/v1/queues/accounts/..%2Fx/pause", headers=ADMIN)
    assert bad.status_code in (404, 422)


@pytest.mark.parametrize("account", ["acme", "globex"])
async def test_health_lists_the_busiest_accounts_without_a_series_per_account(
    settings, redis, client, account
):
    store = JobStore(redis, settings, TEST_REGISTRY)
    await sleepy(store, account, 4, 0)
    await sleepy(store, "third", 1, 0)
    health = (await client.get("/health/queues")).json()
    assert [(a["account"], a["queued"], a["running"]) for a in health["by_account"]] == [
        (account, 4, 0),
        ("third", 1, 0),
    ]
    assert health["by_account"][0]["oldest_queued_age_seconds"] >= 0
    metrics = (await client.get("/metrics")).text
    assert f'account="{account}"' not in metrics
