"""The live status stream: server-sent job snapshots until the job finishes."""

from __future__ import annotations

import asyncio
import json

import httpx

from jobs.engine.store import JobStore
from tests.conftest import ACME, ACME_KEY, GLOBEX, eventually, running_worker
from tests.support.api_server import ApiServer
from tests.support.kinds import TEST_REGISTRY


def parse_sse(text: str) -> list[dict]:
    events = []
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
        if data:
            assert "event: job" in lines
            events.append(json.loads("\n".join(data)))
    return events


async def test_event_stream_shows_queued_running_with_progress_then_succeeded_and_closes(
    settings, redis, client
):
    store = JobStore(redis, settings, TEST_REGISTRY)
    job_id = (await store.create(kind="test.sleepy", account="acme", args={"seconds": 0.5})).job_id

    async def read_stream() -> tuple[int, str, str]:
        async with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=ACME) as answer:
            body = "".join([chunk async for chunk in answer.aiter_text()])
            return answer.status_code, answer.headers["content-type"], body

    reader = asyncio.create_task(read_stream())

    async def subscribed():  # the stream listens while the job is still queued
        return (await redis.pubsub_numsub(f"lr:job:{job_id}"))[0][1] == 1

    await eventually(subscribed, timeout=10)
    async with running_worker(settings):
        status, content_type, body = await asyncio.wait_for(reader, timeout=30)
    assert status == 200 and content_type.startswith("text/event-stream")
    events = parse_sse(body)
    states = [e["state"] for e in events]
    assert states[0] == "queued" and states[-1] == "succeeded"
    assert "running" in states
    assert states.index("running") < states.index("succeeded")
    assert any(e["state"] == "running" and e["progress"] == 0.5 for e in events)
    assert events[-1]["result"] == {"slept": 0.5}


async def test_event_stream_of_a_finished_job_sends_one_snapshot(settings, redis, client):
    store = JobStore(redis, settings, TEST_REGISTRY)
    job_id = (await store.create(kind="test.flaky", account="acme", args={})).job_id
    await client.post(f"/v1/jobs/{job_id}/cancel", headers=ACME)
    answer = await client.get(f"/v1/jobs/{job_id}/events", headers=ACME)
    assert [e["state"] for e in parse_sse(answer.text)] == ["cancelled"]


async def test_event_stream_of_another_accounts_job_is_404(settings, redis, client):
    store = JobStore(redis, settings, TEST_REGISTRY)
    job_id = (await store.create(kind="test.flaky", account="acme", args={})).job_id
    answer = await client.get(f"/v1/jobs/{job_id}/events", headers=GLOBEX)
    assert answer.status_code == 404


async def test_hundreds_of_open_streams_share_one_redis_connection(settings, redis, tmp_path):
    # More watchers than the API's Redis pool has connections (200): with a connection per
    # stream they would starve every other request.
    settings = settings.model_copy(update={"event_streams_per_account": 300})
    store = JobStore(redis, settings, TEST_REGISTRY)
    ids = [(await store.create(kind="test.flaky", account="acme", args={})).job_id
           for _ in range(250)]  # fmt: skip
    server = ApiServer(settings, tmp_path / "api.log")
    headers = {"Authorization": f"Bearer {ACME_KEY}"}
    limits = httpx.Limits(max_connections=300)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as http:
            opened = asyncio.Event()
            seen: dict[str, list[str]] = {}

            async def watch(job_id: str) -> None:
                async with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as s:
                    async for line in s.aiter_lines():
                        if line.startswith("data: "):
                            seen.setdefault(job_id, []).append(json.loads(line[6:])["state"])
                            if len(seen) == len(ids):
                                opened.set()

            watchers = [asyncio.create_task(watch(i)) for i in ids]
            try:
                await asyncio.wait_for(opened.wait(), timeout=60)
                answer = await http.get(f"/v1/jobs/{ids[0]}", headers=headers)
                assert answer.status_code == 200 and answer.json()["state"] == "queued"
                subscribers = [c for c in await redis.client_list() if "P" in c["flags"]]
                assert len(subscribers) == 1, f"{len(subscribers)} subscribed connections"
                await store.cancel(await store.get(ids[1]))

                async def delivered():
                    return seen[ids[1]] == ["queued", "cancelled"]

                await eventually(delivered, timeout=10)
            finally:
                for task in watchers:
                    task.cancel()
                await asyncio.gather(*watchers, return_exceptions=True)
    finally:
        server.stop()
