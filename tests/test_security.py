"""Security properties as tests: keys on every route, operator routes, no pickle anywhere,
secrets at rest and in answers, presigned URL expiry, and the SSRF guard under DNS
rebinding."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import hmac
import ipaddress
import os
import pickle
import pickletools
import socket
import ssl
import threading
import time
import tracemalloc
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from redis.exceptions import ConnectionError as RedisConnectionError

from api.deps import get_account, require_admin
from api.failures import failure_key
from api.main import create_app
from api.routes.health import failure_class
from api.sessions import COOKIE, Sessions, same_secret
from jobs.crypto import SECRETS_AT_REST, SESSIONS, SecretBox, SecretUnreadable, derive_key
from jobs.engine.arq_adapter import json_dumps, json_loads
from jobs.engine.lifecycle import worker_settings
from jobs.engine.records import new_job_id, now_ms
from jobs.engine.store import JobStore
from jobs.storage import open_storage, translate_s3_error
from jobs.webhooks import EndpointStore
from jobs.webhooks.attempt import ERROR_CHARS, EXCERPT_BYTES, AttemptOutcome, attempt_delivery
from jobs.webhooks.ssrf import (
    RESOLVER_THREADS,
    Target,
    UnsafeURL,
    blocked_reason,
    resolve_target,
)
from jobs.webhooks.transport import WebhookClient
from tests.conftest import (
    ACME,
    ACME_KEY,
    ADMIN,
    ADMIN_KEY,
    GLOBEX,
    GLOBEX_KEY,
    api_client,
    eventually,
    make_settings,
    operator_session,
    running_worker,
)
from tests.support.asgi import raw_request
from tests.support.kinds import LEAKED, TEST_REGISTRY
from tests.support.receiver import Receiver
from tests.support.routes import operations
from tests.support.state import s3_objects, stored_values
from tests.support.tls import TestAuthority

PROBLEM = "application/problem+json"
PUBLIC_HOOK = "https://93.184.216.34/hooks"  # a literal public address: no DNS, never called
# Routes anyone may call: liveness and readiness probes, Prometheus, the API's own
# description, and the dashboard's login form.
PUBLIC = {
    ("GET", "/health/live"), ("GET", "/health/ready"), ("GET", "/health/queues"),
    ("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc"), ("GET", "/dashboard/login"),
    ("POST", "/dashboard/login"),
}  # fmt: skip
# Well-formed ids of things that do not exist, for path parameters.
SAMPLE_IDS = {
    "job_id": "job_01JAAAAAAAAAAAAAAAAAAAAAAA",
    "doc_id": "doc_01JAAAAAAAAAAAAAAAAAAAAAAA",
    "endpoint_id": "we_01JAAAAAAAAAAAAAAAAAAAAAAA",
    "delivery_id": "whd_" + "0" * 26,
    "kind": "export",
    "account": "acme",
    "what": "kinds",
    "name": "export",
    "action": "pause",
}


def concrete(path: str) -> str:
    for name, value in SAMPLE_IDS.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"add a sample id for {path}"
    return path


def is_problem(answer: httpx.Response, status: int) -> bool:
    return (
        answer.status_code == status
        and answer.headers["content-type"] == PROBLEM
        and answer.json()["status"] == status
    )


# Keys on every route


async def test_every_route_but_probes_metrics_and_docs_refuses_a_missing_or_wrong_key(settings):
    # So many wrong keys from one address would soon be answered 429 (tested on its own).
    async with api_client(settings.model_copy(update={"auth_failures_per_minute": 10_000})) as c:
        assert await _refused_everywhere(c) >= 30


async def _refused_everywhere(client) -> int:
    checked = 0
    for op in operations(client.app):
        if (op.method, op.path) in PUBLIC:
            continue
        path = concrete(op.path)
        for headers in ({}, {"Authorization": "Bearer not-a-key"}, {"Authorization": ACME_KEY}):
            answer = await client.request(op.method, path, headers=headers)
            if op.path.startswith("/v1/"):
                assert is_problem(answer, 401), (op, headers, answer.status_code, answer.text)
                assert answer.headers["www-authenticate"].startswith("Bearer")
            elif op.path.startswith("/dashboard"):
                # The dashboard is for browsers: without a valid session cookie (a key in a
                # header is not one) every page and form sends them to the login page.
                assert answer.status_code == 303, (op, answer.status_code)
                assert answer.headers["location"] == "/dashboard/login"
            else:
                raise AssertionError(f"{op} is neither /v1, /dashboard nor public: decide")
        checked += 1
    return checked


async def test_a_body_that_cannot_be_parsed_is_still_a_401_without_a_key(client):
    # FastAPI parses the body before the key is checked: the parse error must not answer.
    checked = 0
    for op in operations(client.app):
        if not op.path.startswith("/v1/") or op.method not in ("POST", "DELETE"):
            continue
        for body in (b"{not json", b"\xff\xfe", b"[" * 5000):
            answer = await client.request(
                op.method, concrete(op.path), content=body,
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            assert is_problem(answer, 401), (op, body[:10], answer.status_code, answer.text)
        checked += 1
    assert checked >= 9


async def test_public_routes_answer_without_a_key(client):
    for method, path in PUBLIC - {("POST", "/dashboard/login")}:
        answer = await client.request(method, path)
        assert answer.status_code == 200, (path, answer.status_code)
    refused = await client.post("/dashboard/login", data={"key": "not-a-key"})
    assert refused.status_code == 401 and COOKIE not in refused.cookies


async def test_every_operator_route_refuses_account_keys(client):
    admin_ops = [op for op in operations(client.app) if op.depends_on(require_admin)]
    assert {(op.method, op.path) for op in admin_ops} == {
        ("GET", "/v1/dead-letters"),
        ("GET", "/v1/dead-letters/{job_id}"),
        ("POST", "/v1/dead-letters/{job_id}/replay"),
        ("POST", "/v1/canaries"),
        ("GET", "/v1/queues/paused"),
        ("POST", "/v1/queues/kinds/{kind}/pause"),
        ("POST", "/v1/queues/kinds/{kind}/resume"),
        ("POST", "/v1/queues/accounts/{account}/pause"),
        ("POST", "/v1/queues/accounts/{account}/resume"),
    }
    for op in admin_ops:
        for headers in (ACME, GLOBEX):
            answer = await client.request(op.method, concrete(op.path), headers=headers)
            assert is_problem(answer, 403), (op, answer.status_code, answer.text)
            assert answer.json()["code"] == "forbidden"


async def test_every_account_route_refuses_an_operator_key(client):
    # An operator key names no account: account-scoped routes cannot act for it.
    account_ops = [op for op in operations(client.app) if op.depends_on(get_account)]
    assert len(account_ops) >= 12
    for op in account_ops:
        answer = await client.request(op.method, concrete(op.path), headers=ADMIN)
        assert is_problem(answer, 403), (op, answer.status_code, answer.text)


# Wrong keys are limited per address, across API processes


@asynccontextmanager
async def processes(settings, count: int):
    """`count` apps over one Redis, as separate API processes would be."""
    async with AsyncExitStack() as stack:
        apps = []
        for _ in range(count):
            app = create_app(settings, TEST_REGISTRY)
            await stack.enter_async_context(app.router.lifespan_context(app))
            apps.append(app)
        yield apps


def from_address(app, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_wrong_keys_past_the_limit_get_a_429_while_good_keys_go_through(settings):
    limited = settings.model_copy(update={"auth_failures_per_minute": 4})
    attacker, neighbour = "198.51.100.7", "198.51.100.8"
    async with processes(limited, 2) as apps:
        first, second = from_address(apps[0], attacker), from_address(apps[1], attacker)
        wrong = {"Authorization": "Bearer not-a-key"}
        # Failures count alike whichever process and whichever door (API or dashboard).
        tries = [
            await first.get("/v1/jobs", headers=wrong),
            await second.post("/dashboard/login", data={"key": "not-a-key"}),
            await second.get("/v1/usage", headers=wrong),
            await first.post("/dashboard/login", data={"key": "guess"}),
        ]
        assert [t.status_code for t in tries] == [401, 401, 401, 401]
        for refused in (
            await second.get("/v1/jobs", headers=wrong),
            await first.post("/dashboard/login", data={"key": "another-guess"}),
        ):
            assert is_problem(refused, 429), refused.text
            assert refused.json()["code"] == "too_many_failures"
            assert 1 <= int(refused.headers["retry-after"]) <= 60
        # A good key from that same address is neither counted nor held back.
        assert (await first.get("/v1/jobs", headers=ACME)).status_code == 200
        login = await second.post("/dashboard/login", data={"key": ADMIN_KEY})
        assert login.status_code == 303
        # Missing keys are no guesses; another address has its own count.
        assert (await first.get("/v1/jobs")).status_code == 401
        async with from_address(apps[0], neighbour) as other:
            assert (await other.get("/v1/jobs", headers=wrong)).status_code == 401


def test_failures_are_counted_per_address_and_per_ipv6_slash_64():
    assert failure_key("198.51.100.7") != failure_key("198.51.100.8")
    assert failure_key("2001:db8:1:2::1") == failure_key("2001:db8:1:2:ffff::9")
    assert failure_key("2001:db8:1:2::1") != failure_key("2001:db8:1:3::1")
    assert failure_key("::ffff:198.51.100.7") == failure_key("198.51.100.7")


# Constant time, on bytes


def test_secrets_are_compared_as_bytes_so_any_string_is_just_wrong():
    token = "abc"
    for given in ("é" * 3, "\udcff", "abc\n", "", None):
        assert not same_secret(token, given)
    assert same_secret(token, "abc")


async def test_a_session_id_with_a_trailing_newline_names_no_session(settings, redis):
    sessions = Sessions(redis, settings)
    session = await operator_session(settings)
    assert await sessions.valid(session)
    assert not await sessions.valid(session + "\n")


# No pickle, anywhere


def looks_pickled(raw: bytes) -> bool:
    """Whether `raw` is a whole pickle, read with `pickletools` (which never runs it)."""
    try:
        ops = list(pickletools.genops(raw))
    except Exception:
        return False
    return bool(ops) and ops[-1][0].name == "STOP" and ops[-1][2] == len(raw) - 1


def test_the_pickle_detector_knows_a_pickle():
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert looks_pickled(pickle.dumps({"f": "analysis", "a": ["job_x"]}, protocol))
    assert not looks_pickled(json_dumps({"f": "analysis", "a": ["job_x"]}))


def test_worker_serializes_jobs_as_json():
    options = worker_settings(_bare_settings(), TEST_REGISTRY)
    assert options["job_serializer"] is json_dumps and options["job_deserializer"] is json_loads
    with pytest.raises(ValueError):
        json_loads(pickle.dumps({"f": "x"}))


def _bare_settings():
    from tests.conftest import make_settings

    return make_settings("redis://127.0.0.1:1/0", "http://127.0.0.1:1")


async def check_no_pickle(redis) -> set[str]:
    """Assert nothing stored is a pickle and every arq job is JSON; the functions seen."""
    functions = set()
    for key, value in await stored_values(redis):
        assert not looks_pickled(value), f"a pickle at {key!r}"
        assert not key.startswith(b"arq:result:"), "arq stores no results (keep_result=0)"
        if key.startswith(b"arq:job:"):
            payload = json_loads(value)
            assert set(payload) == {"t", "f", "a", "k", "et"}, payload
            functions.add(payload["f"])
    return functions


@pytest.fixture
def hook_settings(settings):
    return settings.model_copy(
        update={"webhook_allow_private_networks": True, "webhook_retry_schedule": [0, 60]}
    )


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


async def test_arq_payloads_of_every_job_kind_are_json_and_nothing_stored_is_a_pickle(
    hook_settings, claude, redis, receiver
):
    async with api_client(hook_settings) as client:
        events = ["analysis.completed", "export.completed"]
        hook = {"url": receiver.url, "events": events}
        assert (await client.post("/v1/webhook-endpoints", headers=ACME, json=hook)).is_success
        receiver.script("500", "500")  # each first attempt fails: a retry waits in the queue
        doc = (
            await client.post("/v1/documents", headers=ACME, json={"user_id": "u", "text": "t"})
        ).json()
        jobs = [
            await client.post(f"/v1/documents/{doc['id']}/analyses", headers=ACME, json={}),
            await client.post("/v1/exports", headers=ACME, json={"user_id": "u", "format": "zip"}),
            await client.post("/v1/canaries", headers=ADMIN),
        ]
        assert await check_no_pickle(redis) == {"analysis", "export", "canary"}
        async with running_worker(hook_settings):

            async def all_done() -> bool:
                for job in jobs:
                    found = await client.get(f"/v1/jobs/{job.json()['id']}", headers=ADMIN)
                    if found.json()["state"] != "succeeded":
                        return False
                return len(receiver.received) >= 2

            await eventually(all_done, timeout=60)

            async def only_retries_queued() -> bool:
                # arq drops a finished job's payload just after its record says so.
                return await check_no_pickle(redis) == {"webhook"}

            await eventually(only_retries_queued)


class Planted:
    """Unpickling this makes a directory: proof that a pickle was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


