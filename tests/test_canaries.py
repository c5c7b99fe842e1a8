"""The canary job: a real job through the API, the worker and S3."""

from __future__ import annotations

from tests.conftest import ACME, ADMIN, eventually


async def test_canary_round_trips_s3_and_succeeds(client, worker):
    answer = await client.post("/v1/canaries", headers=ADMIN)
    assert answer.status_code == 202
    assert answer.json()["state"] == "queued" and answer.json()["kind"] == "canary"

    async def done():
        job = (await client.get(answer.headers["Location"], headers=ADMIN)).json()
        return job if job["state"] == "succeeded" else None

    job = await eventually(done)
    assert job["attempt"] == 1 and job["progress"] == 1.0
    assert job["result"]["s3_round_trip_ms"] > 0


async def test_canary_needs_an_operator_key(client):
    assert (await client.post("/v1/canaries", headers=ACME)).status_code == 403
