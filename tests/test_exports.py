"""Exports against a real S3 server over HTTP: archives, presigned URLs, outages, cancel."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import time
import zipfile
from datetime import datetime

import httpx
import pytest

from jobs.engine.keys import record as record_key
from jobs.engine.store import JobStore
from jobs.exports import export_key
from jobs.exports.job import present_export
from jobs.exports.uploads import MultipartUpload, PartSink, abort_stale_uploads, abort_upload
from jobs.storage import open_storage
from tests.conftest import ACME, GLOBEX, api_client, eventually, running_worker
from tests.support.kinds import TEST_REGISTRY
from tests.support.proxy import Proxy


async def add_documents(client, user: str, n: int) -> list[dict]:
    docs = []
    for i in range(n):
        body = {"user_id": user, "title": f"doc {i}", "text": f"text {i} " + "é" * i}
        answer = await client.post("/v1/documents", headers=ACME, json=body)
        assert answer.status_code == 201
        docs.append(answer.json())
    return docs


async def export(client, user: str, fmt: str, headers=ACME, key: str | None = None) -> dict:
    extra = {"Idempotency-Key": key} if key else {}
    answer = await client.post(
        "/v1/exports", headers=headers | extra, json={"user_id": user, "format": fmt}
    )
    assert answer.status_code == 202, answer.text
    return answer.json()


async def finished(client, job_id: str, timeout: float = 60) -> dict:
    async def check():
        job = (await client.get(f"/v1/jobs/{job_id}", headers=ACME)).json()
        return job if job["state"] in ("succeeded", "failed", "cancelled") else None

    return await eventually(check, timeout=timeout)


async def s3_state(settings) -> tuple[list[str], list[dict]]:
    async with open_storage(settings) as storage:
        objects = await storage.client.list_objects_v2(Bucket=settings.s3_bucket, Prefix="exports/")
        uploads = await storage.client.list_multipart_uploads(Bucket=settings.s3_bucket)
    return [o["Key"] for o in objects.get("Contents", [])], uploads.get("Uploads", [])


def check_documents(entries: list[dict], docs: list[dict]) -> None:
    by_id = {e["id"]: e for e in entries}
    assert set(by_id) == {d["id"] for d in docs}
    for doc in docs:
        entry = by_id[doc["id"]]
        assert entry["text"].startswith(doc["title"].replace("doc", "text"))
        assert {k: entry[k] for k in ("user_id", "title", "size_bytes", "created_at")} == {
            k: doc[k] for k in ("user_id", "title", "size_bytes", "created_at")
        }


@pytest.mark.s3_servers
async def test_zip_export_of_25_documents_downloads_and_checks_out(settings, client, worker):
    docs = await add_documents(client, "u-zip", 25)
    await add_documents(client, "someone-else", 2)
    job = await finished(client, (await export(client, "u-zip", "zip"))["id"])
    assert job["state"] == "succeeded" and job["progress"] == 1.0
    result = job["result"]
    assert result["format"] == "zip" and result["documents"] == 25 and "key" not in result
    async with httpx.AsyncClient() as plain:
        download = await plain.get(result["download_url"])
    assert download.status_code == 200 and len(download.content) == result["size_bytes"]
    assert download.headers["content-type"] == "application/zip"
    assert "content-encoding" not in download.headers
    # A multipart upload's ETag: the MD5 of its parts' MD5s, and how many parts there were.
    assert re.fullmatch(r'"[0-9a-f]{32}-1"', download.headers["etag"])
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["job_id"] == job["id"] and manifest["user_id"] == "u-zip"
    assert manifest["count"] == 25 and manifest["format"] == "zip" and manifest["created_at"]
    entries = []
    for item in manifest["entries"]:
        data = archive.read(item["path"])
        assert hashlib.sha256(data).hexdigest() == item["sha256"]
        assert len(data) == item["size_bytes"] and item["path"] == f"documents/{item['id']}.json"
        entries.append(json.loads(data))
    check_documents(entries, docs)
    assert sorted(archive.namelist()) == sorted(
        ["manifest.json", *(f"documents/{d['id']}.json" for d in docs)]
    )


@pytest.mark.s3_servers
async def test_ndjson_export_is_json_lines_served_gzip_encoded(settings, client, worker, claude):
    docs = await add_documents(client, "u-nd", 25)
    analysis = (
        await client.post(f"/v1/documents/{docs[0]['id']}/analyses", headers=ACME, json={})
    ).json()
    assert (await finished(client, analysis["id"]))["state"] == "succeeded"
    job = await finished(client, (await export(client, "u-nd", "ndjson"))["id"])
    assert job["result"]["content_type"] == "application/x-ndjson"
    assert job["result"]["content_encoding"] == "gzip"
    async with httpx.AsyncClient() as plain:
        download = await plain.get(job["result"]["download_url"])
    # Stored compressed, served as NDJSON with `Content-Encoding: gzip`: a plain GET reads
    # JSON lines, and what went over the wire is the stored (compressed) object.
    assert download.headers["content-type"] == "application/x-ndjson"
    assert download.headers["content-encoding"] == "gzip"
    assert download.num_bytes_downloaded == job["result"]["size_bytes"]
    assert re.fullmatch(r'"[0-9a-f]{32}-1"', download.headers["etag"])
    async with open_storage(settings) as storage:
        stored = await storage.get_bytes(export_key("acme", job["id"], "ndjson"))
    assert gzip.decompress(stored) == download.content
    lines = download.text.splitlines()
    entries = [json.loads(line) for line in lines]
    check_documents(entries, docs)
    analysed = next(e for e in entries if e["id"] == docs[0]["id"])
    assert analysed["latest_analysis"]["state"] == "succeeded"
    assert analysed["latest_analysis"]["analysis"].startswith("Analysis of")
    assert all(e["latest_analysis"] is None for e in entries if e["id"] != docs[0]["id"])


@pytest.mark.s3_servers
async def test_user_without_documents_gets_a_valid_empty_export(client, worker):
    zipped = await finished(client, (await export(client, "nobody", "zip"))["id"])
    lines = await finished(client, (await export(client, "nobody", "ndjson"))["id"])
    async with httpx.AsyncClient() as plain:
        archive = zipfile.ZipFile(
            io.BytesIO((await plain.get(zipped["result"]["download_url"])).content)
        )
        ndjson = await plain.get(lines["result"]["download_url"])
    assert archive.namelist() == ["manifest.json"]
    assert json.loads(archive.read("manifest.json"))["count"] == 0
    assert ndjson.headers["content-encoding"] == "gzip" and ndjson.content == b""
    assert ndjson.num_bytes_downloaded == lines["result"]["size_bytes"] > 0
    assert zipped["result"]["documents"] == lines["result"]["documents"] == 0


@pytest.mark.s3_servers
async def test_presigned_url_is_fresh_at_each_lookup_and_expires(settings, s3_server):
    # A short expiry (below what the settings accept, to wait seconds, not an hour).
    brief = settings.model_copy(update={"export_url_ttl_seconds": 2})
    async with api_client(brief) as client, running_worker(brief):
        job = await finished(client, (await export(client, "nobody", "zip"))["id"])
        first = job["result"]

        async def presigned_anew() -> dict | None:
            looked_up_at = time.time()
            again = (await client.get(f"/v1/jobs/{job['id']}", headers=ACME)).json()["result"]
            again["looked_up_at"] = looked_up_at
            return again if again["download_url"] != first["download_url"] else None

        # Signed at each lookup: a lookup in a later second has a URL of its own.
        again = await eventually(presigned_anew, timeout=5, interval=0.2)
    assert "X-Amz-Expires=2&" in again["download_url"] + "&"
    assert again["download_url"].startswith(settings.s3_endpoint_url + "/")
    expires_at = datetime.fromisoformat(again["expires_at"].replace("Z", "+00:00")).timestamp()
    assert first["expires_at"] < again["expires_at"]
    assert again["looked_up_at"] + 1 <= expires_at <= again["looked_up_at"] + 3
    if not s3_server.verifies_signatures:
        return  # moto serves a presigned URL whatever its expiry: SeaweedFS checks it
    async with httpx.AsyncClient() as plain:
        assert (await plain.get(again["download_url"])).status_code == 200

        async def refused() -> bool:
            return (await plain.get(again["download_url"])).status_code == 403

        await eventually(refused, timeout=10, interval=0.2)
    assert time.time() >= expires_at - 1  # refused once expired, not before


@pytest.mark.s3_servers
async def test_download_url_is_refused_once_expired_or_altered(settings, client, worker, s3_server):
    if not s3_server.verifies_signatures:
        pytest.skip("moto serves a presigned URL whatever its signature, expiry or host")
    job = await finished(client, (await export(client, "nobody", "zip"))["id"])
    url = job["result"]["download_url"]
    async with open_storage(settings) as storage:
        stored = {"format": "zip", "size_bytes": 0, "documents": 0}
        key = export_key("acme", job["id"], "zip")
        one_second = settings.model_copy(update={"export_url_ttl_seconds": 1})
        brief = (await present_export(storage, one_second, {**stored, "key": key}))["download_url"]
    async with httpx.AsyncClient() as plain:
        assert (await plain.get(url)).status_code == 200
        # The expiry, the key and the host are all signed: a URL works only as minted, at
        # the address it was minted for (path-style at S3_ENDPOINT_URL).
        longer = url.replace("X-Amz-Expires=3600", "X-Amz-Expires=604800")
        assert longer != url and (await plain.get(longer)).status_code == 403
        other = url.replace(f"/{key}?", f"/exports/acme/{job['id']}x.zip?")
        assert other != url and (await plain.get(other)).status_code == 403
        elsewhere = url.replace("//127.0.0.1:", "//localhost:")
        assert elsewhere != url and (await plain.get(elsewhere)).status_code == 403

        async def refused() -> bool:
            return (await plain.get(brief)).status_code == 403

        await eventually(refused, timeout=10, interval=0.2)


@pytest.mark.s3_servers
async def test_janitor_aborts_the_open_uploads_of_ended_jobs_only(settings, redis, s3_server):
    """The janitor lists the open uploads under `exports/` and aborts those whose job has
    ended, or whose record is gone and which are over an hour old."""
    async with open_storage(settings) as storage:
        for job_id, state in [("job_ended", "failed"), ("job_running", "running")]:
            await redis.hset(record_key(job_id), "state", state)
        keys = [
            "exports/acme/job_ended.zip",
            "exports/acme/job_running.zip",
            "exports/acme/job_unknown.ndjson.gz",
            "accounts/acme/users/u/other.bin",
        ]
        for key in keys:
            await storage.client.create_multipart_upload(Bucket=settings.s3_bucket, Key=key)
        listed = await storage.client.list_multipart_uploads(Bucket=settings.s3_bucket)
        initiated = {u["Key"]: u["Initiated"] for u in listed["Uploads"]}
        assert set(initiated) == set(keys)
        # SeaweedFS (like S3) says when an upload began; moto dates every one 2010-11-10.
        age_s = time.time() - initiated["exports/acme/job_unknown.ndjson.gz"].timestamp()
        assert age_s < 60 or s3_server.name == "moto"
        recent = age_s < 3600

        aborted = await abort_stale_uploads(storage, JobStore(redis, settings, TEST_REGISTRY))
        left = await storage.client.list_multipart_uploads(Bucket=settings.s3_bucket)
        again = await abort_stale_uploads(storage, JobStore(redis, settings, TEST_REGISTRY))

    expected = {"exports/acme/job_running.zip", "accounts/acme/users/u/other.bin"}
    if recent:
        expected.add("exports/acme/job_unknown.ndjson.gz")
    assert {u["Key"] for u in left.get("Uploads", [])} == expected
    assert aborted == 4 - len(expected) and again == 0


@pytest.mark.s3_servers
async def test_aborting_an_upload_that_is_already_gone_is_no_error(settings):
    # A rerun aborts the upload its crashed attempt left, which may be gone by then.
    # S3 and moto answer 404 NoSuchUpload for it; SeaweedFS 204, as for an open one.
    bucket, key = settings.s3_bucket, "exports/acme/job_gone.zip"
    async with open_storage(settings) as storage:
        aborted = await storage.client.create_multipart_upload(Bucket=bucket, Key=key)
        await abort_upload(storage, key, aborted["UploadId"])
        await abort_upload(storage, key, aborted["UploadId"])
        upload = MultipartUpload(storage, key, "application/zip", 5 * 1024 * 1024)
        await upload.start()
        await upload.drain(PartSink(), final=True)
        await upload.complete()
        await upload.abort()
        uploads = await storage.client.list_multipart_uploads(Bucket=bucket)
        assert await storage.get_bytes(key) == b""
    assert uploads.get("Uploads", []) == []


@pytest.mark.s3_servers
async def test_export_survives_s3_being_unreachable_for_a_while(settings, client, s3_server):
    docs = await add_documents(client, "u-outage", 5)
    proxy = Proxy(target_port=s3_server.port).start()
    try:
        via_proxy = settings.model_copy(update={"s3_endpoint_url": proxy.url})
        proxy.set_down(True)
        async with api_client(via_proxy) as proxied, running_worker(via_proxy):
            job = await export(proxied, "u-outage", "zip")

            async def failing():
                j = (await proxied.get(f"/v1/jobs/{job['id']}", headers=ACME)).json()
                return j if j["attempts"] and j["attempts"][0].get("error") else None

            seen = await eventually(failing)
            assert seen["attempts"][0]["error"]["type"] == "s3_unavailable"
            proxy.set_down(False)
            done = await finished(proxied, job["id"])
    finally:
        proxy.stop()
    assert done["state"] == "succeeded" and done["attempt"] >= 2
    assert done["result"]["documents"] == len(docs)
    objects, uploads = await s3_state(settings)
    assert objects == [f"exports/acme/{job['id']}.zip"] and uploads == []


@pytest.mark.s3_servers
async def test_s3_outage_mid_upload_stays_transient_and_leaves_no_open_upload(
    settings, client, redis, s3_server
):
    # The outage starts after the upload did, so aborting it fails too: that must not turn
    # the attempt's transient error into a permanent one, and the upload must still go.
    docs = await add_documents(client, "u-midway", 30)
    proxy = Proxy(target_port=s3_server.port).start()
    try:
        via_proxy = settings.model_copy(update={"s3_endpoint_url": proxy.url})
        async with api_client(via_proxy) as proxied, running_worker(via_proxy):
            proxy.delay_s = 0.05
            job = await export(proxied, "u-midway", "zip")
            await eventually(lambda: redis.exists(f"lr:export-upload:{job['id']}"), timeout=30)
            proxy.set_down(True)

            async def failed_once():
                j = (await proxied.get(f"/v1/jobs/{job['id']}", headers=ACME)).json()
                return j if j["attempts"] and j["attempts"][0].get("error") else None

            seen = await eventually(failed_once)
            proxy.delay_s = 0.0
            proxy.set_down(False)
            done = await finished(proxied, job["id"])
    finally:
        proxy.stop()
    assert seen["attempts"][0]["error"]["type"] == "s3_unavailable"
    assert done["state"] == "succeeded" and done["result"]["documents"] == len(docs)
    objects, uploads = await s3_state(settings)
    assert objects == [f"exports/acme/{job['id']}.zip"] and uploads == []


@pytest.mark.s3_servers
async def test_cancel_during_export_leaves_no_object_and_no_open_upload(
    settings, client, redis, s3_server
):
    await add_documents(client, "u-cancel", 40)
    proxy = Proxy(target_port=s3_server.port).start()
    try:
        slow = settings.model_copy(update={"s3_endpoint_url": proxy.url})
        async with running_worker(slow):
            job = await export(client, "u-cancel", "zip")
            proxy.delay_s = 0.1
            await eventually(lambda: redis.exists(f"lr:export-upload:{job['id']}"), timeout=30)
            answer = await client.post(f"/v1/jobs/{job['id']}/cancel", headers=ACME)
            assert answer.status_code == 202
            done = await finished(client, job["id"])
    finally:
        proxy.stop()
    assert done["state"] == "cancelled"
    objects, uploads = await s3_state(settings)
    assert objects == [] and uploads == []


async def test_another_account_cannot_see_the_export_or_its_url(client, worker):
    job = await finished(client, (await export(client, "nobody", "zip"))["id"])
    assert (await client.get(f"/v1/jobs/{job['id']}", headers=GLOBEX)).status_code == 404
    theirs = (await client.get("/v1/jobs?kind=export", headers=GLOBEX)).json()
    assert theirs["data"] == []


async def test_export_idempotency_key_returns_the_same_job(client, redis):
    first = await export(client, "u-idem", "zip", key="export-1")
    second = await client.post(
        "/v1/exports",
        headers=ACME | {"Idempotency-Key": "export-1"},
        json={"user_id": "u-idem", "format": "zip"},
    )
    assert second.status_code == 202 and second.headers["Idempotent-Replayed"] == "true"
    assert second.json()["id"] == first["id"]
    other = await client.post(
        "/v1/exports",
        headers=ACME | {"Idempotency-Key": "export-1"},
        json={"user_id": "u-idem", "format": "ndjson"},
    )
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert await redis.zcard("arq:queue") == 1


@pytest.mark.parametrize(
    "body",
    [{"user_id": "u", "format": "tar"}, {"user_id": "../x", "format": "zip"}, {"format": "zip"}],
)
async def test_bad_export_requests_are_422(client, body):
    answer = await client.post("/v1/exports", headers=ACME, json=body)
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
