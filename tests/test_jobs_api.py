"""The status API: auth, account scoping, problem+json errors, listing, idempotency."""

from __future__ import annotations

from jobs.engine.store import JobStore
from tests.conftest import ACME, ADMIN, GLOBEX, api_client
from tests.support.kinds import TEST_REGISTRY

PROBLEM = "application/problem+json"


async def make_job(settings, redis, account="acme", kind="test.flaky", args=None) -> str:
    store = JobStore(redis, settings, TEST_REGISTRY)
    return (await store.create(kind=kind, account=account, args=args or {})).job_id


async def test_unknown_job_id_is_404_problem(client):
    answer = await client.get("/v1/jobs/job_01JAAAAAAAAAAAAAAAAAAAAAAA", headers=ACME)
    assert answer.status_code == 404
    assert answer.headers["content-type"] == PROBLEM
    assert answer.json()["status"] == 404 and answer.json()["code"] == "not_found"


async def test_another_accounts_job_is_404_like_a_missing_one(settings, redis, client):
    job_id = await make_job(settings, redis, account="acme")
    mine = await client.get(f"/v1/jobs/{job_id}", headers=ACME)
    theirs = await client.get(f"/v1/jobs/{job_id}", headers=GLOBEX)
    assert mine.status_code == 200
    assert theirs.status_code == 404 and theirs.headers["content-type"] == PROBLEM
    assert theirs.json()["detail"] == "no such job"


async def test_malformed_and_overlong_job_ids_are_404(client):
    for job_id in ("nope", "job_" + "A" * 300, "..%2F..%2Fetc%2Fpasswd"):
        answer = await client.get(f"/v1/jobs/{job_id}", headers=ACME)
        assert answer.status_code in (404, 422), job_id
        assert answer.headers["content-type"] == PROBLEM


async def test_missing_or_wrong_key_is_401(client):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        answer = await client.get("/v1/jobs", headers=headers)
        assert answer.status_code == 401, headers
        assert answer.headers["content-type"] == PROBLEM
        assert answer.headers["www-authenticate"].startswith("Bearer")


async def test_account_key_on_admin_route_is_403(client):
    answer = await client.get("/v1/dead-letters", headers=ACME)
    assert answer.status_code == 403 and answer.headers["content-type"] == PROBLEM


async def test_unknown_route_and_wrong_method_are_problems(client):
    missing = await client.get("/v1/nothing-here", headers=ACME)
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM
    wrong = await client.delete("/v1/jobs", headers=ACME)
    assert wrong.status_code == 405 and wrong.headers["content-type"] == PROBLEM


async def test_unexpected_error_is_a_500_problem_without_traceback(settings, caplog):
    async with api_client(settings) as client:

        @client.app.get("/v1/boom")
        async def boom() -> None:
            raise RuntimeError("secret internals")

        answer = await client.get("/v1/boom")
    assert answer.status_code == 500
    assert answer.headers["content-type"] == PROBLEM
    assert "secret internals" not in answer.text and "Traceback" not in answer.text
    assert "secret internals" in caplog.text  # logged for the operator


async def test_unfinished_job_carries_retry_after(settings, redis, client):
    job_id = await make_job(settings, redis)
    answer = await client.get(f"/v1/jobs/{job_id}", headers=ACME)
    body = answer.json()
    assert body["state"] == "queued" and body["attempt"] == 0 and body["max_attempts"] == 5
    assert body["started_at"] is None and body["result"] is None
    assert int(answer.headers["Retry-After"]) >= 1


async def test_job_list_filters_and_paginates_newest_first(settings, redis, client):
    ids = [await make_job(settings, redis) for _ in range(7)]
    other = await make_job(settings, redis, kind="test.sleepy")
    await make_job(settings, redis, account="globex")
    seen, cursor = [], None
    while True:
        params = {"limit": 3, "kind": "test.flaky"} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/jobs", headers=ACME, params=params)).json()
        seen += [j["id"] for j in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))
    everything = (await client.get("/v1/jobs", headers=ACME, params={"limit": 100})).json()
    assert len(everything["data"]) == 8 and everything["next_cursor"] is None
    assert everything["data"][0]["id"] == other
    queued = (await client.get("/v1/jobs?state=succeeded", headers=ACME)).json()
    assert queued["data"] == []


async def test_bad_list_parameters_are_422(client):
    for query in ("state=bogus", "limit=0", "limit=1000", "cursor=!!!"):
        answer = await client.get(f"/v1/jobs?{query}", headers=ACME)
        assert answer.status_code == 422, query
        assert answer.headers["content-type"] == PROBLEM


async def test_same_idempotency_key_and_body_returns_the_same_job(client, redis):
    headers = ADMIN | {"Idempotency-Key": "demo-1"}
    first = await client.post("/v1/canaries", headers=headers)
    second = await client.post("/v1/canaries", headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert await redis.zcard("arq:queue") == 1


async def test_idempotency_key_reused_with_other_body_is_422(client, redis):
    doc = await client.post("/v1/documents", headers=ACME, json={"user_id": "u", "text": "t"})
    path = f"/v1/documents/{doc.json()['id']}/analyses"
    headers = ACME | {"Idempotency-Key": "k"}
    first = await client.post(path, headers=headers, json={"instructions": "Sum up."})
    assert first.status_code == 202
    other = await client.post(path, headers=headers, json={"instructions": "List risks."})
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert other.headers["content-type"] == PROBLEM
    same = await client.post(path, headers=headers, json={"instructions": "Sum up."})
    assert same.status_code == 202 and same.json()["id"] == first.json()["id"]
    assert await redis.zcard("arq:queue") == 1


async def test_bad_idempotency_key_is_422(client):
    answer = await client.post("/v1/canaries", headers=ADMIN | {"Idempotency-Key": "x" * 300})
    assert answer.status_code == 422 and answer.json()["code"] == "invalid_input"
    assert answer.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]


async def test_request_id_is_echoed_and_recorded(client):
    answer = await client.post("/v1/canaries", headers=ADMIN | {"X-Request-ID": "trace-42"})
    assert answer.headers["X-Request-ID"] == "trace-42"
    dead_or_not = await client.app.state.store.get(answer.json()["id"])
    assert dead_or_not.request_id == "trace-42"


async def test_late_progress_report_changes_no_ended_or_expired_job(client, redis, settings):
    store = client.app.state.store
    job_id = (await store.create(kind="test.sleepy", account="acme", args={})).job_id
    assert (await client.post(f"/v1/jobs/{job_id}/cancel", headers=ACME)).status_code == 202
    await store.set_progress(job_id, 0.7, "late")
    await store.set_progress("job_01HXEXPIREDEXPIREDEXPIRED0", 0.7, "late")
    job = (await client.get(f"/v1/jobs/{job_id}", headers=ACME)).json()
    assert job["state"] == "cancelled" and job["progress"] != 0.7 and job["stage"] != "late"
    assert not await redis.exists("lr:job:job_01HXEXPIREDEXPIREDEXPIRED0")
    answer = await client.get("/v1/jobs/job_01HXEXPIREDEXPIREDEXPIRED0", headers=ACME)
    assert answer.status_code == 404
