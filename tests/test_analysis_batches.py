"""Analysis batches at the wire: the API, a real worker, the real SDK against the fake
Messages API (single calls and its Message Batches API), real Redis, moto S3."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from anthropic import AsyncAnthropic

from api.sessions import COOKIE
from jobs.analyses import build_request
from jobs.analysis_batches.economy import custom_id
from jobs.analysis_batches.state import BatchState
from jobs.documents import analysis_key
from jobs.errors import NotFound
from jobs.storage import open_storage
from tests.conftest import (
    ACME,
    GLOBEX,
    api_client,
    eventually,
    operator_session,
    running_worker,
)
from tests.support.processes import kill, start_worker
from tests.support.proxy import Proxy
from tests.support.receiver import Receiver

ENDED = ("succeeded", "failed", "cancelled")


@pytest.fixture
def batch_settings(settings):
    return settings.model_copy(
        update={
            "analysis_batch_poll_seconds": 0.1,
            "analysis_batch_poll_max_seconds": 0.4,
            "analysis_batch_step_seconds": 2.0,
            "analysis_batch_concurrency": 4,
            "webhook_allow_private_networks": True,
            "webhook_retry_schedule": [0, 1],
        }
    )


@pytest.fixture
async def api(batch_settings):
    async with api_client(batch_settings) as c:
        yield c


async def make_docs(api, n, headers=ACME, text="Report {n}.", user="u-1") -> list[str]:
    ids = []
    for i in range(n):
        body = {"user_id": user, "text": text.format(n=i)}
        answer = await api.post("/v1/documents", headers=headers, json=body)
        assert answer.status_code == 201, answer.text
        ids.append(answer.json()["id"])
    return ids


async def create(api, headers=ACME, **body):
    return await api.post("/v1/analysis-batches", headers=headers, json=body)


async def finished(api, job_id, timeout=40) -> dict:
    async def check():
        job = (await api.get(f"/v1/jobs/{job_id}", headers=ACME)).json()
        return job if job["state"] in ENDED else None

    return await eventually(check, timeout=timeout)


async def all_results(api, job_id, limit=2) -> list[dict]:
    entries, cursor = [], None
    while True:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        page = await api.get(f"/v1/analysis-batches/{job_id}/results", headers=ACME, params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["data"]) <= limit
        entries += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return entries


async def test_a_batch_is_one_job_and_an_unknown_or_foreign_id_is_a_422_naming_it(
    api, redis, claude
):
    mine = await make_docs(api, 2)
    (theirs,) = await make_docs(api, 1, headers=GLOBEX)
    missing = "doc_01J00000000000000000000000"
    answer = await create(api, document_ids=[*mine, theirs, missing], mode="standard")
    assert answer.status_code == 422
    problem = answer.json()
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert problem["type"].endswith("unknown-documents")
    assert problem["document_ids"] == [theirs, missing] and theirs in problem["detail"]
    assert (await api.get("/v1/jobs", headers=ACME)).json()["data"] == []
    assert await redis.keys("lr:abatch:*") == []

    for bad in ({"document_ids": []}, {}, {"document_ids": mine, "user_id": "u-1"},
                {"document_ids": mine, "mode": "cheap"}):  # fmt: skip
        assert (await create(api, **bad)).status_code == 422

    answer = await create(api, document_ids=mine, mode="economy", instructions="Risks?")
    assert answer.status_code == 202
    job = answer.json()
    assert job["kind"] == "analysis_batch" and job["state"] == "queued"
    assert answer.headers["location"] == f"/v1/jobs/{job['id']}"
    assert len(json.dumps(job["attempts"])) < 100  # the ids are not in the record


async def test_idempotency_key_replays_the_batch_and_refuses_another_body(api, redis, claude):
    ids = await make_docs(api, 3)
    key = {**ACME, "Idempotency-Key": "nightly-1"}
    first = await create(api, headers=key, document_ids=ids, mode="standard")
    again = await create(api, headers=key, document_ids=ids, mode="standard")
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    other = await create(api, headers=key, document_ids=ids[:2], mode="standard")
    assert other.status_code == 422
    assert len((await api.get("/v1/jobs", headers=ACME)).json()["data"]) == 1
    # Only the one batch's state exists: the replays left nothing behind.
    assert {k.decode().split(":")[2] for k in await redis.keys("lr:abatch:job_*")} == {
        first.json()["id"]
    }


async def test_standard_batch_analyses_each_document_counts_a_failure_and_pages_results(
    batch_settings, api, claude
):
    ids = await make_docs(api, 5)
    flaky = await make_docs(api, 1, text="fake-answers[flaky]=529,ok")
    bad = await make_docs(api, 1, text="fake-answers[bad]=400*")
    every = [*ids, *flaky, *bad]
    job = (await create(api, document_ids=[*every, ids[0]], mode="standard")).json()
    async with running_worker(batch_settings):
        job = await finished(api, job["id"])
    assert job["state"] == "succeeded" and job["progress"] == 1.0
    result = job["result"]
    assert result["mode"] == "standard" and result["total"] == 7
    assert (result["succeeded"], result["failed"]) == (6, 1)
    assert result["results_url"] == f"/v1/analysis-batches/{job['id']}/results"
    assert result["usage"]["output_tokens"] == 6 * 7
    # One call per document, the overloaded one twice; no job per document.
    assert len(claude.requests) == 8 and len(claude.batch_log) == 0
    assert [j["id"] for j in (await api.get("/v1/jobs", headers=ACME)).json()["data"]] == [
        job["id"]
    ]

    entries = await all_results(api, job["id"])
    assert [e["document_id"] for e in entries] == every
    failed = entries[-1]
    assert failed["state"] == "failed" and failed["error"]["type"] == "claude_bad_request"
    assert all(e["state"] == "succeeded" for e in entries[:-1])
    assert entries[0]["analysis"].startswith("Analysis of") and entries[0]["usage"]["input_tokens"]

    document = (await api.get(f"/v1/documents/{ids[0]}", headers=ACME)).json()
    assert document["latest_analysis"] == {
        "job_id": job["id"], "state": "succeeded", "analysis": entries[0]["analysis"],
        "model": batch_settings.analysis_model,
    }  # fmt: skip
    usage = (await api.get("/v1/usage", headers=ACME)).json()
    assert [(m["mode"], m["price_factor"]) for m in usage["by_mode"]] == [("standard", 1.0)]
    assert usage["data"][0]["output_tokens"] == 6 * 7

    # The dashboard shows the batch's progress and its failed document.
    api.cookies.set(COOKIE, await operator_session(batch_settings))
    page = (await api.get(f"/dashboard/jobs/{job['id']}")).text
    assert 'id="batch"' in page and '<th>Failed</th><td class="bad">1</td>' in page
    assert bad[0] in page and "claude_bad_request" in page


async def test_a_standard_batch_draws_on_the_shared_claude_budget_and_waits_without_failing(
    batch_settings, api, claude
):
    claude.limit(requests_per_minute=240, burst_requests=4)  # the budget's own burst
    settings = batch_settings.model_copy(update={"claude_requests_per_minute": 240})
    ids = await make_docs(api, 8)
    job = (await create(api, document_ids=ids, mode="standard")).json()
    async with running_worker(settings):
        job = await finished(api, job["id"])
    assert job["state"] == "succeeded" and job["result"]["succeeded"] == 8
    assert job["attempt"] == 1  # waiting for the budget spent no try
    assert claude.answered_429 == 0 and len(claude.requests) == 8
    # 8 calls at 4 a second after a burst of 4: about 1 s at least.
    assert claude.admitted_at[-1] - claude.admitted_at[0] >= 0.8


async def test_economy_batch_splits_resubmits_errored_and_expired_and_bills_half(
    batch_settings, api, claude
):
    claude.batch_latency_s = 0.3
    settings = batch_settings.model_copy(update={"analysis_batch_max_requests": 2})
    ids = await make_docs(api, 2)
    flaky = await make_docs(api, 1, text="fake-answers[flaky]=529,ok")
    late = await make_docs(api, 1, text="fake-answers[late]=expired,ok")
    bad = await make_docs(api, 1, text="fake-answers[bad]=400*")
    every = [*ids, *flaky, *late, *bad]
    job = (await create(api, document_ids=every, mode="economy", instructions="Risks?")).json()
    async with running_worker(settings):
        job = await finished(api, job["id"])
    assert job["state"] == "succeeded", job
    result = job["result"]
    assert (result["mode"], result["total"], result["succeeded"], result["failed"]) == (
        "economy",
        5,
        4,
        1,
    )
    # Every wait for a Message Batch was a Continue: no try spent, no history left.
    assert job["attempt"] == 1 and [a["outcome"] for a in job["attempts"]] == ["succeeded"]
    creations = [e for e in claude.batch_log if e["op"] == "create"]
    # Round 1: five requests in Message Batches of at most two; round 2: the errored
    # (overloaded) and the expired one, again.
    assert [len(c["requests"]) for c in creations] == [2, 2, 1, 2]
    resent = {r["custom_id"] for r in creations[-1]["requests"]}
    assert resent == {custom_id(job["id"], flaky[0]), custom_id(job["id"], late[0])}
    assert not claude.requests  # no single Messages call
    entries = await all_results(api, job["id"], limit=10)
    assert [e["state"] for e in entries] == ["succeeded"] * 4 + ["failed"]
    assert entries[-1]["error"]["type"] == "claude_invalid_request_error"
    usage = (await api.get("/v1/usage", headers=ACME)).json()
    assert [(m["mode"], m["price_factor"]) for m in usage["by_mode"]] == [("economy", 0.5)]
    assert usage["by_mode"][0]["output_tokens"] == result["usage"]["output_tokens"] == 4 * 7
    document = (await api.get(f"/v1/documents/{late[0]}", headers=ACME)).json()
    assert document["latest_analysis"]["job_id"] == job["id"]
    assert document["latest_analysis"]["state"] == "succeeded"


async def test_a_message_batch_that_expires_has_its_unprocessed_requests_resubmitted(
    batch_settings, api, claude
):
    """Claude expires what a Message Batch has not run 24 hours after its creation; the
    fake does it after `batch_expire_after_s`."""
    claude.batch_latency_s, claude.batch_expire_after_s = 1.0, 0.5
    ids = await make_docs(api, 10)
    job = (await create(api, document_ids=ids, mode="economy")).json()
    async with running_worker(batch_settings):
        await eventually(lambda: _async([e for e in claude.batch_log if e["op"] == "create"]))
        claude.batch_latency_s, claude.batch_expire_after_s = 0.2, 60.0
        job = await finished(api, job["id"])
    assert job["state"] == "succeeded" and job["result"]["succeeded"] == 10
    first, second = [e["requests"] for e in claude.batch_log if e["op"] == "create"]
    assert len(first) == 10 and 0 < len(second) < 10  # only what expired went again


async def test_cancelling_an_economy_batch_cancels_its_message_batch(batch_settings, api, claude):
    claude.batch_latency_s = 60
    ids = await make_docs(api, 3)
    job = (await create(api, document_ids=ids, mode="economy")).json()
    async with running_worker(batch_settings):
        await eventually(lambda: _async([e for e in claude.batch_log if e["op"] == "create"]))
        answer = await api.post(f"/v1/jobs/{job['id']}/cancel", headers=ACME)
        assert answer.status_code == 202
        assert (await finished(api, job["id"]))["state"] == "cancelled"
        await eventually(lambda: _async([e for e in claude.batch_log if e["op"] == "cancel"]))
    (created,) = [e for e in claude.batch_log if e["op"] == "create"]
    (cancelled,) = [e for e in claude.batch_log if e["op"] == "cancel"]
    assert cancelled["batch_id"] == created["batch_id"]
    entries = await all_results(api, job["id"], limit=10)
    assert {e["state"] for e in entries} == {"cancelled"}


async def test_cancelling_a_standard_batch_stops_what_has_not_run(batch_settings, api, claude):
    claude.delay_s = 0.3
    settings = batch_settings.model_copy(update={"analysis_batch_concurrency": 2})
    ids = await make_docs(api, 30)
    job = (await create(api, document_ids=ids, mode="standard")).json()
    async with running_worker(settings):
        await eventually(lambda: _async(len(claude.requests) >= 4))
        await api.post(f"/v1/jobs/{job['id']}/cancel", headers=ACME)
        assert (await finished(api, job["id"]))["state"] == "cancelled"
        made = len(claude.requests)
    assert made < 12
    entries = await all_results(api, job["id"], limit=50)
    assert {e["state"] for e in entries} <= {"succeeded", "cancelled"}
    assert sum(e["state"] == "cancelled" for e in entries) >= 30 - made


async def test_batch_events_reach_a_subscribed_endpoint(batch_settings, api, claude):
    receiver = Receiver().start()
    try:
        hook = {"url": receiver.url, "events": ["analysis_batch.completed"]}
        answer = await api.post("/v1/webhook-endpoints", headers=ACME, json=hook)
        assert answer.status_code == 201, answer.text
        job = (await create(api, document_ids=await make_docs(api, 2), mode="standard")).json()
        async with running_worker(batch_settings):
            await finished(api, job["id"])
            await eventually(lambda: _async(receiver.received))
        event = json.loads(receiver.received[0]["body"])
        assert event["type"] == "analysis_batch.completed"
        assert event["data"]["id"] == job["id"] and event["data"]["result"]["succeeded"] == 2
        answer = await api.post(
            "/v1/webhook-endpoints",
            headers=ACME,
            json={"url": receiver.url, "events": ["analysis_batch.failed"]},
        )
        assert answer.status_code == 201
    finally:
        receiver.stop()


async def test_a_batch_of_a_user_takes_all_their_documents(batch_settings, api, claude):
    mine = await make_docs(api, 3, user="u-7")
    await make_docs(api, 2, user="u-8")
    job = (await create(api, user_id="u-7", mode="standard")).json()
    async with running_worker(batch_settings):
        job = await finished(api, job["id"])
    assert job["result"]["total"] == 3 and job["result"]["succeeded"] == 3
    assert sorted(e["document_id"] for e in await all_results(api, job["id"])) == sorted(mine)


async def test_a_crash_between_create_and_record_adopts_the_batch_instead_of_submitting_again(
    batch_settings, api, redis, claude
):
    """The worst moment: the Message Batch was made, the job died before recording it. The
    state is made here as that run left it: the marker, and the batch at the fake."""
    claude.batch_latency_s = 0.3
    ids = await make_docs(api, 3)
    job = (await create(api, document_ids=ids, mode="economy")).json()
    batch = BatchState(redis, job["id"])
    marker = {"round": 1, "chunk": 0, "end": 3, "count": 3, "at": time.time()}
    await batch.set_meta(round=1, phase="submit", submitting=json.dumps(marker))
    client = AsyncAnthropic(api_key="sk-ant-test-key", base_url=claude.url, max_retries=0)
    requests = []
    for doc_id in ids:
        document = {"id": doc_id, "title": None, "text": "Report."}
        requests.append({"custom_id": custom_id(job["id"], doc_id),
                         "params": build_request(batch_settings, document, None)})  # fmt: skip
    made = await client.messages.batches.create(requests=requests)
    await client.close()
    async with running_worker(batch_settings):
        job = await finished(api, job["id"])
    assert job["state"] == "succeeded" and job["result"]["succeeded"] == 3
    creations = [e["batch_id"] for e in claude.batch_log if e["op"] == "create"]
    assert creations == [made.id]
    assert await redis.get(f"lr:abatch:mb:{made.id}") == job["id"].encode()


@pytest.mark.slow
async def test_a_worker_killed_while_waiting_does_not_submit_twice(
    batch_settings, api, claude, tmp_path
):
    claude.batch_latency_s = 6
    settings = batch_settings.model_copy(update={"worker_lease_seconds": 1.0})
    ids = await make_docs(api, 4)
    job = (await create(api, document_ids=ids, mode="economy")).json()
    first = start_worker(settings, tmp_path / "w1.log")
    try:
        await eventually(lambda: _async([e for e in claude.batch_log if e["op"] == "create"]))
        kill(first)
        second = start_worker(settings, tmp_path / "w2.log")
        try:
            job = await finished(api, job["id"], timeout=60)
        finally:
            kill(second)
    finally:
        kill(first)
    assert job["state"] == "succeeded" and job["result"]["succeeded"] == 4
    assert len([e for e in claude.batch_log if e["op"] == "create"]) == 1


async def _async(value):
    return value


async def test_an_export_carries_each_documents_batch_analysis(batch_settings, api, claude):
    (good,) = await make_docs(api, 1, user="u-x")
    (bad,) = await make_docs(api, 1, user="u-x", text="fake-answers[bad]=400*")
    job = (await create(api, document_ids=[good, bad], mode="standard")).json()
    async with running_worker(batch_settings):
        job = await finished(api, job["id"])
        body = {"user_id": "u-x", "format": "ndjson"}
        exported = (await api.post("/v1/exports", headers=ACME, json=body)).json()
        exported = await finished(api, exported["id"])
    async with httpx.AsyncClient() as plain:
        lines = (await plain.get(exported["result"]["download_url"])).text.splitlines()
    latest = {e["id"]: e["latest_analysis"] for e in map(json.loads, lines)}
    assert latest[good]["state"] == "succeeded" and latest[good]["job_id"] == job["id"]
    assert latest[good]["analysis"].startswith("Analysis of")
    assert latest[bad] == {"job_id": job["id"], "state": "failed"}


async def test_results_of_another_accounts_batch_are_a_404(api, claude):
    job = (await create(api, document_ids=await make_docs(api, 1), mode="standard")).json()
    answer = await api.get(f"/v1/analysis-batches/{job['id']}/results", headers=GLOBEX)
    assert answer.status_code == 404


async def test_a_paid_answer_waits_out_a_redis_outage_instead_of_being_bought_again(
    batch_settings, api, claude, redis_server
):
    # The worker reaches Redis through a proxy that goes down while Claude is answering:
    # the answer is stored in S3, then its record in Redis fails until Redis is back.
    proxy = Proxy(target_port=redis_server.port).start()
    cut = batch_settings.model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{proxy.port}/0",
            "redis_retry_seconds": 0.2,  # a Redis error surfaces at once
            "worker_lease_seconds": 30.0,  # the outage is not the lease's business here
        }
    )
    (doc,) = await make_docs(api, 1, text="fake-answers[paid]=slow:1.5")
    job = (await create(api, document_ids=[doc], mode="standard")).json()
    meta = (await api.get(f"/v1/documents/{doc}", headers=ACME)).json()
    key = analysis_key("acme", meta["user_id"], doc, job["id"])

    async def asked() -> bool:
        return len(claude.requests) >= 1

    async with open_storage(batch_settings) as storage:

        async def answer_stored() -> bool:
            try:
                return bool(await storage.get_bytes(key))
            except NotFound:
                return False

        try:
            async with running_worker(cut):
                await eventually(asked, timeout=30)
                proxy.set_down(True)
                await eventually(answer_stored, timeout=30)
                refused = proxy.refused
                await eventually(lambda: _more(proxy, refused), timeout=30)  # it tried Redis
                proxy.set_down(False)
                job = await finished(api, job["id"])
        finally:
            proxy.stop()
    assert job["state"] == "succeeded" and job["result"]["succeeded"] == 1
    assert len(claude.requests) == 1  # not asked again


async def _more(proxy: Proxy, than: int) -> bool:
    return proxy.refused > than