async def test_worker_refuses_a_pickled_job_without_running_it(settings, redis, client, tmp_path):
    marker = tmp_path / "unpickled"
    store = JobStore(redis, settings, TEST_REGISTRY)
    recorded = (await store.create(kind="test.flaky", account="acme", args={})).job_id
    stray = new_job_id()  # no record at all: only arq knows it
    for job_id in (recorded, stray):
        payload = {"t": 1, "f": "test.flaky", "a": [job_id], "k": {}, "et": now_ms()}
        await redis.set(f"arq:job:{job_id}", pickle.dumps({**payload, "x": Planted(str(marker))}))
        await redis.zadd(settings.queue_name, {job_id: now_ms()})

    async with running_worker(settings):

        async def failed():
            job = (await client.get(f"/v1/jobs/{recorded}", headers=ACME)).json()
            return job if job["state"] == "failed" else None

        job = await eventually(failed)
        # A payload with no record was never enqueued by the engine: nothing picks it up.
        # The worker lives on and runs the next (JSON) job.
        after = (await store.create(kind="test.flaky", account="acme", args={})).job_id

        async def succeeded():
            return (await client.get(f"/v1/jobs/{after}", headers=ACME)).json()["state"] == (
                "succeeded"
            )

        await eventually(succeeded)
    assert not marker.exists(), "a pickle was loaded"
    assert job["attempt"] == 0 and job["result"] is None  # never ran
    assert job["error"]["type"] == "job_lost"  # the reconciler failed it: arq dropped it
    assert await redis.keys("arq:result:*") == []


