"""The retry policy end to end: a real worker, real Redis, records read through the API."""

from __future__ import annotations

import json
import re

from jobs.engine.runner import fail_job
from jobs.engine.store import JobStore
from tests.conftest import ACME, ADMIN, eventually, running_worker
from tests.support.kinds import BROKEN_FLAG, TEST_REGISTRY


async def finished(client, job_id: str, headers=ACME) -> dict:
    async def check():
        body = (await client.get(f"/v1/jobs/{job_id}", headers=headers)).json()
        return body if body["state"] in ("succeeded", "failed", "cancelled") else None

    return await eventually(check)


async def enqueue(settings, redis, kind: str, args: dict, account: str = "acme") -> str:
    store = JobStore(redis, settings, TEST_REGISTRY)
    return (await store.create(kind=kind, account=account, args=args)).job_id


async def test_job_failing_transiently_twice_succeeds_at_attempt_three(
    settings, redis, client, worker
):
    job_id = await enqueue(settings, redis, "test.flaky", {"fail_times": 2})
    job = await finished(client, job_id)
    assert job["state"] == "succeeded"
    assert job["attempt"] == 3
    assert job["result"] == {"ok": True, "attempt": 3}
    assert job["error"] is None
    outcomes = [a["outcome"] for a in job["attempts"]]
    assert outcomes == ["retrying", "retrying", "succeeded"]
    windows = [a["backoff_window_seconds"] for a in job["attempts"][:2]]
    assert windows[1] == 2 * windows[0]
    for entry in job["attempts"][:2]:
        assert 0 <= entry["defer_seconds"] <= entry["backoff_window_seconds"]
        assert entry["error"]["type"] == "flaky" and entry["error"]["retryable"] is True


async def test_retry_after_from_the_server_is_honoured(settings, redis, client, worker):
    job_id = await enqueue(settings, redis, "test.flaky", {"fail_times": 1, "retry_after": 1.5})
    job = await finished(client, job_id)
    assert job["state"] == "succeeded"
    first, second = job["attempts"]
    assert first["defer_seconds"] >= 1.5
    gap_ms = _ms(second["started_at"]) - _ms(first["finished_at"])
    assert gap_ms >= 1500


