"""Claude calls share one budget: every worker draws from the organisation's limits kept in
Redis (learned from the answers' headers), a 429 holds every worker, waiting is not
failing; prompt caching and usage counted once per paid call."""

from __future__ import annotations

from contextlib import AsyncExitStack

from jobs.engine.records import JobState
from jobs.engine.store import JobStore
from tests.conftest import ACME, api_client, eventually, running_worker
from tests.support.kinds import TEST_REGISTRY
from tests.support.proxy import Proxy


async def documents(client, n: int) -> list[str]:
    ids = []
    for i in range(n):
        answer = await client.post(
            "/v1/documents", headers=ACME, json={"user_id": "u", "text": f"document {i} " * 40}
        )
        ids.append(answer.json()["id"])
    return ids


async def analyse_all(client, doc_ids: list[str]) -> list[str]:
    return [
        (await client.post(f"/v1/documents/{d}/analyses", headers=ACME, json={})).json()["id"]
        for d in doc_ids
    ]


async def all_ended(store: JobStore, job_ids: list[str]) -> bool:
    return all(r.state.finished for r in await store.get_many(job_ids))


async def run_on_two_workers(settings, client, redis, n: int) -> list:
    store = JobStore(redis, settings, TEST_REGISTRY)
    jobs = await analyse_all(client, await documents(client, n))
    async with AsyncExitStack() as stack:
        for _ in range(2):
            await stack.enter_async_context(running_worker(settings))
        await eventually(lambda: all_ended(store, jobs), timeout=90)
    return await store.get_many(jobs)


async def test_two_workers_share_one_budget_and_stay_under_the_limit(
    settings, client, redis, claude
):
    claude.limit(requests_per_minute=60, burst_requests=3)  # one a second, three at once
    records = await run_on_two_workers(settings, client, redis, 8)
    assert all(r.state == JobState.SUCCEEDED and r.attempt == 1 for r in records)
    assert claude.answered_429 == 0  # learned from the first answer, then paced
    calls = sorted(claude.admitted_at)
    assert len(calls) == 8
    # After the burst of three, one a second: the budget was spent, not exceeded.
    assert calls[-1] - calls[0] >= (8 - 3) * 0.9


async def test_without_the_shared_budget_workers_run_into_the_limit(
    settings, client, redis, claude
):
    claude.limit(requests_per_minute=60, burst_requests=3)
    blind = settings.model_copy(update={"claude_budget": False})
    records = await run_on_two_workers(blind, client, redis, 8)
    assert claude.answered_429 > 0
    assert any(r.attempt > 1 for r in records)  # each 429 cost its job an attempt


async def test_a_429_holds_every_worker_until_its_retry_after(settings, client, redis, claude):
    claude.script("429:3")
    records = await run_on_two_workers(settings, client, redis, 4)
    assert all(r.state == JobState.SUCCEEDED and r.attempt == 1 for r in records)
    (limited,) = [r for r in claude.requests if r["answer"] == "429:3"]
    others = [r["at"] for r in claude.requests if r is not limited]
    # No worker called Claude while the hold lasted.
    assert all(at >= limited["at"] + 3 or at <= limited["at"] for at in others), others
    handed = [a for r in records for a in r.attempts if a["outcome"] == "handed_back"]
    assert handed, "the job that met the 429 waited without spending an attempt"


async def test_the_system_prompt_is_cached_and_usage_counts_cache_reads_and_writes(
    settings, client, redis, claude, worker
):
    claude.min_cache_tokens = 10  # our system prompt is short; the real minimum is 1024
    store = JobStore(redis, settings, TEST_REGISTRY)
    usages = []
    for doc_id in await documents(client, 2):
        (job,) = await analyse_all(client, [doc_id])
        await eventually(lambda job=job: all_ended(store, [job]))
        usages.append((await store.get(job)).result["usage"])
    assert usages[0]["cache_creation_input_tokens"] > 0
    assert usages[1]["cache_read_input_tokens"] == usages[0]["cache_creation_input_tokens"]
    (total,) = (await client.get("/v1/usage", headers=ACME)).json()["data"]
    for name in ("input_tokens", "output_tokens", "cache_read_input_tokens",
                 "cache_creation_input_tokens"):  # fmt: skip
        assert total[name] == sum(u[name] for u in usages), name


async def test_a_paid_answer_is_not_paid_again_when_s3_fails_after_it(
    settings, redis, claude, s3_server
):
    proxy = Proxy(target_port=s3_server.port).start()
    try:
        via_proxy = settings.model_copy(update={"s3_endpoint_url": proxy.url})
        store = JobStore(redis, via_proxy, TEST_REGISTRY)
        async with api_client(via_proxy) as client, running_worker(via_proxy):
            claude.script("slow:1.5")
            (job_id,) = await analyse_all(client, await documents(client, 1))
            await eventually(lambda: _requested(claude))
            proxy.set_down(True)  # the answer comes back; S3 is gone when it is saved

            async def retrying() -> bool:
                return (await store.get(job_id)).state == JobState.RETRYING

            await eventually(retrying, timeout=30)
            proxy.set_down(False)
            await eventually(lambda: all_ended(store, [job_id]), timeout=60)
            usage = (await client.get("/v1/usage", headers=ACME)).json()["data"]
        job = await store.get(job_id)
    finally:
        proxy.stop()
    assert job.state == JobState.SUCCEEDED and job.attempt >= 2
    assert len(claude.requests) == 1  # the rerun used the kept answer
    assert usage[0]["output_tokens"] == job.result["usage"]["output_tokens"]  # counted once


async def _requested(claude) -> bool:
    return len(claude.requests) >= 1