# Secrets


async def test_webhook_secrets_are_encrypted_api_keys_never_stored_and_secrets_never_shown(
    hook_settings, settings, claude, redis, receiver
):
    async with api_client(hook_settings) as client:
        hook = {"url": receiver.url, "events": ["analysis.completed"]}
        created = (await client.post("/v1/webhook-endpoints", headers=ACME, json=hook)).json()
        rotated_answer = await client.post(
            f"/v1/webhook-endpoints/{created['id']}/rotate-secret", headers=ACME
        )
        rotated = rotated_answer.json()
        secrets = [created["secret"], rotated["secret"]]
        receiver.secrets += secrets
        assert created["secret"] not in rotated_answer.text  # the old one is not shown again
        doc = (
            await client.post("/v1/documents", headers=ACME, json={"user_id": "u", "text": "t"})
        ).json()
        await client.post(f"/v1/documents/{doc['id']}/analyses", headers=ACME, json={})
        async with running_worker(hook_settings):
            await eventually(lambda: _received(receiver))
        assert all(receiver.verified_by(receiver.received[0]).values())  # both still sign

        endpoint = f"/v1/webhook-endpoints/{created['id']}"
        session = {"Cookie": f"{COOKIE}={await operator_session(settings)}"}
        shown = [
            await client.get(endpoint, headers=ACME),
            await client.get("/v1/webhook-endpoints", headers=ACME),
            await client.get(f"{endpoint}/deliveries", headers=ACME),
            await client.get("/v1/jobs", headers=ACME),
            await client.get("/dashboard/webhooks", headers=session),
            await client.get(f"/dashboard/webhooks/{created['id']}", headers=session),
        ]
        async with open_storage(settings) as storage:
            objects = await s3_objects(storage)

    assert all(answer.status_code == 200 for answer in shown)
    forbidden = {b"whsec_"}
    for secret in secrets:
        body = secret.removeprefix("whsec_")
        forbidden |= {body.encode(), base64.b64decode(body)}
    for key in (ACME_KEY, GLOBEX_KEY, ADMIN_KEY):
        forbidden |= {key.encode(), hashlib.sha256(key.encode()).hexdigest().encode()}
    stored = await stored_values(redis)
    assert len(stored) > 20 and objects
    for where, value in [*stored, *objects.items(), *((a.url, a.content) for a in shown)]:
        for needle in forbidden:
            assert needle not in value, f"{needle!r} found in {where!r}"


