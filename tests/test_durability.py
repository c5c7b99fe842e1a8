"""Worker durability with real `arq` worker processes: crashes, poison pills, drain, leases."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from unittest.mock import ANY

import pytest
from redis.asyncio import Redis

from jobs.engine.arq_adapter import build_worker, connect
from jobs.engine.lifecycle import worker_settings
from jobs.engine.scheduler import Scheduler
from jobs.engine.store import JobStore
from tests.conftest import ACME, ADMIN, api_client, eventually, make_settings, running_worker
from tests.support.kinds import TEST_REGISTRY
from tests.support.processes import kill, start_worker
from tests.support.proxy import Proxy
from tests.support.receiver import Receiver
from tests.support.services import RedisServer

pytestmark = pytest.mark.slow


async def marks(redis, what: str, job_id: str) -> list[dict]:
    return [json.loads(m) for m in await redis.lrange(f"test:{what}:{job_id}", 0, -1)]


async def create(store: JobStore, kind: str, **args) -> str:
    return (await store.create(kind=kind, account="acme", args=args)).job_id


async def test_kill_9_mid_job_restarts_all_jobs_on_another_worker_within_the_lease(
    settings, redis, tmp_path
):
    # arq alone would wait job_timeout + 10 s = 70 s before another worker could take them.
    settings = settings.model_copy(update={"job_timeout_seconds": 60.0})
    store = JobStore(redis, settings, TEST_REGISTRY)
    doomed = start_worker(settings, tmp_path / "a.log")
    # Long enough to be still running when the second worker is up, on a loaded machine.
    ids = [await create(store, "test.sleepy", seconds=30) for _ in range(5)]

    async def all_started():
        return all([await redis.llen(f"test:started:{i}") for i in ids])

    await eventually(all_started, timeout=30)
    survivor = start_worker(settings, tmp_path / "b.log")
    try:
        await eventually(lambda: _online(redis, 2), timeout=30)
        kill(doomed)
        killed_at = time.time()
        assert not any([await redis.llen(f"test:finished:{i}") for i in ids]), "killed too late"

        async def all_succeeded():
            return all([(await store.get(i)).state == "succeeded" for i in ids])

        await eventually(all_succeeded, timeout=120)
    finally:
        kill(survivor)
    delays = []
    for job_id in ids:
        first, second = await marks(redis, "started", job_id)
        assert first["pid"] == doomed.pid and second["pid"] == survivor.pid
        assert second["at"] > killed_at  # never on two live workers at once
        delays.append(second["at"] - killed_at)
        job = await store.get(job_id)
        assert [a["outcome"] for a in job.attempts] == ["crashed", "succeeded"]
        assert job.attempt == 2 and job.crashes == 1
    # Within WORKER_LEASE_SECONDS (2 s here): declared dead at 0.8 of a lease, released by
    # the next reaper pass (a fifth of a lease at most), started at the survivor's next
    # poll; half a lease more leaves room for a loaded machine (arq alone: 70 s).
    assert max(delays) < settings.worker_lease_seconds * 1.5, delays


async def _online(redis, n: int) -> bool:
    return await redis.zcount("lr:workers", time.time() - 2, "+inf") == n


async def test_job_that_always_kills_its_worker_is_dead_lettered_at_the_crash_cap(
    settings, redis, client, tmp_path
):
    store = JobStore(redis, settings, TEST_REGISTRY)
    job_id = await create(store, "test.suicide")
    for n in range(1, settings.worker_max_crashes + 1):
        proc = start_worker(settings, tmp_path / f"w{n}.log")
        proc.wait(60)  # the job kills it
        assert len(await marks(redis, "started", job_id)) == n
    # One more worker reaps the last crash.
    proc = start_worker(settings, tmp_path / "last.log")

    async def critical_logged() -> bool:
        lines = [json.loads(line) for line in (tmp_path / "last.log").read_text().splitlines()
                 if line.startswith("{")]  # fmt: skip
        return any(
            line["level"] == "CRITICAL"
            and line.get("job_id") == job_id
            and line.get("arguments") == {}
            for line in lines
        )

    try:
        job = await eventually(lambda: _final(store, job_id), timeout=30)
        # the reaper's dead letter is logged at CRITICAL with its context
        await eventually(critical_logged, timeout=30)
    finally:
        kill(proc)
    assert job.state == "failed"
    assert job.error["type"] == "worker_crashed" and job.error["retryable"] is False
    assert "crash cap" in job.error["message"]
    assert [a["outcome"] for a in job.attempts] == ["crashed"] * settings.worker_max_crashes
    dead = (await client.get(f"/v1/dead-letters/{job_id}", headers=ADMIN)).json()
    assert dead["error"]["type"] == "worker_crashed"
    assert await redis.exists(f"arq:job:{job_id}") == 0


async def _final(store, job_id):
    job = await store.get(job_id)
    return job if job.state.finished else None


async def test_sigterm_lets_a_short_job_finish_and_hands_back_a_long_one_without_a_try(
    settings, redis, tmp_path
):
    settings = settings.model_copy(update={"worker_drain_seconds": 2})
    store = JobStore(redis, settings, TEST_REGISTRY)
    first = start_worker(settings, tmp_path / "a.log")
    short = await create(store, "test.sleepy", seconds=1)
    long = await create(store, "test.sleepy", seconds=6)

    async def both_started():
        return await redis.llen(f"test:started:{short}") and await redis.llen(
            f"test:started:{long}"
        )

    await eventually(both_started, timeout=30)
    kill(first, signal.SIGTERM)
    assert first.wait(30) == 0  # a clean exit after the drain
    assert (await store.get(short)).state == "succeeded"
    handed_back = await store.get(long)
    assert handed_back.state == "queued" and handed_back.attempts[-1]["outcome"] == "interrupted"
    assert await marks(redis, "cleanup", long)  # its cleanup ran when it was stopped

    second = start_worker(settings, tmp_path / "b.log")
    try:
        job = await eventually(lambda: _final(store, long), timeout=60)
    finally:
        kill(second)
    assert job.state == "succeeded"
    runs = await marks(redis, "started", long)
    assert [r["pid"] for r in runs] == [first.pid, second.pid]
    assert [r["attempt"] for r in runs] == [1, 1]  # the drained run did not spend a try
    assert job.attempt == 1


async def test_workers_online_follows_workers_within_the_lease(settings, redis, client, tmp_path):
    async def online():
        return (await client.get("/health/queues")).json()["workers_online"]

    a = start_worker(settings, tmp_path / "a.log")
    b = start_worker(settings, tmp_path / "b.log")
    try:
        await eventually(lambda: _equals(online, 2), timeout=30)
        kill(a)  # kill -9: no goodbye, the lease must lapse
        await eventually(lambda: _equals(online, 1), timeout=settings.worker_lease_seconds + 5)
        kill(b, signal.SIGTERM)  # a clean exit leaves at once
        b.wait(30)
        await eventually(lambda: _equals(online, 0), timeout=5)
    finally:
        kill(a)
        kill(b)


async def _equals(probe, value) -> bool:
    return await probe() == value


async def test_job_whose_worker_dies_on_its_last_try_is_dead_lettered(
    settings, redis, client, tmp_path
):
    settings = settings.model_copy(update={"job_max_tries": 2, "job_timeout_seconds": 60.0})
    store = JobStore(redis, settings, TEST_REGISTRY)
    job_id = await create(store, "test.sleepy", seconds=60)
    for n in (1, 2):
        proc = start_worker(settings, tmp_path / f"w{n}.log")
        try:
            await eventually(lambda n=n: _started(redis, job_id, n), timeout=60)
        finally:
            kill(proc)
    proc = start_worker(settings, tmp_path / "last.log")
    try:
        job = await eventually(lambda: _final(store, job_id), timeout=30)
    finally:
        kill(proc)
    assert job.state == "failed" and job.attempt == 2
    assert job.error["type"] == "worker_crashed"
    assert "last attempt (2 of 2)" in job.error["message"]
    dead = (await client.get(f"/v1/dead-letters/{job_id}", headers=ADMIN)).json()
    assert [a["outcome"] for a in dead["attempts"]] == ["crashed", "crashed"]


async def _started(redis, job_id, n) -> bool:
    return await redis.llen(f"test:started:{job_id}") >= n


async def test_job_running_longer_than_several_leases_is_never_taken_by_another_worker(
    settings, redis
):
    store = JobStore(redis, settings, TEST_REGISTRY)
    async with running_worker(settings), running_worker(settings):
        job_id = await create(store, "test.sleepy", seconds=settings.worker_lease_seconds * 3)
        job = await eventually(lambda: _final(store, job_id), timeout=30)
    assert job.state == "succeeded" and job.attempt == 1 and job.crashes == 0
    assert len(await marks(redis, "started", job_id)) == 1


async def test_worker_and_api_ride_out_a_redis_restart(s3_server, tmp_path):
    # A Redis of this test's own (AOF, fsync always), killed and started again under them.
    server = RedisServer(appendonly=True).start()
    # A lease well past the outage: a worker whose beats stop for 0.8 of a lease is
    # declared dead (by any reaper, its own included) and its jobs run again.
    settings = make_settings(
        server.url, s3_server.url, redis_retry_seconds=20.0, worker_lease_seconds=6.0
    )
    proc = start_worker(settings, tmp_path / "w.log")
    redis = Redis.from_url(server.url)
    try:
        store = JobStore(redis, settings, TEST_REGISTRY)
        await eventually(lambda: _online(redis, 1), timeout=30)
        running = await create(store, "test.sleepy", seconds=3)
        await eventually(lambda: _started(redis, running, 1), timeout=30)
        async with api_client(settings) as client:
            # The API is up, with its connections open, before Redis goes.
            assert (await client.get(f"/v1/jobs/{running}", headers=ACME)).status_code == 200
            server.proc.kill()  # kill -9: the AOF keeps every acknowledged write
            server.proc.wait(10)
            during = asyncio.create_task(client.get(f"/v1/jobs/{running}", headers=ACME))
            done, _ = await asyncio.wait({during}, timeout=1.0)
            assert not done, "the API answered without Redis: it never saw the outage"
            server.start()
            answer = await during
            assert answer.status_code == 200 and answer.json()["id"] == running
            posted = await client.post("/v1/canaries", headers=ADMIN)
            assert posted.status_code == 202
        after = await create(store, "test.sleepy", seconds=0.1)
        for job_id in (running, after):
            job = await eventually(lambda j=job_id: _final(store, j), timeout=60)
            assert job.state == "succeeded", job
        assert proc.poll() is None  # the worker lived through it
        assert len(await marks(redis, "started", running)) == 1  # and kept its job
    finally:
        kill(proc)
        await redis.aclose()
        server.stop()


async def test_a_poll_cut_off_by_redis_ends_the_poll_not_the_worker(settings, redis_server):
    # arq's main loop raises on a Redis error (and a claim script cannot be retried by
    # redis-py): without the guard a Redis restart or failover ends the worker process.
    proxy = Proxy(target_port=redis_server.port).start()
    cut = settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{proxy.port}/0", "redis_retry_seconds": 0.2}
    )
    pool = await connect(cut)
    worker = build_worker(
        worker_settings(cut, TEST_REGISTRY), redis_pool=pool, handle_signals=False
    )
    worker.ctx["settings"] = cut
    try:
        proxy.set_down(True)
        await worker._poll_iteration()
        assert worker.job_counter == 0 and not worker.tasks
        assert worker.sem._value == settings.worker_concurrency + 1  # all free (arq: max_jobs + 1)
    finally:
        proxy.stop()
        await pool.aclose()


async def test_a_delivery_whose_worker_is_killed_mid_attempt_is_attempted_again_within_a_lease(
    settings, redis, tmp_path
):
    hooked = settings.model_copy(
        update={"webhook_allow_private_networks": True, "webhook_timeout_seconds": 30.0}
    )
    receiver = Receiver().start()
    receiver.script("slow:20")  # the first attempt hangs: its worker dies under it
    async with api_client(hooked) as client:
        created = await client.post(
            "/v1/webhook-endpoints",
            headers=ACME,
            json={"url": receiver.url, "events": ["export.completed"]},
        )
        endpoint = created.json()["id"]
        await client.app.state.deliveries.publish("acme", "export.completed", "evt_kill", {})
        doomed = start_worker(hooked, tmp_path / "a.log")
        survivor = None
        try:
            await eventually(lambda: _received(receiver, 1), timeout=30)
            survivor = start_worker(hooked, tmp_path / "b.log")
            await eventually(lambda: _online(redis, 2), timeout=30)
            kill(doomed)
            killed_at = time.time()
            await eventually(lambda: _received(receiver, 2), timeout=30)
            again_after = receiver.received[1]["at"] - killed_at
            (delivery,) = (
                await client.get(f"/v1/webhook-endpoints/{endpoint}/deliveries", headers=ACME)
            ).json()["data"]

            async def delivered() -> dict | None:
                found = await client.app.state.deliveries.get(delivery["id"])
                return found if found and found.state == "succeeded" else None

            done = await eventually(delivered, timeout=30)
        finally:
            kill(doomed)
            if survivor is not None:
                kill(survivor)
            receiver.stop()
    assert [a["outcome"] for a in done.attempts] == ["crashed", "succeeded"]
    assert (
        receiver.received[0]["headers"]["webhook-id"]
        == receiver.received[1]["headers"]["webhook-id"]
    )
    assert again_after < hooked.worker_lease_seconds + 5, again_after


async def _received(receiver: Receiver, n: int) -> bool:
    return len(receiver.received) >= n


async def test_a_run_whose_outcome_was_never_recorded_is_handed_back_by_its_live_worker(
    settings, redis, store
):
    async with running_worker(settings) as worker:
        deps = await eventually(lambda: _deps(worker))
        worker.allow_pick_jobs = False
        job_id = (await store.create(kind="test.flaky", account="acme", args={})).job_id
        # What a run leaves when its outcome could not be written (Redis gone for longer
        # than its retries): claimed and started by this live worker, which runs nothing.
        assert await Scheduler(redis, settings, ["test.flaky"]).claim(1) == [(job_id, ANY)]
        await store.mark_started(job_id, "test.flaky", deps.worker_id)
        worker.allow_pick_jobs = True

        async def succeeded():
            job = await store.get(job_id)
            return job if job.state == "succeeded" else None

        job = await eventually(succeeded, timeout=settings.worker_lease_seconds * 5)
    assert [a["outcome"] for a in job.attempts] == ["interrupted", "succeeded"]
    assert job.attempt == 1  # the lost run did not count


async def _deps(worker):
    return worker.ctx.get("deps")
