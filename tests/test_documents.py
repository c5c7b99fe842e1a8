"""Documents: JSON and multipart uploads to S3, size limits, scoping, S3 outages."""

from __future__ import annotations

import json

import pytest

from jobs.storage import open_storage
from tests.conftest import ACME, GLOBEX, api_client, eventually, make_settings
from tests.support.services import free_port

PROBLEM = "application/problem+json"


async def s3_keys(settings, prefix: str = "") -> list[str]:
    async with open_storage(settings) as storage:
        answer = await storage.client.list_objects_v2(Bucket=settings.s3_bucket, Prefix=prefix)
        return [o["Key"] for o in answer.get("Contents", [])]


@pytest.mark.s3_servers
async def test_json_document_is_stored_in_s3_under_its_user(settings, client):
    answer = await client.post(
        "/v1/documents", headers=ACME, json={"user_id": "u-1", "title": "Memo", "text": "héllo"}
    )
    assert answer.status_code == 201
    doc = answer.json()
    assert doc["user_id"] == "u-1" and doc["title"] == "Memo" and doc["size_bytes"] == 6
    assert doc["latest_analysis"] is None and answer.headers["Location"].endswith(doc["id"])
    key = f"accounts/acme/users/u-1/documents/{doc['id']}.json"
    assert await s3_keys(settings) == [key]
    async with open_storage(settings) as storage:
        stored = json.loads(await storage.get_bytes(key))
    assert stored["text"] == "héllo" and stored["user_id"] == "u-1"
    again = await client.get(f"/v1/documents/{doc['id']}", headers=ACME)
    assert again.status_code == 200 and again.json() == doc


@pytest.mark.s3_servers
async def test_multipart_upload_of_a_text_file_is_stored(settings, client):
    answer = await client.post(
        "/v1/documents",
        headers=ACME,
        data={"user_id": "u-2"},
        files={"file": ("notes.txt", b"line one\nline two\n", "text/plain")},
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["title"] == "notes.txt" and answer.json()["size_bytes"] == 18
    assert len(await s3_keys(settings, "accounts/acme/users/u-2/")) == 1


@pytest.mark.s3_servers
async def test_oversized_documents_are_413_and_nothing_is_stored(settings, client):
    too_big = "x" * (settings.max_document_bytes + 1)
    as_json = await client.post(
        "/v1/documents", headers=ACME, json={"user_id": "u", "text": too_big}
    )
    assert as_json.status_code == 413 and as_json.headers["content-type"] == PROBLEM
    as_file = await client.post(
        "/v1/documents", headers=ACME, data={"user_id": "u"}, files={"file": ("a.txt", too_big)}
    )
    assert as_file.status_code == 413 and as_file.headers["content-type"] == PROBLEM
    assert await s3_keys(settings) == []


@pytest.mark.s3_servers
async def test_bad_documents_are_4xx_problems(settings, client):
    cases = [
        ({"json": {"user_id": "../etc", "text": "t"}}, 422),
        ({"json": {"text": "no user"}}, 422),
        ({"json": {"user_id": "u", "text": 5}}, 422),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422),
        ({"content": b"\xff\xfe", "headers": {"content-type": "application/json"}}, 422),
        ({"content": b"text", "headers": {"content-type": "text/plain"}}, 415),
        ({"data": {"user_id": "u"}, "files": {"file": ("a.txt", b"\xff\xfe\xfd")}}, 422),
        ({"data": {"user_id": "u"}, "files": {"other": ("a.txt", b"text")}}, 422),
        ({"data": {"user_id": "u"}}, 415),  # a urlencoded form
    ]
    for kwargs, status in cases:
        headers = ACME | kwargs.pop("headers", {})
        answer = await client.post("/v1/documents", headers=headers, **kwargs)
        assert answer.status_code == status, (kwargs, answer.text)
        assert answer.headers["content-type"] == PROBLEM
    assert await s3_keys(settings) == []


async def test_another_accounts_document_is_404(client):
    doc = (
        await client.post("/v1/documents", headers=ACME, json={"user_id": "u", "text": "t"})
    ).json()
    assert (await client.get(f"/v1/documents/{doc['id']}", headers=GLOBEX)).status_code == 404
    analysis = await client.post(f"/v1/documents/{doc['id']}/analyses", headers=GLOBEX, json={})
    assert analysis.status_code == 404
    assert (await client.get("/v1/documents/doc_nope", headers=ACME)).status_code == 404


async def test_with_s3_down_documents_are_503_but_analyses_are_accepted(
    settings, client, redis_server
):
    doc = (
        await client.post("/v1/documents", headers=ACME, json={"user_id": "u", "text": "t"})
    ).json()
    down = make_settings(redis_server.url, f"http://127.0.0.1:{free_port()}", anthropic_api_key="k")
    async with api_client(down) as broken:
        answer = await broken.post(
            "/v1/documents", headers=ACME, json={"user_id": "u", "text": "t"}
        )
        assert answer.status_code == 503 and answer.headers["content-type"] == PROBLEM
        assert int(answer.headers["Retry-After"]) >= 1
        queued = await broken.post(f"/v1/documents/{doc['id']}/analyses", headers=ACME, json={})
        assert queued.status_code == 202 and queued.json()["state"] == "queued"


async def test_deleting_a_document_removes_its_text_and_analyses_and_not_an_export(
    settings, client, claude, worker
):
    doc = (
        await client.post("/v1/documents", headers=ACME, json={"user_id": "u-del", "text": "t"})
    ).json()
    analysis = (
        await client.post(f"/v1/documents/{doc['id']}/analyses", headers=ACME, json={})
    ).json()
    export = (
        await client.post("/v1/exports", headers=ACME, json={"user_id": "u-del", "format": "zip"})
    ).json()

    async def done(job_id: str) -> bool:
        job = (await client.get(f"/v1/jobs/{job_id}", headers=ACME)).json()
        return job["state"] == "succeeded"

    await eventually(lambda: done(analysis["id"]))
    await eventually(lambda: done(export["id"]))
    async with open_storage(settings) as storage:
        before = {k async for k in storage.list_keys("")}
        user = "accounts/acme/users/u-del/"
        assert any(k.startswith(f"{user}analyses/{doc['id']}/") for k in before)
        assert (
            await client.delete(f"/v1/documents/{doc['id']}", headers=GLOBEX)
        ).status_code == 404
        gone = await client.delete(f"/v1/documents/{doc['id']}", headers=ACME)
        assert gone.status_code == 204 and gone.content == b""
        after = {k async for k in storage.list_keys("")}
    assert not any(k.startswith(user) for k in after)
    assert [k for k in after if k.startswith("exports/")] == [
        k for k in before if k.startswith("exports/")
    ]  # what an export wrote stays until it expires
    assert (await client.get(f"/v1/documents/{doc['id']}", headers=ACME)).status_code == 404
    assert (await client.delete(f"/v1/documents/{doc['id']}", headers=ACME)).status_code == 404
    again = await client.post(f"/v1/documents/{doc['id']}/analyses", headers=ACME, json={})
    assert again.status_code == 404