async def test_answers_that_carry_a_webhook_secret_are_never_cached(client):
    hook = {"url": PUBLIC_HOOK, "events": ["export.completed"]}
    created = await client.post("/v1/webhook-endpoints", headers=ACME, json=hook)
    endpoint = f"/v1/webhook-endpoints/{created.json()['id']}"
    rotated = await client.post(f"{endpoint}/rotate-secret", headers=ACME)
    for answer in (created, rotated):
        assert answer.json()["secret"].startswith("whsec_")
        assert answer.headers["cache-control"] == "no-store"


async def _received(receiver) -> bool:
    return bool(receiver.received)


def keyed(settings, key: bytes, previous: tuple[bytes, ...] = ()):
    """These settings under another SECRETS_KEY, with former ones."""
    return make_settings(
        settings.redis_url,
        settings.s3_endpoint_url,
        secrets_key=base64.b64encode(key).decode(),
        secrets_key_previous=[base64.b64encode(k).decode() for k in previous],
    )


def test_each_purpose_has_its_own_key_derived_from_secrets_key(settings):
    master = settings.master_keys[0]
    sessions, at_rest = derive_key(master, SESSIONS), derive_key(master, SECRETS_AT_REST)
    assert len({master, sessions, at_rest}) == 3 and len(sessions) == len(at_rest) == 32
    assert derive_key(master, SESSIONS) == sessions  # stable across processes and restarts


async def test_rotating_secrets_key_keeps_every_webhook_secret_readable(settings, redis):
    old_key, new_key = settings.master_keys[0], os.urandom(32)
    endpoints = EndpointStore(redis, settings)
    endpoint, secret = await endpoints.create(
        "acme", "https://93.184.216.34/hooks", ["export.failed"]
    )
    # A value sealed before keys were derived (AES-GCM under SECRETS_KEY itself).
    nonce = os.urandom(12)
    legacy = base64.b64encode(nonce + AESGCM(old_key).encrypt(nonce, b"whsec_old", b"we_x"))
    rotated = keyed(settings, new_key, previous=(old_key,))
    box = SecretBox(rotated)
    assert EndpointStore(redis, rotated).signing_secrets(endpoint) == [secret]
    assert box.open(legacy.decode(), "we_x") == "whsec_old"
    assert SecretBox(settings).open(legacy.decode(), "we_x") == "whsec_old"
    resealed = box.seal(secret, endpoint.id)  # sealing uses the new key
    assert box.open(resealed, endpoint.id) == secret
    with pytest.raises(SecretUnreadable):
        SecretBox(settings).open(resealed, endpoint.id)
    # Without the old key among the previous ones, nothing sealed under it opens.
    with pytest.raises(SecretUnreadable, match="SECRETS_KEY_PREVIOUS"):
        EndpointStore(redis, keyed(settings, new_key)).signing_secrets(endpoint)


