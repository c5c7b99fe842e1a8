"""The Python client (`client/`, `longrun_client`) against the running API: a uvicorn
subprocess, a real arq worker subprocess, a webhook receiver, and a small HTTP front
between client and API that can answer 503/429, drop a request, lose an answer, or break
the event stream, so that retries and the polling fallback happen on the wire."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any

import httpx
import pytest
from longrun_client import (
    APIConnectionError,
    AsyncLongrunClient,
    Conflict,
    Forbidden,
    InvalidWebhookSignature,
    JobCancelled,
    JobFailed,
    LongrunClient,
    NotFound,
    RateLimited,
    StaleWebhookTimestamp,
    Unauthorized,
    ValidationFailed,
    WaitTimeout,
    verify_webhook,
)
from redis.asyncio import Redis
from standardwebhooks import Webhook

from api.main import create_app
from jobs.storage import open_storage
from tests.conftest import ADMIN_KEY, make_settings
from tests.support.api_server import ApiServer
from tests.support.processes import ROOT, kill, start_worker
from tests.support.receiver import Receiver
from tests.support.services import wait_until
from tests.support.threaded import ThreadedServer

ACCOUNTS = [f"client{n}" for n in range(30)]


def key_of(account: str) -> str:
    return f"{account}-key"


# The front: an HTTP/1.1 proxy that answers one request per connection, with faults on cue.


@dataclass
class Fault:
    """What the front does, `times` times, to requests matching `method` and `path` (a
    regular expression): `answer` a status with headers, `drop` the request unanswered,
    `swallow` the API's answer (the API did the work; the client never hears), `cut` an
    event stream right after its headers, or pass the answer on as a `newer` API would
    send it (a member more, an optional one left out)."""

    method: str
    path: str
    action: str
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    at: float
    fault: str | None


@dataclass
class Front:
    upstream_port: int
    port: int = 0
    faults: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _runner: ThreadedServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Front:
        self._runner = ThreadedServer(self._handle, 0, "client-front")
        self.port = self._runner.start()
        return self

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.stop()

    def inject(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def reset(self) -> None:
        with self._lock:
            self.faults.clear()
            self.seen.clear()

    def requests(self, method: str, path: str) -> list[Seen]:
        """The requests seen whose method matches and whose path matches `path` in full."""
        with self._lock:
            return [s for s in self.seen if s.method == method and re.fullmatch(path, s.path)]

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and re.fullmatch(fault.path, path):
                    fault.times -= 1
                    return fault
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            path = target.split("?", 1)[0]
            fault = self._fault_for(method, path)
            with self._lock:
                self.seen.append(
                    Seen(method, path, headers, time.monotonic(), fault and fault.action)
                )
            if fault is None or fault.action in ("swallow", "newer"):
                answer = await self._forward(lines, body)
                if fault is None:
                    writer.write(answer)
                elif fault.action == "newer":
                    writer.write(as_newer_api(answer))
            elif fault.action == "answer":
                problem = json.dumps(
                    {"type": "about:blank", "title": "Injected", "status": fault.status}
                ).encode()
                extra = "".join(f"{k}: {v}\r\n" for k, v in fault.headers.items())
                writer.write(
                    f"HTTP/1.1 {fault.status} Injected\r\ncontent-type: application/problem+json"
                    f"\r\ncontent-length: {len(problem)}\r\nconnection: close\r\n{extra}\r\n"
                    .encode() + problem
                )  # fmt: skip
            elif fault.action == "cut":
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _forward(self, lines: list[str], body: bytes) -> bytes:
        """Send the request to the API (asking it to close after answering) and return its
        whole answer, streamed bodies included."""
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        kept = [line for line in lines[1:] if line and not line.lower().startswith("connection:")]
        head = "\r\n".join([lines[0], *kept, "connection: close", "", ""])
        up_writer.write(head.encode("latin-1") + body)
        await up_writer.drain()
        answer = await up_reader.read()
        up_writer.close()
        return answer


def as_newer_api(answer: bytes) -> bytes:
    """A JSON answer with a member this client does not know, and without `stage`."""
    head, _, body = answer.partition(b"\r\n\r\n")
    data = json.loads(body)
    data["priority"] = {"level": "high"}
    data.pop("stage", None)
    body = json.dumps(data).encode()
    head = re.sub(rb"(?im)^content-length: \d+", b"content-length: %d" % len(body), head)
    return head + b"\r\n\r\n" + body


# The stack, once for this module; each test works in an account of its own.


@dataclass
class Stack:
    api: ApiServer
    front: Front
    receiver: Receiver
    redis_url: str
    accounts: Iterator[str]

    @property
    def url(self) -> str:
        return self.front.url


@pytest.fixture(scope="module")
async def stack(redis_server, s3_server, fake_claude, tmp_path_factory) -> AsyncIterator[Stack]:
    settings = make_settings(
        redis_server.url,
        s3_server.url,
        anthropic_api_key="sk-ant-test-key",
        anthropic_base_url=fake_claude.url,
        api_keys={a: [f"plain:{key_of(a)}"] for a in ACCOUNTS},
        webhook_allow_private_networks=True,
        webhook_retry_schedule=[0, 1, 1],
        webhook_timeout_seconds=2.0,
    )
    redis = Redis.from_url(redis_server.url)
    await redis.flushall()
    s3_server.reset()
    async with open_storage(settings) as storage:
        await storage.ensure_bucket()
    logs = tmp_path_factory.mktemp("client-stack")
    api = ApiServer(settings, logs / "api.log")
    worker = start_worker(settings, logs / "worker.log")
    front = Front(api.port).start()
    receiver = Receiver().start()
    try:

        def worker_online() -> bool:
            with urllib.request.urlopen(f"{api.url}/health/queues", timeout=2) as answer:
                return json.loads(answer.read())["workers_online"] >= 1

        wait_until(worker_online, 30, "the worker to come online")
        yield Stack(api, front, receiver, redis_server.url, iter(ACCOUNTS))
    finally:
        kill(worker)
        api.stop()
        front.stop()
        receiver.stop()
        await redis.aclose()


@pytest.fixture
def account(stack: Stack) -> str:
    """An account no other test uses, and a front without faults."""
    stack.front.reset()
    return next(stack.accounts)


@pytest.fixture
def client(stack: Stack, account: str) -> Iterator[LongrunClient]:
    with LongrunClient(stack.url, key_of(account), timeout=10) as c:
        yield c


@pytest.fixture
async def aclient(stack: Stack, account: str) -> AsyncIterator[AsyncLongrunClient]:
    async with AsyncLongrunClient(stack.url, key_of(account), timeout=10) as c:
        yield c


def slow_text(seconds: float) -> str:
    """A document whose analysis Claude (the fake) answers after `seconds`."""
    return f"Slow. fake-answers[{uuid.uuid4().hex}]=slow:{seconds:g}"


def spacing(seen: list[Seen]) -> list[float]:
    return [b.at - a.at for a, b in itertools.pairwise(seen)]


# Both clients end to end: the event stream, and polling when the stream fails.


def test_sync_client_exports_documents_and_waits_on_the_event_stream(stack, client, account):
    first = client.create_document("ann", "First text", title="One")
    upload = client.upload_document(
        "ann", io.BytesIO("Zweiter Text, äöü".encode()), filename="b.txt"
    )
    assert (first.title, first.user_id, first.size_bytes) == ("One", "ann", len("First text"))
    assert upload.title == "b.txt" and upload.size_bytes == len("Zweiter Text, äöü".encode())
    assert client.get_document(first.id) == first

    job = client.create_export("ann", "zip")
    assert job.kind == "export" and job.state == "queued" and not job.replayed
    assert job.idempotency_key and job.retry_after == 1
    done = client.wait(job, timeout=30)

    assert done.id == job.id and done.state == "succeeded" and done.finished
    assert done.result["documents"] == 2 and done.finished_at is not None
    archive = zipfile.ZipFile(io.BytesIO(httpx.get(done.result["download_url"]).content))
    manifest = json.loads(archive.read("manifest.json"))
    assert {e["id"] for e in manifest["entries"]} == {first.id, upload.id}
    # It followed the stream and never polled.
    assert len(stack.front.requests("GET", f"/v1/jobs/{job.id}/events")) == 1
    assert stack.front.requests("GET", f"/v1/jobs/{job.id}") == []
    # The stream of a finished job is its final snapshot.
    assert [j.state for j in client.job_events(job.id)] == ["succeeded"]


async def test_async_client_analyses_a_document_and_waits_on_the_event_stream(
    stack, aclient, account
):
    document = await aclient.create_document("bo", "A text for Claude")
    job = await aclient.create_analysis(document.id, instructions="Summarise")
    done = await aclient.wait(job.id, timeout=30, raise_on_failure=True)

    assert done.kind == "analysis" and done.state == "succeeded"
    assert done.result["document_id"] == document.id and done.result["analysis"]
    latest = (await aclient.get_document(document.id)).latest_analysis
    assert latest is not None and latest.job_id == job.id and latest.analysis
    usage = await aclient.get_usage()
    assert [m.model for m in usage.data] == [done.result["model"]]
    assert usage.data[0].input_tokens > 0 and usage.data[0].output_tokens > 0
    assert len(stack.front.requests("GET", f"/v1/jobs/{job.id}/events")) == 1
    assert stack.front.requests("GET", f"/v1/jobs/{job.id}") == []


def test_sync_wait_polls_after_retry_after_when_the_stream_cannot_be_opened(stack, client, account):
    stack.front.inject(Fault("GET", r"/v1/jobs/[^/]+/events", "answer", status=502))
    document = client.create_document("cy", slow_text(2.5))
    job = client.create_analysis(document.id)

    done = client.wait(job, timeout=30)

    assert done.state == "succeeded"
    assert [s.fault for s in stack.front.requests("GET", f"/v1/jobs/{job.id}/events")] == ["answer"]
    polls = stack.front.requests("GET", f"/v1/jobs/{job.id}")
    assert len(polls) >= 2
    # Retry-After is 1 s while running (2 s while queued): never sooner than that.
    assert min(spacing(polls)) >= 0.9


async def test_async_wait_polls_when_the_stream_breaks(stack, aclient, account):
    stack.front.inject(Fault("GET", r"/v1/jobs/[^/]+/events", "cut"))
    document = await aclient.create_document("di", slow_text(2.5))
    job = await aclient.create_analysis(document.id)

    done = await aclient.wait(job, timeout=30)

    assert done.state == "succeeded" and done.id == job.id
    assert [s.fault for s in stack.front.requests("GET", f"/v1/jobs/{job.id}/events")] == ["cut"]
    polls = stack.front.requests("GET", f"/v1/jobs/{job.id}")
    assert len(polls) >= 2 and min(spacing(polls)) >= 0.9


async def test_wait_gives_up_at_its_timeout_and_can_raise_on_a_cancelled_job(
    stack, aclient, account
):
    document = await aclient.create_document("ed", slow_text(4))
    job = await aclient.create_analysis(document.id)

    started = time.monotonic()
    with pytest.raises(WaitTimeout) as timed_out:
        await aclient.wait(job, timeout=1.0)
    assert 0.9 <= time.monotonic() - started < 5
    assert timed_out.value.job is not None and timed_out.value.job.state in ("queued", "running")
    assert isinstance(timed_out.value, TimeoutError)

    cancelling = await aclient.cancel_job(job.id)
    assert cancelling.id == job.id
    with pytest.raises(JobCancelled) as cancelled:
        await aclient.wait(cancelling, timeout=30, raise_on_failure=True)
    assert cancelled.value.job.state == "cancelled"
    assert (await aclient.wait(job.id, timeout=5)).state == "cancelled"


# Idempotent retries on the wire.


def test_the_same_idempotency_key_returns_the_same_job_replayed(stack, client, account):
    first = client.create_export("fay", "ndjson", idempotency_key="export-fay-1")
    again = client.create_export("fay", "ndjson", idempotency_key="export-fay-1")

    assert again.id == first.id and again.idempotency_key == "export-fay-1"
    assert (first.replayed, again.replayed) == (False, True)
    with pytest.raises(ValidationFailed) as refused:
        client.create_export("fay", "zip", idempotency_key="export-fay-1")
    assert refused.value.status == 422
    assert [j.id for j in client.iter_jobs()] == [first.id]


def test_an_enqueue_whose_answer_was_lost_is_sent_again_with_its_key(stack, client, account):
    stack.front.inject(Fault("POST", "/v1/exports", "swallow"))

    job = client.create_export("gus", "zip")

    sent = stack.front.requests("POST", "/v1/exports")
    assert [s.fault for s in sent] == ["swallow", None]
    assert sent[0].headers["idempotency-key"] == sent[1].headers["idempotency-key"]
    assert sent[0].headers["idempotency-key"] == job.idempotency_key
    # The API made the job on the first request; the retry got that job back.
    assert job.replayed
    assert [j.id for j in client.iter_jobs()] == [job.id]


def test_a_dropped_request_is_retried_only_when_it_is_safe_to_repeat(stack, client, account):
    stack.front.inject(Fault("POST", "/v1/documents", "drop"), Fault("POST", "/v1/exports", "drop"))
    # A document POST has no Idempotency-Key: sending it again could store it twice.
    with pytest.raises(APIConnectionError):
        client.create_document("hal", "text")
    assert len(stack.front.requests("POST", "/v1/documents")) == 1

    job = client.create_export("hal", "zip")
    assert [s.fault for s in stack.front.requests("POST", "/v1/exports")] == ["drop", None]
    assert not job.replayed  # the dropped request never reached the API


async def test_a_503_is_retried_after_its_retry_after_with_the_same_key(stack, aclient, account):
    stack.front.inject(
        Fault("POST", "/v1/exports", "answer", status=503, headers={"Retry-After": "1"})
    )

    job = await aclient.create_export("ivy", "zip")

    sent = stack.front.requests("POST", "/v1/exports")
    assert [s.fault for s in sent] == ["answer", None]
    assert spacing(sent)[0] >= 1.0
    assert sent[0].headers["idempotency-key"] == sent[1].headers["idempotency-key"]
    assert not job.replayed
    assert [j.id async for j in aclient.iter_jobs()] == [job.id]


def test_a_429_is_retried_after_an_http_date_and_raised_once_retries_run_out(
    stack, client, account
):
    job = client.create_export("jo", "zip")
    path = f"/v1/jobs/{job.id}"
    when = formatdate(time.time() + 2, usegmt=True)  # whole seconds: 1 to 2 s from now
    stack.front.inject(Fault("GET", path, "answer", status=429, headers={"Retry-After": when}))
    assert client.get_job(job.id).id == job.id
    gets = stack.front.requests("GET", path)
    assert [s.fault for s in gets] == ["answer", None] and spacing(gets)[0] >= 0.9

    stack.front.reset()
    stack.front.inject(
        Fault("GET", path, "answer", status=429, headers={"Retry-After": "1"}, times=5)
    )
    impatient = LongrunClient(stack.url, key_of(account), max_retries=1)
    with impatient, pytest.raises(RateLimited) as limited:
        impatient.get_job(job.id)
    assert limited.value.status == 429 and limited.value.retry_after == 1.0
    assert limited.value.title == "Injected"
    assert len(stack.front.requests("GET", path)) == 2


def test_a_newer_api_with_more_members_and_fewer_does_not_break_the_client(stack, client, account):
    job = client.create_export("kim", "zip")
    stack.front.inject(Fault("GET", f"/v1/jobs/{job.id}", "newer"))

    seen = client.get_job(job.id)

    assert seen.id == job.id and seen.kind == "export" and seen.stage is None
    assert seen.extra == {"priority": {"level": "high"}}
    assert seen.raw["priority"] == {"level": "high"} and "stage" not in seen.raw
    assert "priority" not in client.get_job(job.id).raw  # the front's doing, not the API's


# Lists and errors.


async def test_iteration_follows_next_cursor_across_pages(stack, aclient, account):
    made = [(await aclient.create_export(f"u{n}", "zip")).id for n in range(7)]

    page = await aclient.list_jobs(limit=3)
    assert len(page.data) == 3 and set(j.id for j in page.data) < set(made) and page.next_cursor

    stack.front.reset()
    jobs = [j async for j in aclient.iter_jobs(page_size=3)]
    assert sorted(j.id for j in jobs) == sorted(made) and len(jobs) == len(made)
    assert [j.created_at for j in jobs] == sorted((j.created_at for j in jobs), reverse=True)
    assert len(stack.front.requests("GET", "/v1/jobs")) == 3  # 3 + 3 + 1
    with LongrunClient(stack.url, key_of(account)) as sync:
        exports = [j.id for j in sync.iter_jobs(kind="export", page_size=2)]
        assert sorted(exports) == sorted(made) and len(exports) == len(made)
        assert list(sync.iter_jobs(kind="analysis")) == []


def test_problem_answers_raise_the_matching_exceptions(stack, client, account):
    with pytest.raises(NotFound) as missing:
        client.get_job("job_01J00000000000000000000000")
    error = missing.value
    assert error.status == 404 and error.type.endswith("/not-found") and error.code == "not_found"
    assert error.title and error.detail == "no such job"
    assert error.instance == "/v1/jobs/job_01J00000000000000000000000"

    with pytest.raises(ValidationFailed) as invalid:
        client.create_export("kit", "tar")  # type: ignore[arg-type]
    assert invalid.value.errors and invalid.value.errors[0]["loc"][-1] == "format"

    job = client.create_export("kit", "zip")
    client.wait(job, timeout=30)
    with pytest.raises(Conflict) as ended:
        client.cancel_job(job.id)
    assert ended.value.extra["state"] == "succeeded"

    with pytest.raises(Forbidden):
        client.list_dead_letters()
    with LongrunClient(stack.url, "not-a-key") as stranger, pytest.raises(Unauthorized):
        stranger.get_job(job.id)
    with pytest.raises(NotFound):
        client.get_document("doc_nope/../../jobs")


# Webhooks.


def test_verify_webhook_accepts_a_real_delivery_and_refuses_a_tampered_one(stack, client, account):
    receiver = stack.receiver
    endpoint = client.create_webhook_endpoint(receiver.url, ["export.completed"])
    assert endpoint.secret and endpoint.secret.startswith("whsec_")
    assert client.get_webhook_endpoint(endpoint.id).secret is None
    assert [e.id for e in client.list_webhook_endpoints().data] == [endpoint.id]

    job = client.wait(client.create_export("lu", "zip"), timeout=30)
    request = wait_until(lambda: _delivery_of(receiver, job.id), 30, "the webhook")

    event = verify_webhook(request["body"], request["headers"], endpoint.secret)
    assert event.type == "export.completed" and event.job.id == job.id
    assert event.job.state == "succeeded" and event.webhook_id == request["headers"]["webhook-id"]
    assert event.timestamp is not None

    tampered = request["body"].replace(b'"succeeded"', b'"failed"')
    with pytest.raises(InvalidWebhookSignature):
        verify_webhook(tampered, request["headers"], endpoint.secret)
    other = "whsec_" + "A" * 43 + "="
    with pytest.raises(InvalidWebhookSignature):
        verify_webhook(request["body"], request["headers"], other)
    stale = {**request["headers"], "webhook-timestamp": str(int(time.time()) - 600)}
    with pytest.raises(StaleWebhookTimestamp):
        verify_webhook(request["body"], stale, endpoint.secret)

    (delivery,) = client.list_deliveries(endpoint.id).data
    assert delivery.webhook_id == event.webhook_id and delivery.state == "succeeded"
    assert delivery.attempts[0].status_code == 200
    retried = client.retry_delivery(delivery.id)
    assert retried.id == delivery.id
    wait_until(lambda: len(_deliveries_of(receiver, job.id)) == 2, 30, "the retried webhook")


def test_verify_webhook_accepts_both_signatures_during_a_secret_rotation(stack, client, account):
    receiver = stack.receiver
    endpoint = client.create_webhook_endpoint(receiver.url, ["export.completed"])
    rotated = client.rotate_webhook_secret(endpoint.id)
    assert rotated.secret and rotated.secret != endpoint.secret

    job = client.wait(client.create_export("mo", "zip"), timeout=30)
    request = wait_until(lambda: _delivery_of(receiver, job.id), 30, "the webhook")

    assert len(request["headers"]["webhook-signature"].split(" ")) == 2
    for secrets in (endpoint.secret, rotated.secret, [other_secret(), rotated.secret]):
        assert verify_webhook(request["body"], request["headers"], secrets).job.id == job.id
    with pytest.raises(InvalidWebhookSignature):
        verify_webhook(request["body"], request["headers"], [other_secret()])

    client.delete_webhook_endpoint(endpoint.id)
    with pytest.raises(NotFound):
        client.get_webhook_endpoint(endpoint.id)
    assert client.list_webhook_endpoints().data == []


def test_verify_webhook_reads_a_request_signed_now_by_standardwebhooks():
    secret = other_secret()
    body = json.dumps({"type": "export.failed", "timestamp": "2025-01-02T03:04:05.000Z",
                       "data": {"id": "job_x", "kind": "export", "state": "failed"}})  # fmt: skip
    now = time.time()
    headers = {
        "Webhook-Id": "msg_1",
        "Webhook-Timestamp": str(int(now)),
        "Webhook-Signature": Webhook(secret).sign("msg_1", _utc(now), body),
    }
    event = verify_webhook(body.encode(), headers, secret)
    assert event.type == "export.failed" and event.job.state == "failed"
    assert event.timestamp is not None and event.timestamp.year == 2025


def other_secret() -> str:
    return "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _deliveries_of(receiver: Receiver, job_id: str) -> list[dict[str, Any]]:
    return [
        r for r in list(receiver.received) if (r["json"] or {}).get("data", {}).get("id") == job_id
    ]


def _delivery_of(receiver: Receiver, job_id: str) -> dict[str, Any] | None:
    found = _deliveries_of(receiver, job_id)
    return found[0] if found else None


# Operators.


async def test_operator_replays_a_dead_letter_and_runs_a_canary(stack, aclient, account):
    document = await aclient.create_document("ned", f"fake-answers[{uuid.uuid4().hex}]=400")
    job = await aclient.create_analysis(document.id)
    with pytest.raises(JobFailed) as failed:
        await aclient.wait(job, timeout=30, raise_on_failure=True)
    assert failed.value.job.error is not None
    assert failed.value.job.error.type == "claude_bad_request"

    async with AsyncLongrunClient(stack.url, ADMIN_KEY) as admin:
        letters = [d async for d in admin.iter_dead_letters(account=account)]
        assert [d.id for d in letters] == [job.id]
        letter = await admin.get_dead_letter(job.id)
        assert letter.account == account and letter.arguments["document_id"] == document.id
        replay = await admin.replay_dead_letter(job.id)
        assert replay.replay_of == job.id and replay.id != job.id
        assert (await admin.wait(replay, timeout=30)).state == "succeeded"
        with pytest.raises(Conflict):
            await admin.replay_dead_letter(job.id)
        canary = await admin.create_canary()
        assert (await admin.wait(canary, timeout=30, raise_on_failure=True)).succeeded

    # The account sees its replayed job too.
    assert (await aclient.get_job(replay.id)).state == "succeeded"


async def test_operator_pauses_an_account_and_its_job_runs_once_resumed(stack, aclient, account):
    async with AsyncLongrunClient(stack.url, ADMIN_KEY) as admin:
        paused = await admin.pause_account(account)
        assert account in paused.accounts
        assert account in (await admin.get_paused()).accounts
        await aclient.create_document("pia", "Paused for a while")
        job = await aclient.create_export("pia", "zip")
        # Accepted and queued while paused: another account's export, queued after it,
        # runs to the end while it does not start.
        other = next(stack.accounts)
        async with AsyncLongrunClient(stack.url, key_of(other), timeout=10) as neighbour:
            await neighbour.create_document("pia", "Not paused")
            after = await neighbour.create_export("pia", "zip")
            assert (await neighbour.wait(after, timeout=30, raise_on_failure=True)).succeeded
        assert (await aclient.get_job(job.id)).state == "queued"
        resumed = await admin.resume_account(account)
        assert account not in resumed.accounts
        assert (await aclient.wait(job, timeout=30, raise_on_failure=True)).succeeded

        assert "export" in (await admin.pause_kind("export")).kinds
        assert "export" not in (await admin.resume_kind("export")).kinds
    with pytest.raises(Forbidden):
        await aclient.pause_kind("export")


# Analysis batches and deleting a document.


def test_an_analysis_batch_is_waited_on_and_its_results_read_page_by_page(stack, client, account):
    documents = [client.create_document("bea", f"Batch text number {n}") for n in range(3)]
    job = client.create_analysis_batch([d.id for d in documents], instructions="One line")
    assert job.kind == "analysis_batch" and job.idempotency_key
    again = client.create_analysis_batch(
        [d.id for d in documents], instructions="One line", idempotency_key=job.idempotency_key
    )
    assert again.id == job.id and again.replayed

    done = client.wait(job, timeout=60, raise_on_failure=True)
    assert done.result["succeeded"] == 3
    first = client.list_batch_results(job.id, limit=2)
    assert len(first.data) == 2 and first.next_cursor
    results = list(client.iter_batch_results(job.id, page_size=2))
    assert [r.document_id for r in results] == [d.id for d in documents]
    assert all(r.state == "succeeded" and r.analysis and r.model for r in results)
    assert all(r.usage["input_tokens"] > 0 for r in results)
    with pytest.raises(NotFound):
        client.list_batch_results(client.create_export("bea", "zip").id)


def test_a_deleted_document_is_gone(stack, client, account):
    document = client.create_document("dee", "To be deleted")
    client.delete_document(document.id)
    with pytest.raises(NotFound):
        client.get_document(document.id)
    with pytest.raises(NotFound):
        client.delete_document(document.id)


# Every route has its method: a route added to the API without one fails here.

CLIENT_METHODS = {
    ("POST", "/v1/documents"): ("create_document", "upload_document"),
    ("GET", "/v1/documents/{doc_id}"): ("get_document",),
    ("DELETE", "/v1/documents/{doc_id}"): ("delete_document",),
    ("POST", "/v1/documents/{doc_id}/analyses"): ("create_analysis",),
    ("POST", "/v1/analysis-batches"): ("create_analysis_batch",),
    ("GET", "/v1/analysis-batches/{job_id}/results"): (
        "list_batch_results",
        "iter_batch_results",
    ),
    ("POST", "/v1/exports"): ("create_export",),
    ("GET", "/v1/jobs/{job_id}"): ("get_job", "wait"),
    ("GET", "/v1/jobs"): ("list_jobs", "iter_jobs"),
    ("POST", "/v1/jobs/{job_id}/cancel"): ("cancel_job",),
    ("GET", "/v1/jobs/{job_id}/events"): ("job_events", "wait"),
    ("POST", "/v1/webhook-endpoints"): ("create_webhook_endpoint",),
    ("GET", "/v1/webhook-endpoints"): ("list_webhook_endpoints",),
    ("GET", "/v1/webhook-endpoints/{endpoint_id}"): ("get_webhook_endpoint",),
    ("DELETE", "/v1/webhook-endpoints/{endpoint_id}"): ("delete_webhook_endpoint",),
    ("POST", "/v1/webhook-endpoints/{endpoint_id}/rotate-secret"): ("rotate_webhook_secret",),
    ("GET", "/v1/webhook-endpoints/{endpoint_id}/deliveries"): (
        "list_deliveries",
        "iter_deliveries",
    ),
    ("POST", "/v1/webhook-deliveries/{delivery_id}/retry"): ("retry_delivery",),
    ("GET", "/v1/usage"): ("get_usage",),
    ("GET", "/v1/dead-letters"): ("list_dead_letters", "iter_dead_letters"),
    ("GET", "/v1/dead-letters/{job_id}"): ("get_dead_letter",),
    ("POST", "/v1/dead-letters/{job_id}/replay"): ("replay_dead_letter",),
    ("POST", "/v1/canaries"): ("create_canary",),
    ("GET", "/v1/queues/paused"): ("get_paused",),
    ("POST", "/v1/queues/kinds/{kind}/pause"): ("pause_kind",),
    ("POST", "/v1/queues/kinds/{kind}/resume"): ("resume_kind",),
    ("POST", "/v1/queues/accounts/{account}/pause"): ("pause_account",),
    ("POST", "/v1/queues/accounts/{account}/resume"): ("resume_account",),
}


def test_every_route_of_the_api_has_a_method_on_both_clients():
    # Building the app connects to nothing; its OpenAPI document lists every route.
    app = create_app(make_settings("redis://127.0.0.1:9/0", "http://127.0.0.1:9"))
    operations = {
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        for method in item
        # Probes for load balancers and monitoring, not for integrators.
        if not path.startswith("/health/")
    }
    assert operations == set(CLIENT_METHODS)
    for names in CLIENT_METHODS.values():
        for name in names:
            assert callable(getattr(LongrunClient, name, None)), name
            assert callable(getattr(AsyncLongrunClient, name, None)), name


# The README's example, run as written.


def readme_examples() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python client\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)\n```", section, re.S)


def test_readme_python_client_example_runs_against_the_api(stack, client, account, tmp_path):
    script, receiver_code = readme_examples()
    env = {"PATH": "/usr/bin:/bin", "LONGRUN_URL": stack.url, "LONGRUN_API_KEY": key_of(account)}
    ran = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,  # away from the project: the client is all it imports
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    assert "analysis: Analysis of" in ran.stdout
    assert re.search(r"export: 1 documents at http://\S+", ran.stdout), ran.stdout

    endpoint = client.create_webhook_endpoint(stack.receiver.url, ["export.completed"])
    job = client.wait(client.create_export("user-1", "ndjson"), timeout=30)
    request = wait_until(lambda: _delivery_of(stack.receiver, job.id), 30, "the webhook")
    namespace: dict[str, Any] = {}
    exec(receiver_code, namespace)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LONGRUN_WEBHOOK_SECRET", endpoint.secret)
        assert namespace["on_webhook"](request["body"], request["headers"]) == 204
        assert namespace["on_webhook"](request["body"] + b" ", request["headers"]) == 400
