"""Webhooks end to end: a real worker delivers signed events to a local receiver."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from jobs.webhooks import EndpointStore
from jobs.webhooks.ssrf import blocked_reason
from tests.conftest import ACME, GLOBEX, api_client, eventually, running_worker
from tests.support.receiver import Receiver

PROBLEM = "application/problem+json"


@pytest.fixture
def hook_settings(settings):
    return settings.model_copy(
        update={
            "webhook_allow_private_networks": True,
            "webhook_retry_schedule": [0, 1, 1, 1],
            "webhook_timeout_seconds": 1.0,
        }
    )


@pytest.fixture
async def hook_client(hook_settings):
    async with api_client(hook_settings) as c:
        yield c


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


async def register(client, receiver, events=("analysis.completed", "analysis.failed")) -> dict:
    answer = await client.post(
        "/v1/webhook-endpoints", headers=ACME, json={"url": receiver.url, "events": list(events)}
    )
    assert answer.status_code == 201, answer.text
    endpoint = answer.json()
    assert endpoint["secret"].startswith("whsec_")
    receiver.secrets.append(endpoint["secret"])
    return endpoint


async def finished_analysis(client) -> dict:
    doc = (
        await client.post("/v1/documents", headers=ACME, json={"user_id": "u", "text": "t"})
    ).json()
    job = (await client.post(f"/v1/documents/{doc['id']}/analyses", headers=ACME, json={})).json()

    async def done():
        j = (await client.get(f"/v1/jobs/{job['id']}", headers=ACME)).json()
        return j if j["state"] in ("succeeded", "failed") else None

    return await eventually(done)


async def deliveries(client, endpoint_id, headers=ACME) -> list[dict]:
    answer = await client.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=headers)
    return answer.json()["data"]


async def test_finished_analysis_reaches_subscribed_endpoint_signed_with_the_job_as_data(
    hook_settings, hook_client, claude, receiver
):
    endpoint = await register(hook_client, receiver)
    bystander = Receiver().start()
    try:
        await register(hook_client, bystander, events=["export.completed"])
        async with running_worker(hook_settings):
            job = await finished_analysis(hook_client)
            await eventually(lambda: _count(receiver, 1))
        (request,) = receiver.received
        assert all(receiver.verified_by(request).values())
        event = request["json"]
        assert event["type"] == "analysis.completed" and event["timestamp"].endswith("Z")
        assert event["data"] == job
        assert request["headers"]["webhook-id"].startswith("msg_")
        assert bystander.received == []
    finally:
        bystander.stop()
    (delivery,) = await deliveries(hook_client, endpoint["id"])
    assert delivery["state"] == "succeeded" and delivery["event_type"] == "analysis.completed"
    assert delivery["attempts"][0]["status_code"] == 200


async def _count(receiver, n) -> bool:
    return len(receiver.received) >= n


async def test_failed_analysis_emits_analysis_failed(hook_settings, hook_client, claude, receiver):
    await register(hook_client, receiver)
    claude.script("400")
    async with running_worker(hook_settings):
        job = await finished_analysis(hook_client)
        await eventually(lambda: _count(receiver, 1))
    assert job["state"] == "failed"
    assert receiver.received[0]["json"]["type"] == "analysis.failed"
    assert receiver.received[0]["json"]["data"]["error"]["type"] == "claude_bad_request"


async def test_receiver_failing_twice_gets_the_third_attempt_with_the_same_webhook_id(
    hook_settings, hook_client, claude, receiver
):
    endpoint = await register(hook_client, receiver)
    receiver.script("500", "503")

    async def recorded() -> dict | None:
        # The third answer reached the receiver; its outcome is written just after.
        (delivery,) = await deliveries(hook_client, endpoint["id"])
        return delivery if delivery["state"] != "pending" else None

    async with running_worker(hook_settings):
        await finished_analysis(hook_client)
        await eventually(lambda: _count(receiver, 3), timeout=30)
        delivery = await eventually(recorded, timeout=10)
    ids = {r["headers"]["webhook-id"] for r in receiver.received}
    assert len(ids) == 1
    stamps = [r["headers"]["webhook-timestamp"] for r in receiver.received]
    assert all(all(receiver.verified_by(r).values()) for r in receiver.received)
    assert stamps == sorted(stamps)
    assert delivery["state"] == "succeeded"
    assert [a["status_code"] for a in delivery["attempts"]] == [200, 503, 500]  # newest first
    assert [a["attempt"] for a in delivery["attempts"]] == [3, 2, 1]
    assert all(a["latency_ms"] is not None for a in delivery["attempts"])
    assert '"answer": "503"' in delivery["attempts"][1]["response_excerpt"]


async def test_redirect_is_a_failure_and_gone_disables_the_endpoint(
    hook_settings, hook_client, claude, receiver
):
    endpoint = await register(hook_client, receiver)
    receiver.script("302", "410")
    async with running_worker(hook_settings):
        await finished_analysis(hook_client)
        await eventually(lambda: _count(receiver, 2), timeout=30)

        async def disabled():
            e = await hook_client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=ACME)
            return e.json() if e.json()["disabled"] else None

        state = await eventually(disabled)

        async def ended():
            found = await deliveries(hook_client, endpoint["id"])
            return found if found and found[0]["state"] != "pending" else None

        # The endpoint is disabled a moment before its delivery's record ends.
        (delivery,) = await eventually(ended)
    assert "410" in state["disabled_reason"]
    assert delivery["state"] == "failed"
    gone, redirect = delivery["attempts"]
    assert redirect["status_code"] == 302 and "redirect" in redirect["error"]
    assert gone["status_code"] == 410
    retry = await hook_client.post(f"/v1/webhook-deliveries/{delivery['id']}/retry", headers=ACME)
    assert retry.status_code == 409 and retry.headers["content-type"] == PROBLEM


async def test_slow_receiver_times_out_and_is_retried(hook_settings, hook_client, claude, receiver):
    endpoint = await register(hook_client, receiver)
    receiver.script("slow:3")
    async with running_worker(hook_settings):
        await finished_analysis(hook_client)
        await eventually(lambda: _count(receiver, 2), timeout=30)

        async def delivered():
            (d,) = await deliveries(hook_client, endpoint["id"])
            return d if d["state"] == "succeeded" else None

        delivery = await eventually(delivered)
    first = delivery["attempts"][-1]
    assert first["status_code"] is None and "no answer within 1s" in first["error"]


async def test_receiver_dribbling_its_answer_times_out_as_a_whole(
    hook_settings, hook_client, claude, receiver
):
    # Each byte comes well within httpx's per-read timeout; the attempt as a whole may not.
    endpoint = await register(hook_client, receiver)
    receiver.script("dribble:20")
    async with running_worker(hook_settings):
        await finished_analysis(hook_client)

        async def delivered():
            (d,) = await deliveries(hook_client, endpoint["id"])
            return d if d["state"] == "succeeded" else None

        delivery = await eventually(delivered, timeout=30)
    first = delivery["attempts"][-1]
    assert first["status_code"] is None and "no answer within 1s" in first["error"]
    assert first["latency_ms"] < 3000


async def test_both_secrets_verify_during_the_rotation_overlap(
    hook_settings, hook_client, claude, receiver
):
    endpoint = await register(hook_client, receiver)
    old = endpoint["secret"]
    rotated = await hook_client.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", headers=ACME
    )
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new != old and new.startswith("whsec_")
    receiver.secrets.append(new)
    async with running_worker(hook_settings):
        await finished_analysis(hook_client)
        await eventually(lambda: _count(receiver, 1))
    assert receiver.verified_by(receiver.received[0]) == {old: True, new: True}
    assert len(receiver.received[0]["headers"]["webhook-signature"].split(" ")) == 2


async def test_secret_is_shown_once_and_stored_encrypted(hook_client, redis, receiver):
    endpoint = await register(hook_client, receiver)
    shown = await hook_client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=ACME)
    assert "secret" not in shown.json()
    listed = (await hook_client.get("/v1/webhook-endpoints", headers=ACME)).json()["data"]
    assert [e["id"] for e in listed] == [endpoint["id"]] and "secret" not in listed[0]
    raw = await redis.hgetall(f"lr:wh:ep:{endpoint['id']}")
    secret_body = endpoint["secret"].removeprefix("whsec_").encode()
    assert not any(secret_body in value for value in raw.values())


SSRF_URLS = [
    "https://127.0.0.1/hook",
    "https://10.0.0.1/hook",
    "https://169.254.169.254/latest/meta-data",
    "https://[::1]/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://localhost/hook",
    "https://100.64.0.1/hook",
    "https://0.0.0.0/hook",
    "http://example.com/hook",  # not https
]


async def test_ssrf_guard_refuses_private_and_metadata_urls_at_registration(client):
    for url in SSRF_URLS:
        answer = await client.post(
            "/v1/webhook-endpoints", headers=ACME, json={"url": url, "events": ["export.failed"]}
        )
        assert answer.status_code == 422, url
        assert answer.json()["code"] == "unsafe_webhook_url", url


def test_blocked_address_ranges_cover_ipv4_ipv6_and_embedded_forms():
    blocked = ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
               "100.100.100.200", "224.0.0.1", "0.0.0.0", "::1", "::", "fe80::1", "fc00::1",
               "fd00:ec2::254", "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::",
               "ff02::1"]  # fmt: skip
    for address in blocked:
        assert blocked_reason(ipaddress.ip_address(address)), address
    for address in ["93.184.216.34", "2606:4700::6810:84e5", "8.8.8.8"]:
        assert blocked_reason(ipaddress.ip_address(address)) is None, address


async def test_ssrf_guard_holds_again_at_delivery(hook_settings, hook_client, claude, receiver):
    # Registered while private networks were allowed; delivered by a worker that refuses them
    # (as after a DNS change): the name is resolved and checked again before connecting.
    answer = await hook_client.post(
        "/v1/webhook-endpoints",
        headers=ACME,
        json={"url": f"https://localhost:{receiver.port}/hooks", "events": ["analysis.completed"]},
    )
    endpoint = answer.json()
    strict = hook_settings.model_copy(update={"webhook_allow_private_networks": False})
    async with running_worker(strict):
        await finished_analysis(hook_client)

        async def refused():
            found = await deliveries(hook_client, endpoint["id"])
            return found[0] if found and found[0]["attempts"] else None

        delivery = await eventually(refused)
    assert receiver.received == []
    assert delivery["attempts"][0]["error"].startswith("refused: webhook URLs must point to public")


async def test_another_account_cannot_see_or_retry_deliveries(
    hook_settings, hook_client, claude, receiver
):
    endpoint = await register(hook_client, receiver)
    async with running_worker(hook_settings):
        await finished_analysis(hook_client)
        await eventually(lambda: _count(receiver, 1))
    (delivery,) = await deliveries(hook_client, endpoint["id"])
    base = f"/v1/webhook-endpoints/{endpoint['id']}"
    assert (await hook_client.get(base, headers=GLOBEX)).status_code == 404
    assert (await hook_client.get(f"{base}/deliveries", headers=GLOBEX)).status_code == 404
    assert (await hook_client.delete(base, headers=GLOBEX)).status_code == 404
    retry = f"/v1/webhook-deliveries/{delivery['id']}/retry"
    assert (await hook_client.post(retry, headers=GLOBEX)).status_code == 404
    mine = await hook_client.post(retry, headers=ACME)
    assert mine.status_code == 202, mine.text


async def test_endpoint_failing_for_the_disable_window_is_disabled(
    hook_settings, hook_client, claude, receiver
):
    quick = hook_settings.model_copy(
        update={"webhook_disable_after_seconds": 1, "webhook_retry_schedule": [0, 2, 2]}
    )
    endpoint = await register(hook_client, receiver)
    receiver.script("500", "500", "500")
    async with running_worker(quick):
        await finished_analysis(hook_client)

        async def disabled():
            e = await hook_client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=ACME)
            return e.json() if e.json()["disabled"] else None

        state = await eventually(disabled, timeout=30)
    assert "every attempt failed" in state["disabled_reason"]
    assert len(receiver.received) == 2


async def test_unknown_event_types_and_bad_bodies_are_422(hook_client):
    bodies = [
        {"url": "http://127.0.0.1:1/x", "events": ["job.done"]},
        {"url": "http://127.0.0.1:1/x", "events": []},
        {"events": ["export.failed"]},
    ]
    for body in bodies:
        answer = await hook_client.post("/v1/webhook-endpoints", headers=ACME, json=body)
        assert answer.status_code == 422 and answer.headers["content-type"] == PROBLEM


async def test_finished_export_reaches_its_endpoint_with_a_working_download_url(
    hook_settings, hook_client, receiver
):
    await register(hook_client, receiver, events=["export.completed"])
    async with running_worker(hook_settings):
        answer = await hook_client.post(
            "/v1/exports", headers=ACME, json={"user_id": "nobody", "format": "zip"}
        )
        await eventually(lambda: _count(receiver, 1))
    (request,) = receiver.received
    assert all(receiver.verified_by(request).values())
    event = request["json"]
    job = (await hook_client.get(f"/v1/jobs/{answer.json()['id']}", headers=ACME)).json()
    assert event["type"] == "export.completed"
    fresh = ("download_url", "expires_at")  # presigned anew at each lookup
    assert {k: v for k, v in event["data"].items() if k != "result"} == {
        k: v for k, v in job.items() if k != "result"
    }
    assert {k: v for k, v in event["data"]["result"].items() if k not in fresh} == {
        k: v for k, v in job["result"].items() if k not in fresh
    }
    async with httpx.AsyncClient() as plain:
        assert (await plain.get(event["data"]["result"]["download_url"])).status_code == 200
    # The delivery keeps the event, never a presigned URL: each attempt presigns its own.
    redis = hook_client.app.state.redis
    stored = [
        await redis.hget(key, "args") async for key in redis.scan_iter("lr:job:whd_*", _type="HASH")
    ]
    stored = [args for args in stored if args]
    assert stored and not any(b"download_url" in args or b"Signature" in args for args in stored)


async def test_event_half_published_when_the_worker_stops_goes_back_to_the_outbox(settings, redis):
    async with running_worker(settings) as worker:

        async def started():
            return worker.ctx.get("deps")

        worker_id = (await eventually(started)).worker_id
        # What the publisher holds while it fans an event out: it has taken it from the
        # outbox into its own list, and the worker is told to stop right then.
        await redis.rpush(f"lr:outbox:{worker_id}", "job_half_published")
    assert await redis.lrange("lr:outbox", 0, -1) == [b"job_half_published"]
    assert not await redis.exists(f"lr:outbox:{worker_id}")


async def published(client, endpoint: dict, event_id: str) -> dict:
    """An event fanned out to the endpoint (as a finished job would be); its delivery."""
    created = await client.app.state.deliveries.publish(
        "acme", "analysis.completed", event_id, {"id": event_id}
    )
    assert created == 1
    (delivery,) = [d for d in await all_deliveries(client, endpoint) if d["event_id"] == event_id]
    return delivery


async def all_deliveries(client, endpoint: dict) -> list[dict]:
    return await deliveries(client, endpoint["id"])


async def test_deleting_an_endpoint_mid_attempt_ends_its_deliveries_and_leaves_no_trace(
    hook_settings, hook_client, redis, receiver
):
    patient = hook_settings.model_copy(update={"webhook_timeout_seconds": 4.0})
    endpoint = await register(hook_client, receiver)
    # The attempt is in flight when the endpoint goes, and then fails (no answer in time):
    # its failure must not write the deleted endpoint back.
    receiver.script("slow:8")
    delivery = await published(hook_client, endpoint, "evt_in_flight")
    waiting = await published(hook_client, endpoint, "evt_waiting_later")
    async with running_worker(patient):
        await eventually(lambda: _count(receiver, 1))
        assert (
            await hook_client.delete(f"/v1/webhook-endpoints/{endpoint['id']}", headers=ACME)
        ).status_code == 204

        async def ended() -> bool:
            store = hook_client.app.state.store
            records = [await store.get(d["id"]) for d in (delivery, waiting)]
            return all(r.state.finished for r in records)

        await eventually(ended)
    # The in-flight attempt did not bring the endpoint back as a partial hash.
    assert not await redis.exists(f"lr:wh:ep:{endpoint['id']}")
    assert not await redis.exists(f"lr:wh:ep:{endpoint['id']}:deliveries")
    got = await hook_client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=ACME)
    assert got.status_code == 404
    health = (await hook_client.get("/health/queues")).json()
    assert health["by_kind"]["webhook"] == {"queued": 0, "retrying": 0, "running": 0}


async def test_a_failed_retry_by_hand_keeps_the_delivery_s_schedule(
    hook_settings, hook_client, receiver
):
    scheduled = hook_settings.model_copy(update={"webhook_retry_schedule": [0, 3600, 3600]})
    async with api_client(scheduled) as client:
        endpoint = await register(client, receiver)
        receiver.script("500", "500", "200")
        delivery = await published(client, endpoint, "evt_manual")
        async with running_worker(scheduled):

            async def attempts(n: int) -> dict | None:
                (found,) = await deliveries(client, endpoint["id"])
                return found if len(found["attempts"]) >= n else None

            first = await eventually(lambda: attempts(1))
            assert first["state"] == "pending" and first["next_attempt_at"]
            retry = await client.post(
                f"/v1/webhook-deliveries/{delivery['id']}/retry", headers=ACME
            )
            assert retry.status_code == 202
            second = await eventually(lambda: attempts(2))
        # The retry by hand failed too: the delivery is still pending, its next attempt
        # scheduled an hour out (the schedule's third entry), not ended.
        assert second["state"] == "pending", second
        assert second["next_attempt_at"] is not None
        record = await client.app.state.store.get(delivery["id"])
        assert record.max_attempts == 3 and record.state == "retrying"


async def test_a_retry_by_hand_of_an_ended_delivery_makes_exactly_one_more_attempt(
    hook_settings, hook_client, receiver
):
    endpoint = await register(hook_client, receiver)
    receiver.script("500", "500", "500", "500", "500")
    delivery = await published(hook_client, endpoint, "evt_ended")
    async with running_worker(hook_settings):

        async def state(wanted: str, n: int) -> dict | None:
            (found,) = await deliveries(hook_client, endpoint["id"])
            return found if found["state"] == wanted and len(found["attempts"]) == n else None

        await eventually(lambda: state("failed", 4), timeout=30)  # its whole schedule
        retry = f"/v1/webhook-deliveries/{delivery['id']}/retry"
        assert (await hook_client.post(retry, headers=ACME)).status_code == 202
        again = await eventually(lambda: state("failed", 5))
    assert len(receiver.received) == 5
    assert again["attempts"][0]["status_code"] == 500


async def test_an_attempt_ending_after_its_endpoint_was_deleted_writes_nothing_back(
    hook_settings, redis, receiver
):
    endpoints = EndpointStore(redis, hook_settings)
    endpoint, _ = await endpoints.create("acme", receiver.url, ["analysis.completed"])
    await endpoints.delete(endpoint)
    # What an attempt in flight reports when it ends: a failure, a success, a 410.
    assert await endpoints.failing_since(endpoint) is None
    endpoint.failing_since = 1
    await endpoints.delivered(endpoint)
    await endpoints.disable(endpoint, "the endpoint answered 410 Gone")
    assert not await redis.exists(f"lr:wh:ep:{endpoint.id}")
    assert await endpoints.get(endpoint.id) is None