# Presigned URLs


def sigv4_query_valid(url: str, secret_key: str) -> bool:
    """Check a presigned S3 GET's signature, per AWS Signature Version 4 (query string)."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    given = dict(params)
    enc = lambda s: quote(s, safe="-_.~")  # noqa: E731
    query = "&".join(sorted(f"{enc(k)}={enc(v)}" for k, v in params if k != "X-Amz-Signature"))
    canonical = "\n".join(
        ["GET", parts.path, query, f"host:{parts.netloc}\n", "host", "UNSIGNED-PAYLOAD"]
    )
    scope = given["X-Amz-Credential"].split("/", 1)[1]
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            given["X-Amz-Date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = f"AWS4{secret_key}".encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given["X-Amz-Signature"])


async def test_presigned_download_url_carries_a_signed_expiry_matching_expires_at(settings, redis):
    # moto serves expired URLs too, so the test checks what S3 enforces: the expiry is in
    # the signed part of the URL, and the URL is never stored (it is minted at each lookup).
    short = settings.model_copy(update={"export_url_ttl_seconds": 120})
    async with api_client(short) as client, running_worker(short):
        job = await client.post("/v1/exports", headers=ACME, json={"user_id": "u", "format": "zip"})

        async def finished():
            found = (await client.get(f"/v1/jobs/{job.json()['id']}", headers=ACME)).json()
            return found if found["state"] == "succeeded" else None

        done = await eventually(finished, timeout=60)
    url, expires_at = done["result"]["download_url"], done["result"]["expires_at"]
    given = dict(parse_qsl(urlsplit(url).query))
    secret = short.aws_secret_access_key.get_secret_value()
    assert given["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256" and given["X-Amz-Expires"] == "120"
    assert given["X-Amz-SignedHeaders"] == "host"
    assert sigv4_query_valid(url, secret)
    assert not sigv4_query_valid(url.replace("X-Amz-Expires=120", "X-Amz-Expires=604800"), secret)
    signed_at = datetime.strptime(given["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    stated = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    assert abs(signed_at + timedelta(seconds=120) - stated) <= timedelta(seconds=2)
    assert not any(b"X-Amz-Signature" in value for _, value in await stored_values(redis))


# SSRF under DNS rebinding

REBIND_HOST = "hooks.rebind.test"


class FakeDNS:
    """Stands in for DNS, which lies outside the service: `answers[name]` is a script of
    addresses, one per lookup, the last repeated; a name in `stalled` gets no answer until
    its event is set (a DNS server that never answers); every other name is resolved for
    real."""

    def __init__(self, real) -> None:
        self.real = real
        self.answers: dict[str, list[str]] = {}
        self.stalled: dict[str, threading.Event] = {}
        self.asked: list[str] = []

    def __call__(self, host, port, family=0, type=0, proto=0, flags=0):
        name = host.decode() if isinstance(host, bytes) else host
        if name in self.stalled:
            self.stalled[name].wait(60)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if name not in self.answers:
            return self.real(host, port, family, type, proto, flags)
        self.asked.append(name)
        script = self.answers[name]
        address = script.pop(0) if len(script) > 1 else script[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port)))]


@pytest.fixture
def dns(monkeypatch):
    fake = FakeDNS(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


OK_AND_CLOSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"


class Listener:
    """A TCP server on one address that counts connections and gives every request the
    same answer (by default a 200 that closes the connection); with TLS, it records the
    name each client asked for (SNI)."""

    def __init__(self, answer: bytes = OK_AND_CLOSE, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []
        self.server_names: list[str | None] = []
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int = 0) -> Listener:
        if self.tls is not None:
            self.tls.sni_callback = lambda sock, name, ctx: self.server_names.append(name)
        self.server = await asyncio.start_server(self._handle, host, port, ssl=self.tls)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:  # keep-alive, unless the answer closes
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                length = next(
                    (int(line.split(b":")[1]) for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-length:")), 0,
                )  # fmt: skip
                await reader.readexactly(length)
                writer.write(self.answer)
                await writer.drain()
                if b"connection: close" in self.answer.lower():
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except ssl.SSLError:
            pass  # a client that refused our certificate
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()


async def delivery_attempts(client, endpoint_id: str) -> list[dict]:
    found = await client.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=ACME)
    data = found.json()["data"]
    return data[0]["attempts"] if data else []


async def test_a_name_with_one_private_address_among_public_ones_is_refused(monkeypatch):
    # Every address a name resolves to is checked, not only the first: a client may
    # connect to any of them.
    def lookup(host, port, family=0, type=0, proto=0, flags=0):
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (a, int(port)))
                for a in ("93.184.216.34", "127.0.0.1")]  # fmt: skip

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    with pytest.raises(UnsafeURL, match=r"127\.0\.0\.1"):
        await resolve_target("https://mixed.example/hook", False, timeout_s=5)


async def test_name_rebound_to_loopback_after_registration_is_refused_at_delivery(
    settings, dns, unused_port
):
    strict = settings.model_copy(
        update={"webhook_retry_schedule": [0, 60], "webhook_timeout_seconds": 1.0}
    )
    local = await Listener().start("127.0.0.1", unused_port)
    dns.answers[REBIND_HOST] = ["93.184.216.34", "127.0.0.1"]  # public, then loopback
    try:
        async with api_client(strict) as client:
            url = f"https://{REBIND_HOST}:{unused_port}/hooks"
            answer = await client.post(
                "/v1/webhook-endpoints", headers=ACME,
                json={"url": url, "events": ["export.completed"]},
            )  # fmt: skip
            assert answer.status_code == 201, answer.text
            endpoint = answer.json()["id"]
            await client.app.state.deliveries.publish("acme", "export.completed", "evt_r", {"n": 1})
            async with running_worker(strict):
                attempts = await eventually(lambda: delivery_attempts(client, endpoint))
        assert attempts[0]["error"].startswith("refused: webhook URLs must point to public")
        assert "127.0.0.1" in attempts[0]["error"]
        assert local.connections == 0
        assert dns.asked == [REBIND_HOST, REBIND_HOST]  # at registration and at delivery
        # The listener does count connections: the zero above means none was made.
        _, writer = await asyncio.open_connection("127.0.0.1", unused_port)
        writer.close()
        await eventually(lambda: _connected(local))
    finally:
        await local.stop()


async def _connected(listener: Listener) -> bool:
    return listener.connections > 0


async def test_delivery_connects_to_the_address_it_checked_not_to_a_later_answer(
    settings, dns, unused_port
):
    # Two loopback addresses on one port stand for "checked" and "rebound"; private
    # networks are allowed here only so that both may be used at all.
    loose = settings.model_copy(
        update={"webhook_allow_private_networks": True, "webhook_retry_schedule": [0]}
    )
    checked = await Listener().start("127.0.0.2", unused_port)
    rebound = await Listener().start("127.0.0.1", unused_port)
    # Registration, then the delivery's check; any later lookup gets the other address.
    dns.answers[REBIND_HOST] = ["127.0.0.2", "127.0.0.2", "127.0.0.1"]
    try:
        async with api_client(loose) as client:
            url = f"http://{REBIND_HOST}:{unused_port}/hooks"
            answer = await client.post(
                "/v1/webhook-endpoints", headers=ACME,
                json={"url": url, "events": ["export.completed"]},
            )  # fmt: skip
            endpoint = answer.json()["id"]
            await client.app.state.deliveries.publish("acme", "export.completed", "evt_p", {"n": 1})
            async with running_worker(loose):
                attempts = await eventually(lambda: delivery_attempts(client, endpoint))
        assert attempts[0]["status_code"] == 200, attempts
        assert checked.connections == 1 and rebound.connections == 0
        assert f"host: {REBIND_HOST}:{unused_port}".encode() in checked.requests[0].lower()
        assert dns.asked == [REBIND_HOST, REBIND_HOST]  # the HTTP client never asked
    finally:
        await checked.stop()
        await rebound.stop()


@pytest.fixture
def unused_port() -> int:
    """A port free on 127.0.0.1 (and, in practice, on 127.0.0.2)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_an_internationalised_host_is_reached_under_its_idna_name(settings, dns, unused_port):
    loose = settings.model_copy(
        update={"webhook_allow_private_networks": True, "webhook_retry_schedule": [0]}
    )
    listener = await Listener().start("127.0.0.1", unused_port)
    dns.answers["xn--bcher-kva.example"] = ["127.0.0.1", "127.0.0.1"]
    try:
        async with api_client(loose) as client:
            answer = await client.post(
                "/v1/webhook-endpoints",
                headers=ACME,
                json={"url": f"http://bücher.example:{unused_port}/hooks",
                      "events": ["export.completed"]},
            )  # fmt: skip
            assert answer.status_code == 201, answer.text
            endpoint = answer.json()["id"]
            await client.app.state.deliveries.publish("acme", "export.completed", "evt_i", {})
            async with running_worker(loose):
                attempts = await eventually(lambda: delivery_attempts(client, endpoint))
        assert attempts[0]["status_code"] == 200, attempts
        assert f"host: xn--bcher-kva.example:{unused_port}".encode() in listener.requests[0].lower()
    finally:
        await listener.stop()


SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()


async def attempt(client: WebhookClient, url: str, **options) -> AttemptOutcome:
    given = {"timeout_s": 2.0, "allow_private": True, "secrets": [SECRET]} | options
    return await attempt_delivery(
        client, url, given["secrets"], "msg_x", "{}",
        timeout_s=given["timeout_s"], allow_private=given["allow_private"],
    )  # fmt: skip


@pytest.fixture
async def webhook_client():
    client = WebhookClient(2.0)
    yield client
    await client.aclose()


async def test_an_attempt_that_cannot_even_be_built_is_an_outcome_never_an_exception(
    webhook_client,
):
    outcomes = [
        # A secret that cannot sign.
        await attempt(webhook_client, "http://127.0.0.1:9/hooks", secrets=["whsec_not*base64"]),
        # A URL httpx would not even build (registration refuses it; stored before that).
        await attempt(webhook_client, "http://127.0.0.1:9/a\x01b"),
    ]
    for outcome in outcomes:
        assert outcome.status_code is None and outcome.error and not outcome.success


# Blocked address ranges


@pytest.mark.parametrize(
    "address",
    [
        "fec0::1", "fec0:1::1", "feff::1",  # site-local, deprecated (RFC 3879)
        "3fff::1", "2001:db8::1",  # documentation
        "::127.0.0.1", "::5db8:d822",  # IPv4-compatible, deprecated
        "::ffff:0:7f00:1",  # IPv4-translated
        "64:ff9b:1::a00:1",  # local-use NAT64
        "100::1",  # discard-only
        "5f00::1",  # SRv6
        "2001:2::1", "2001:10::1",  # benchmarking, ORCHID
        "192.88.99.1",  # 6to4 relay anycast, deprecated
        "192.0.2.1", "198.51.100.1", "203.0.113.1", "240.0.0.1", "255.255.255.255",
    ],
)  # fmt: skip
def test_deprecated_and_special_purpose_addresses_are_refused(address):
    assert blocked_reason(ipaddress.ip_address(address)), address


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700::6810:84e5", "2001:4860:4860::8888"]
)
def test_public_addresses_are_not_refused(address):
    assert blocked_reason(ipaddress.ip_address(address)) is None


