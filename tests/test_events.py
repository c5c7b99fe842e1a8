"""The live status stream: server-sent job snapshots until the job finishes."""

from __future__ import annotations

import asyncio
import json

from jobs.records import JobStore
from tests.conftest import ACME, GLOBEX, running_worker


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
    store = JobStore(redis, settings)
    job_id = (await store.create(kind="test.sleepy", account="acme", args={"seconds": 0.5})).job_id

    async def read_stream() -> tuple[int, str, str]:
        async with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=ACME) as answer:
            body = "".join([chunk async for chunk in answer.aiter_text()])
            return answer.status_code, answer.headers["content-type"], body

    reader = asyncio.create_task(read_stream())
    await asyncio.sleep(0.2)  # let the stream subscribe while the job is still queued
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
    store = JobStore(redis, settings)
    job_id = (await store.create(kind="test.flaky", account="acme", args={})).job_id
    await client.post(f"/v1/jobs/{job_id}/cancel", headers=ACME)
    answer = await client.get(f"/v1/jobs/{job_id}/events", headers=ACME)
    assert [e["state"] for e in parse_sse(answer.text)] == ["cancelled"]


async def test_event_stream_of_another_accounts_job_is_404(settings, redis, client):
    store = JobStore(redis, settings)
    job_id = (await store.create(kind="test.flaky", account="acme", args={})).job_id
    answer = await client.get(f"/v1/jobs/{job_id}/events", headers=GLOBEX)
    assert answer.status_code == 404