def _ms(stamp: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


async def test_permanent_error_fails_at_attempt_one_with_dead_letter(
    settings, redis, client, worker
):
    await redis.set(BROKEN_FLAG, 1)
    job_id = await enqueue(settings, redis, "test.broken", {"doc": "d1"})
    job = await finished(client, job_id)
    assert job["state"] == "failed"
    assert job["attempt"] == 1
    assert job["error"] == {
        "type": "bad_document",
        "message": "the input cannot be processed",
        "retryable": False,
    }
    dead = (await client.get(f"/v1/dead-letters/{job_id}", headers=ADMIN)).json()
    assert dead["kind"] == "test.broken" and dead["account"] == "acme"
    assert dead["arguments"] == {"doc": "d1"}
    assert dead["error"]["type"] == "bad_document"
    assert "InvalidInput" in dead["traceback"]
    assert len(dead["attempts"]) == 1 and dead["failed_at"]


async def test_replaying_a_dead_letter_makes_a_new_job_that_can_succeed(
    settings, redis, client, worker
):
    await redis.set(BROKEN_FLAG, 1)
    job_id = await enqueue(settings, redis, "test.broken", {"doc": "d2"})
    assert (await finished(client, job_id))["state"] == "failed"
    await redis.delete(BROKEN_FLAG)  # the bug is fixed

    answer = await client.post(f"/v1/dead-letters/{job_id}/replay", headers=ADMIN)
    assert answer.status_code == 202
    replay = answer.json()
    assert replay["id"] != job_id and replay["replay_of"] == job_id
    assert answer.headers["Location"] == f"/v1/jobs/{replay['id']}"
    job = await finished(client, replay["id"])  # same account: acme sees it
    assert job["state"] == "succeeded" and job["result"] == {"fixed": True}

    dead = (await client.get(f"/v1/dead-letters/{job_id}", headers=ADMIN)).json()
    assert dead["replayed_as"] == replay["id"]
    again = await client.post(f"/v1/dead-letters/{job_id}/replay", headers=ADMIN)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


async def test_a_replayed_dead_letter_leaves_the_dead_letter_list_once_its_record_expires(
    settings, redis, store
):
    job = await store.create(kind="test.broken", account="acme", args={})
    record = await store.get(job.job_id)
    error = {"type": "bad_document", "message": "x", "retryable": False}
    assert await fail_job(store, None, record, error, None)
    await store.replay(record)
    assert await redis.ttl(f"lr:job:{job.job_id}") > 0  # replayed: it expires now
    assert await store.forget_expired_dead_letters() == 0  # still there: still listed
    await redis.delete(f"lr:job:{job.job_id}")  # the retention ran out
    assert await store.forget_expired_dead_letters() == 1
    assert (await store.list_dead_letters(limit=10)).items == []
    assert await redis.zscore("lr:dlq", job.job_id) is None


async def test_redis_trouble_under_a_job_is_not_a_failed_attempt(settings, client, store, worker):
    job_id = (await store.create(kind="test.redis_blip", account="acme", args={})).job_id
    job = await finished(client, job_id)
    assert job["state"] == "succeeded" and job["attempt"] == 1
    assert [a["outcome"] for a in job["attempts"]] == ["handed_back", "succeeded"]
    assert "Redis is unreachable" in job["attempts"][0]["reason"]


async def test_job_using_up_its_tries_fails_with_every_attempt_in_dead_letter(
    settings, redis, client, worker
):
    job_id = await enqueue(settings, redis, "test.flaky", {"fail_times": 99})
    job = await finished(client, job_id)
    assert job["state"] == "failed"
    assert job["attempt"] == settings.job_max_tries == 5
    assert job["error"]["type"] == "flaky" and job["error"]["retryable"] is True
    dead = (await client.get(f"/v1/dead-letters/{job_id}", headers=ADMIN)).json()
    assert [a["attempt"] for a in dead["attempts"]] == [1, 2, 3, 4, 5]
    assert [a["error"]["message"] for a in dead["attempts"]] == [
        f"flaky failure on attempt {n}" for n in range(1, 6)
    ]
    assert [a["outcome"] for a in dead["attempts"]] == ["retrying"] * 4 + ["failed"]


async def test_unexpected_exception_is_permanent_internal_error(settings, redis, client, worker):
    job_id = await enqueue(settings, redis, "test.bug", {})
    job = await finished(client, job_id)
    assert job["state"] == "failed" and job["attempt"] == 1
    assert job["error"]["type"] == "internal_error"
    # The tenant reads that something unexpected happened, with a reference; the operator
    # reads the exception in the dead letter.
    assert re.fullmatch(
        r"an unexpected error occurred \(reference err_[0-9a-f]{12}\)", job["error"]["message"]
    )
    dead = (await client.get(f"/v1/dead-letters/{job_id}", headers=ADMIN)).json()
    assert "KeyError: 'missing'" in dead["traceback"]


async def test_job_past_its_time_limit_is_a_transient_timeout(settings, redis, client):
    # Long enough that the soft limit (a quarter before it) fires well before the hard one
    # on a loaded machine.
    fast = settings.model_copy(update={"job_timeout_seconds": 1.5, "job_max_tries": 2})
    async with running_worker(fast):
        job_id = await enqueue(fast, redis, "test.sleepy", {"seconds": 5})
        job = await finished(client, job_id)
    assert job["state"] == "failed" and job["attempt"] == 2
    assert job["error"]["type"] == "job_timeout" and job["error"]["retryable"] is True
    assert "JOB_TIMEOUT_SECONDS" in job["error"]["message"]


async def test_arq_job_payload_in_redis_is_json(settings, redis):
    job_id = await enqueue(settings, redis, "test.flaky", {"fail_times": 0})
    raw = await redis.get(f"arq:job:{job_id}")
    assert json.loads(raw) == {
        "t": None,
        "f": "test.flaky",
        "a": [job_id],
        "k": {},
        "et": json.loads(raw)["et"],
    }
    assert not raw.startswith(b"\x80")  # a pickle would start with the PROTO opcode