# DNS under the attempt's deadline, in threads of its own


async def test_a_resolver_that_never_answers_costs_an_attempt_its_deadline_and_no_shared_thread(
    dns, webhook_client
):
    never = threading.Event()
    dns.stalled["stalled.example"] = never
    try:
        clock = time.monotonic()
        async with asyncio.timeout(10):  # without a deadline of their own, they would hang
            outcomes = await asyncio.gather(
                *(
                    attempt(webhook_client, "https://stalled.example/hook", timeout_s=0.5)
                    for _ in range(3 * RESOLVER_THREADS)
                )
            )
        assert time.monotonic() - clock < 5
        assert {o.error for o in outcomes} == {"the host did not resolve within 0.5s"}
        # Meanwhile the event loop's own executor, which resolves Redis's and S3's names,
        # is not held up by them.
        async with asyncio.timeout(3):
            await asyncio.get_running_loop().getaddrinfo("localhost", 80)
        # Registration waits no longer than WEBHOOK_TIMEOUT_SECONDS either.
        with pytest.raises(UnsafeURL, match=r"did not resolve within 0\.5s"):
            await resolve_target("https://stalled.example/", False, timeout_s=0.5)
    finally:
        never.set()


# One TLS connection per host


async def test_a_connection_verified_for_one_host_never_serves_another(dns):
    # Two names on one address; the server's certificate is good for the first only. The
    # first attempt leaves a verified keep-alive connection in the pool: the second, for
    # the other name, must not ride on it.
    authority = TestAuthority()
    keep_alive = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    server = await Listener(keep_alive, tls=authority.server_context(["a.example"])).start(
        "127.0.0.1"
    )
    dns.answers |= {"a.example": ["127.0.0.1"], "b.example": ["127.0.0.1"]}
    client = WebhookClient(2.0, verify=authority.client_context())
    port = server.port
    try:
        first = await attempt(client, f"https://a.example:{port}/hook")
        second = await attempt(client, f"https://b.example:{port}/hook")
        again = await attempt(client, f"https://a.example:{port}/hook")
    finally:
        await client.aclose()
        await server.stop()
    assert first.status_code == 200, first
    assert second.status_code is None and "certificate" in (second.error or "").lower(), second
    assert again.status_code == 200, again
    assert server.server_names == ["a.example", "b.example"]  # a.example's connection reused
    assert [r.split(b"\r\n")[1] for r in server.requests] == [
        f"Host: a.example:{port}".encode()
    ] * 2


async def test_a_pin_for_one_host_opens_no_connection_for_another():
    # The pinned address is for the checked host only: a request to any other host in the
    # same task (a redirect, were one followed) connects nowhere.
    server = await Listener().start("127.0.0.1")
    client = WebhookClient(2.0)
    target = Target(scheme="http", host="a.example", port=server.port, address="127.0.0.1",
                    path="/")  # fmt: skip
    try:
        with client.pinned(target):
            with pytest.raises(httpx.ConnectError, match=r"no checked address for b\.example"):
                await client.http.get(f"http://b.example:{server.port}/")
            assert (await client.http.get(f"http://a.example:{server.port}/")).status_code == 200
    finally:
        await client.aclose()
        await server.stop()
    assert server.connections == 1


async def test_no_connection_is_made_for_a_host_without_a_checked_address(webhook_client):
    # The client alone (no attempt's check) connects nowhere.
    answer = webhook_client.http.post("http://127.0.0.1:9/hooks", content=b"{}")
    with pytest.raises(httpx.ConnectError, match="no checked address"):
        await answer


# What a receiver answers is read raw and capped


async def test_a_gzip_bomb_is_kept_raw_and_never_inflated(webhook_client):
    bomb = gzip.compress(bytes(64 * 1024 * 1024), compresslevel=9)  # 64 MiB of zeros
    answer = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-encoding: gzip\r\n"
        + f"content-length: {len(bomb)}\r\nconnection: close\r\n\r\n".encode()
        + bomb
    )
    server = await Listener(answer).start("127.0.0.1")
    tracemalloc.start()
    try:
        outcome = await attempt(webhook_client, f"http://127.0.0.1:{server.port}/hook")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await server.stop()
    assert outcome.success, outcome
    assert b"accept-encoding: identity" in server.requests[0].lower()
    excerpt = outcome.response_excerpt or ""
    # The stored excerpt is the answer's first raw bytes: gzip's magic, not inflated zeros.
    assert excerpt == bomb[:EXCERPT_BYTES].decode("utf-8", "replace")
    assert peak < 8 * 1024 * 1024, f"{peak} bytes at the peak of one attempt"


async def test_a_redirects_location_is_capped_in_the_attempt_log(webhook_client):
    location = "https://elsewhere.example/" + "a" * 10_000
    answer = (
        f"HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\n"
        "connection: close\r\n\r\n"
    ).encode()
    server = await Listener(answer).start("127.0.0.1")
    try:
        outcome = await attempt(webhook_client, f"http://127.0.0.1:{server.port}/hook")
    finally:
        await server.stop()
    assert outcome.status_code == 302
    assert outcome.error == f"redirect to {location[:ERROR_CHARS]} (not followed)"


# What tenants and probes are told


async def test_a_jobs_error_says_what_failed_and_nothing_of_the_inside(
    settings, redis, client, worker
):
    store = JobStore(redis, settings, TEST_REGISTRY)
    bug = (await store.create(kind="test.leaky", account="acme", args={})).job_id
    network = (await store.create(kind="test.leaky", account="acme", args={"network": 1})).job_id

    async def failed(job_id: str):
        answer = await client.get(f"/v1/jobs/{job_id}", headers=ACME)
        return answer if answer.json()["state"] == "failed" else None

    shown = [await eventually(lambda: failed(bug)), await eventually(lambda: failed(network))]
    errors = [answer.json()["error"] for answer in shown]
    assert errors[0]["type"] == "internal_error"
    assert errors[0]["message"].startswith("an unexpected error occurred (reference err_")
    assert errors[1] == {
        "type": "connection_error", "message": "a network connection failed", "retryable": True
    }  # fmt: skip
    for answer in shown:  # the job, its every attempt, and so its webhook events
        for leaked in ("10.0.0.7", "5432", "hunter2", "RuntimeError", "ConnectionRefused"):
            assert leaked not in answer.text
    # The operator's dead letter keeps the whole story.
    dead = (await client.get(f"/v1/dead-letters/{bug}", headers=ADMIN)).json()
    assert f"RuntimeError: could not reach {LEAKED}" in dead["traceback"]
    assert dead["error"] == errors[0]


async def test_readiness_names_what_is_down_and_never_where_it_is(settings, unused_port):
    down = settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{unused_port}"})
    async with api_client(down) as client:
        answer = await client.get("/health/ready")
    assert is_problem(answer, 503)
    assert answer.json()["checks"] == {"redis": "ok", "s3": "unavailable"}
    assert "127.0.0.1" not in answer.text and str(unused_port) not in answer.text


def test_a_failed_check_is_told_as_a_class_of_failure():
    refused = ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {}}, "HeadBucket")
    assert failure_class(TimeoutError()) == "timeout"
    assert failure_class(RedisConnectionError("Error 111 connecting to 10.0.0.7:6379")) == (
        "unavailable"
    )
    assert failure_class(translate_s3_error(refused, "bucket secret-bucket")) == "refused"


async def test_a_request_id_with_a_trailing_newline_is_not_echoed(client):
    answer = await raw_request(
        client.app, "GET", "/health/live", [(b"x-request-id", b"abc\n")], b"", False
    )
    assert answer.status == 200
    assert answer.headers["x-request-id"].startswith("req_")
    kept = await client.get("/health/live", headers={"X-Request-ID": "abc"})
    assert kept.headers["x-request-id"] == "abc"
