"""A corpus of hostile requests against the real app, one case per row.

Every row is refused: a 4xx problem+json (the dashboard sends a browser without a
valid session to its login page instead, by design), and nothing changes: the whole
Redis keyspace (every key, its type, a digest of its value, and an expiry that may
only run down) and the S3 bucket (objects and open uploads) are the same before and
after. No key is left out of the comparison: the API keeps its metrics in process
memory and no request log in Redis, so a refused request has no business writing
anything there, with two exceptions that each row declares: a wrong key (bearer or
login) adds to its address's failure count (`counted`), and a session whose operator key
was removed is ended when presented (`ends`). No worker runs, so nothing else writes.

Requests go in-process over ASGI, byte for byte (`tests/support/asgi.py`), so raw
paths, control characters in headers and chunked bodies reach the app unaltered.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from api.failures import failure_key
from api.main import create_app
from api.routes.webhooks import EVENT_TYPES
from api.sessions import COOKIE, SESSION_INDEX, SESSION_SECONDS, Sessions
from jobs.engine.runner import fail_job
from jobs.engine.store import JobStore
from jobs.settings import Settings
from jobs.storage import open_storage
from jobs.webhooks import DeliveryLog, EndpointStore
from tests.conftest import (
    ACME,
    ACME_KEY,
    ADMIN,
    ADMIN_KEY,
    GLOBEX,
    GLOBEX_KEY,
    api_client,
    make_settings,
)
from tests.support.asgi import RawAnswer, raw_request
from tests.support.kinds import TEST_REGISTRY
from tests.support.routes import operations
from tests.support.sessions import review_cookie
from tests.support.state import redis_changes, redis_snapshot, s3_snapshot

PROBLEM = "application/problem+json"
MAX_DOC = Settings.model_fields["max_document_bytes"].default
MB8 = 8 * 1024 * 1024
PUBLIC_HOOK = "https://93.184.216.34/hooks"  # a literal public address: no DNS, never called
CLIENT_ADDRESS = "127.0.0.1"  # every request's, as tests/support/asgi.py sends it
KEYS = {"acme": ACME_KEY, "globex": GLOBEX_KEY, "admin": ADMIN_KEY}
NO_JSON = object()


@dataclass(frozen=True)
class Case:
    """One hostile request and the refusal it must get.

    `path`, header values and `form` values may name seeded resources as `{doc}`,
    `{job}` (an analysis), `{export}`, `{ep}`, `{dl}`, `{dead}` (acme's), `{gdoc}`,
    `{gjob}`, `{gexport}`, `{gep}`, `{gdl}` (globex's) and `{canary}` (the operator
    account's), and dashboard sessions as `{session}` (with its `{csrf}`), `{expired}`,
    `{forged}` (well-formed, never issued), `{foreign}` (opened under another
    SECRETS_KEY), `{logged_out}`, `{removed}` (opened with an operator key since removed)
    and `{old_format}` (the signed `admin.<expiry>.<mac>` cookie of old, computed with
    the built-in development key, as anyone who reads the source could).
    """

    name: str
    method: str
    path: str
    status: int
    key: str | None = "acme"
    json: Any = NO_JSON
    body: bytes | Callable[[], bytes] = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    form: dict[str, str] | None = None
    chunked: bool = False
    code: str | None = None
    html: bool = False
    counted: bool = False
    ends: str | None = None


def multipart(*parts: tuple[str, bytes, str | None], boundary: str = "xHostile") -> bytes:
    """A multipart/form-data body: (field name, value, file name or None) per part."""
    out = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        out += b"Content-Type: text/plain\r\n" if filename else b""
        out += b"\r\n" + value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


MULTIPART = "multipart/form-data; boundary=xHostile"


def big_json(size: int, **fields: Any) -> Callable[[], bytes]:
    """A JSON object of about `size` bytes: `fields` plus padding (built when sent)."""
    return lambda: json.dumps({**fields, "pad": "x" * size}).encode()


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def rows(prefix: str, method: str, path: str, **defaults: Any) -> Callable[..., Case]:
    """A row builder for one route: `row(name, status=422, **fields)`."""

    def row(name: str, status: int = 422, **fields: Any) -> Case:
        fields = {"path": path, **defaults, **fields}
        return Case(f"{prefix}-{name}", method, fields.pop("path"), status, **fields)

    return row


def idem(value: str) -> tuple[tuple[str, str], ...]:
    return (("idempotency-key", value),)


def file(data: bytes) -> tuple[str, bytes, str]:
    return ("file", data, "a.txt")


def user(value: bytes) -> tuple[str, bytes, None]:
    return ("user_id", value, None)


# The tables keep one case to a row (or two), as written.
# fmt: off
def doc_cases() -> list[Case]:
    j = rows("documents-json", "POST", "/v1/documents")
    raw = rows("documents-raw", "POST", "/v1/documents", content_type="application/json")
    m = rows("documents-multipart", "POST", "/v1/documents", content_type=MULTIPART)
    too_large = {"status": 413, "code": "payload_too_large"}
    return [
        j("user-id-int", json={"user_id": 5, "text": "x"}),
        j("text-list", json={"user_id": "u", "text": ["x"]}),
        j("text-object", json={"user_id": "u", "text": {"a": 1}}),
        j("title-int", json={"user_id": "u", "text": "x", "title": 7}),
        j("title-too-long", json={"user_id": "u", "text": "x", "title": "t" * 501}),
        j("array", json=[{"user_id": "u", "text": "x"}]),
        j("string", json="text"),
        j("null", json=None),
        j("empty-object", json={}),
        j("missing-text", json={"user_id": "u"}),
        j("missing-user-id", json={"text": "x"}),
        j("user-id-traversal", json={"user_id": "../../etc", "text": "x"}),
        j("user-id-slash", json={"user_id": "a/b", "text": "x"}),
        j("user-id-encoded-slash", json={"user_id": "a%2Fb", "text": "x"}),
        j("user-id-nul", json={"user_id": "a\x00b", "text": "x"}),
        j("user-id-too-long", json={"user_id": "u" * 129, "text": "x"}),
        j("user-id-trailing-newline", json={"user_id": "u1\n", "text": "x"}),
        j("text-nan", json={"user_id": "u", "text": float("nan")}),
        j("text-over-max", json={"user_id": "u", "text": "x" * (MAX_DOC + 1)}, **too_large),
        raw("empty", body=b"", code="invalid_json"),
        raw("not-json", body=b"user_id=u&text=x", code="invalid_json"),
        raw("trailing-garbage", body=b'{"user_id": "u", "text": "x"} !', code="invalid_json"),
        raw("invalid-utf8", body=b'{"user_id": "u", "text": "\xff\xfe\xc3("}', code="invalid_json"),
        raw("lone-surrogate-text", body=b'{"user_id": "u", "text": "\\ud800"}'),
        raw("lone-surrogate-title", body=b'{"user_id": "u", "text": "x", "title": "\\udfff"}'),
        raw("deeply-nested", body=nested(100_000), code="invalid_json"),
        raw("multi-mb-json", body=big_json(MB8, user_id="u", text="x"), **too_large),
        raw("multi-mb-json-chunked", body=big_json(MB8, user_id="u", text="x"), chunked=True,
            **too_large),
        raw("text-plain", 415, body=b"hello", content_type="text/plain"),
        raw("xml", 415, body=b"<doc/>", content_type="application/xml",
            code="unsupported_media_type"),
        m("missing-file", body=multipart(user(b"u"))),
        m("file-as-plain-field", body=multipart(user(b"u"), ("file", b"text", None))),
        m("missing-user-id", body=multipart(file(b"text"))),
        m("user-id-traversal", body=multipart(user(b"../../x"), file(b"text"))),
        m("file-invalid-utf8", body=multipart(user(b"u"), file(b"ok \xff\xfe\xfd")),
          code="invalid_encoding"),
        m("user-id-invalid-utf8", body=multipart(user(b"\xff\xfe"), file(b"text"))),
        m("two-files", body=multipart(user(b"u"), file(b"one"), file(b"two"))),
        m("no-boundary", body=multipart(user(b"u"), file(b"text")),
          content_type="multipart/form-data"),
        m("garbage", body=b"--xHostile\r\nnot a part at all"),
        # UTF-7 decodes "+2AA-" to a lone surrogate: no UTF-8 store can hold it.
        m("title-utf7-lone-surrogate",
          body=multipart(user(b"u"), ("title", b"+2AA-", None), file(b"t")),
          content_type=MULTIPART + "; charset=utf-7"),
        m("file-over-max", body=lambda: multipart(user(b"u"), file(b"x" * (MAX_DOC + 1))),
          **too_large),
        m("multi-mb-chunked", body=lambda: multipart(user(b"u"), file(b"x" * MB8)), chunked=True,
          **too_large),
    ]


def id_cases(
    prefix: str, method: str, template: str, *, owner_id: str | None, key: str = "acme",
    own_id: str | None = None,
) -> list[Case]:
    """Hostile ids in one path parameter: another account's, one's own with a trailing
    newline (which `$` would match), traversal, over-long, odd bytes."""
    def c(name: str, value: str, status: int = 404) -> Case:
        return Case(f"{prefix}-{name}", method, template.format(id=value), status, key=key)

    return [
        *([c("other-accounts-id", owner_id)] if owner_id else []),
        *([c("own-id-trailing-newline", own_id + "%0A")] if own_id else []),
        c("traversal-encoded-slashes", "..%2F..%2Fetc%2Fpasswd"),
        c("traversal-encoded-dots", "%2e%2e%2f%2e%2e%2fetc"),
        c("traversal-dots", "%2e%2e"),
        c("double-encoded", "%252e%252e%252f"),
        c("nul", "abc%00def"),
        c("invalid-utf8", "%ff%fe"),
        c("glob", "*"),
        c("over-long", "x" * 300, 422),
    ]


def job_cases() -> list[Case]:
    cases = []
    for name, method, template in [
        ("get", "GET", "/v1/jobs/{id}"),
        ("events", "GET", "/v1/jobs/{id}/events"),
        ("cancel", "POST", "/v1/jobs/{id}/cancel"),
    ]:
        cases += id_cases(f"job-{name}", method, template, owner_id="{gjob}", own_id="{job}")
    # An export is a job too: another account's export answers 404 like any job.
    for name, method, template in [
        ("get", "GET", "/v1/jobs/{gexport}"),
        ("events", "GET", "/v1/jobs/{gexport}/events"),
        ("cancel", "POST", "/v1/jobs/{gexport}/cancel"),
    ]:
        cases.append(Case(f"export-job-{name}-other-accounts-id", method, template, 404))
    listing = rows("jobs-list", "GET", "/v1/jobs")
    cancel = rows("job-cancel", "POST", "/v1/jobs/{job}/cancel", key=None)
    cursor = lambda raw: base64.urlsafe_b64encode(raw).decode()  # noqa: E731
    return [
        *cases,
        listing("limit-not-int", path="/v1/jobs?limit=abc"),
        listing("limit-negative", path="/v1/jobs?limit=-1"),
        listing("limit-huge", path="/v1/jobs?limit=99999999999999999999999"),
        listing("state-unknown", path="/v1/jobs?state=exploded"),
        listing("state-invalid-utf8", path="/v1/jobs?state=%ff"),
        listing("kind-too-long", path="/v1/jobs?kind=" + "k" * 65),
        listing("cursor-garbage", path="/v1/jobs?cursor=!!!"),
        listing("cursor-too-long", path="/v1/jobs?cursor=" + "A" * 201),
        listing("cursor-not-a-score", path="/v1/jobs?cursor=" + cursor(b"abc:x")),
        listing("cursor-not-utf8", path="/v1/jobs?cursor=" + cursor(b"\xff\xfe")),
        cancel("no-key", 401),
        cancel("wrong-key", 401, headers=(("authorization", "Bearer nope"),), counted=True),
        # The canary account `_operator` is no tenant: its jobs are an operator's alone.
        Case("canary-job-get-account-key", "GET", "/v1/jobs/{canary}", 404),
    ]


def analysis_cases() -> list[Case]:
    a = rows("analysis", "POST", "/v1/documents/{doc}/analyses")
    as_json = {"content_type": "application/json"}
    return [
        *id_cases("analysis", "POST", "/v1/documents/{id}/analyses", owner_id="{gdoc}",
                  own_id="{doc}"),
        a("instructions-int", json={"instructions": 5}),
        a("instructions-too-long", json={"instructions": "i" * 4001}),
        a("array", json=["x"]),
        a("body-invalid-utf8", body=b'{"instructions": "\xff"}', code="invalid_json", **as_json),
        a("deeply-nested", body=nested(20_000), **as_json),
        a("multi-mb-json", 413, body=big_json(MB8, instructions="x"), code="payload_too_large",
          **as_json),
        a("idempotency-key-too-long", json={}, headers=idem("k" * 256)),
        a("idempotency-key-empty", json={}, headers=idem("")),
        a("idempotency-key-control-char", json={}, headers=idem("key\x01")),
        a("idempotency-key-tab", json={}, headers=idem("a\tb")),
        a("idempotency-key-space", json={}, headers=idem("a b")),
        a("idempotency-key-non-ascii", json={}, headers=idem("clé")),
        a("idempotency-key-reused-other-body", json={"instructions": "other"},
          headers=idem("seed-key"), code="idempotency_key_reused"),
        a("operator-key", 403, key="admin", json={}),
        a("no-key-invalid-json", 401, key=None, body=b"{bad", code="unauthorized", **as_json),
    ]


def analysis_batch_cases() -> list[Case]:
    b = rows("analysis-batch", "POST", "/v1/analysis-batches")
    as_json = {"content_type": "application/json"}
    ok = {"document_ids": ["{doc}"], "mode": "standard"}
    results = "/v1/analysis-batches/{id}/results"
    return [
        b("other-accounts-document", json={"document_ids": ["{gdoc}"]},
          code="unknown_documents"),
        b("unknown-document", json={"document_ids": ["doc_01J00000000000000000000000"]},
          code="unknown_documents"),
        b("traversal-id", json={"document_ids": ["../../etc/passwd"]}, code="unknown_documents"),
        b("ids-and-user", json={"document_ids": ["{doc}"], "user_id": "u1"}),
        b("neither-ids-nor-user", json={"mode": "standard"}),
        b("ids-empty", json={"document_ids": []}),
        b("ids-over-10000", json={"document_ids": ["{doc}"] * 10_001}),
        b("ids-not-strings", json={"document_ids": [1, 2]}),
        b("mode-unknown", json={**ok, "mode": "cheap"}),
        b("user-id-traversal", json={"user_id": "../globex"}),
        b("instructions-too-long", json={**ok, "instructions": "i" * 4001}),
        b("deeply-nested", body=nested(20_000), **as_json),
        b("multi-mb-json", 413, body=big_json(MB8, **ok), code="payload_too_large", **as_json),
        b("operator-key", 403, key="admin", json=ok),
        b("no-key", 401, key=None, json=ok),
        *id_cases("analysis-batch-results", "GET", results, owner_id="{gjob}", own_id="{job}"),
        Case("analysis-batch-results-limit-huge", "GET",
             "/v1/analysis-batches/{job}/results?limit=99999", 422),
        Case("analysis-batch-results-not-a-batch", "GET",
             "/v1/analysis-batches/{job}/results", 404),
    ]


def export_cases() -> list[Case]:
    e = rows("export", "POST", "/v1/exports")
    as_json = {"content_type": "application/json"}
    ok = {"user_id": "u1", "format": "zip"}
    return [
        e("format-unknown", json={"user_id": "u1", "format": "tar"}),
        e("format-upper-case", json={"user_id": "u1", "format": "ZIP"}),
        e("format-empty", json={"user_id": "u1", "format": ""}),
        e("format-null", json={"user_id": "u1", "format": None}),
        e("format-int", json={"user_id": "u1", "format": 1}),
        e("format-list", json={"user_id": "u1", "format": ["zip"]}),
        e("user-id-int", json={"user_id": 1, "format": "zip"}),
        e("user-id-list", json={"user_id": ["u1"], "format": "zip"}),
        e("user-id-traversal", json={"user_id": "../globex", "format": "zip"}),
        e("user-id-encoded-traversal", json={"user_id": "%2e%2e%2f", "format": "zip"}),
        e("user-id-too-long", json={"user_id": "u" * 129, "format": "zip"}),
        e("user-id-trailing-newline", json={"user_id": "u1\n", "format": "zip"}),
        e("missing-format", json={"user_id": "u1"}),
        e("missing-user-id", json={"format": "zip"}),
        e("empty-object", json={}),
        e("no-body"),
        e("text-plain", body=b'{"user_id": "u1", "format": "zip"}', content_type="text/plain"),
        e("invalid-utf8", body=b'{"user_id": "u\xff", "format": "zip"}', code="invalid_json",
          **as_json),
        e("deeply-nested", body=nested(20_000), **as_json),
        e("multi-mb-json", 413, body=big_json(MB8, **ok), code="payload_too_large", **as_json),
        e("multi-mb-json-chunked", 413, body=big_json(MB8, **ok), chunked=True,
          code="payload_too_large", **as_json),
        e("idempotency-key-too-long", json=ok, headers=idem("k" * 256)),
        e("idempotency-key-empty", json=ok, headers=idem("")),
        e("idempotency-key-nul", json=ok, headers=idem("a\x00b")),
        e("idempotency-key-del", json=ok, headers=idem("a\x7fb")),
        e("idempotency-key-newline", json=ok, headers=idem("a\nb")),
        e("idempotency-key-trailing-newline", json=ok, headers=idem("key\n")),
        e("no-key", 401, key=None, json=ok),
        e("no-key-invalid-json", 401, key=None, body=b"{bad", code="unauthorized", **as_json),
        e("wrong-key-invalid-json", 401, key=None, body=b"[", code="unauthorized",
          headers=(("authorization", "Bearer nope"),), counted=True, **as_json),
        e("wrong-key", 401, key=None, json=ok, headers=(("authorization", "Bearer nope"),),
          counted=True),
        e("operator-key", 403, key="admin", json=ok),
    ]


def webhook_cases() -> list[Case]:
    w = rows("endpoint-create", "POST", "/v1/webhook-endpoints")
    events = ["export.completed"]

    def unsafe(name: str, url: str) -> Case:
        return w(name, json={"url": url, "events": events}, code="unsafe_webhook_url")

    cases = [
        w("event-unknown", json={"url": PUBLIC_HOOK, "events": ["job.done"]}),
        w("event-unknown-among-known",
          json={"url": PUBLIC_HOOK, "events": ["export.completed", "export.exploded"]}),
        w("events-empty", json={"url": PUBLIC_HOOK, "events": []}),
        w("events-string", json={"url": PUBLIC_HOOK, "events": "export.completed"}),
        w("events-too-many", json={"url": PUBLIC_HOOK,
                                   "events": ["export.failed"] * (len(EVENT_TYPES) + 1)}),
        w("url-int", json={"url": 5, "events": events}),
        w("missing-url", json={"events": events}),
        w("missing-events", json={"url": PUBLIC_HOOK}),
        w("url-too-long", json={"url": PUBLIC_HOOK + "/" + "p" * 2048, "events": events}),
        w("url-host-lone-surrogate", json={"url": "https://\ud800.example/", "events": events}),
        unsafe("url-http", "http://93.184.216.34/hooks"),
        unsafe("url-loopback", "https://127.0.0.1/hooks"),
        unsafe("url-metadata", "https://169.254.169.254/latest/meta-data"),
        unsafe("url-ipv6-mapped", "https://[::ffff:10.0.0.1]/hooks"),
        unsafe("url-credentials", "https://user:pw@93.184.216.34/hooks"),
        unsafe("url-file", "file:///etc/passwd"),
        unsafe("url-javascript", "javascript:alert(1)"),
        unsafe("url-no-host", "https:///hooks"),
        unsafe("url-bad-port", "https://93.184.216.34:99999/hooks"),
        unsafe("url-host-label-too-long", f"https://{'a' * 300}.example/hooks"),
        unsafe("url-host-nul", "https://a\x00b.example/hooks"),
        unsafe("url-path-control-char", "https://93.184.216.34/a\x01b"),
        unsafe("url-site-local-ipv6", "https://[fec0::1]/hooks"),
        unsafe("url-ipv4-compatible-ipv6", "https://[::127.0.0.1]/hooks"),
        unsafe("url-documentation-ipv6", "https://[3fff::1]/hooks"),
        w("invalid-utf8", body=b'{"url": "https://\xff/", "events": ["export.failed"]}',
          content_type="application/json", code="invalid_json"),
        w("multi-mb-json", 413, body=big_json(MB8, url=PUBLIC_HOOK, events=events),
          content_type="application/json", code="payload_too_large"),
        w("no-key", 401, key=None, json={"url": PUBLIC_HOOK, "events": events}),
        w("operator-key", 403, key="admin", json={"url": PUBLIC_HOOK, "events": events}),
        Case("endpoint-list-operator-key", "GET", "/v1/webhook-endpoints", 403, key="admin"),
    ]
    for name, method, template in [
        ("get", "GET", "/v1/webhook-endpoints/{id}"),
        ("delete", "DELETE", "/v1/webhook-endpoints/{id}"),
        ("rotate", "POST", "/v1/webhook-endpoints/{id}/rotate-secret"),
        ("deliveries", "GET", "/v1/webhook-endpoints/{id}/deliveries"),
    ]:
        cases += id_cases(f"endpoint-{name}", method, template, owner_id="{gep}")
        # An id naming another of the endpoint's Redis keys (a sorted set), not an endpoint.
        cases.append(Case(f"endpoint-{name}-redis-key-suffix", method,
                          template.format(id="{ep}:deliveries"), 404))
    cases += id_cases("delivery-retry", "POST", "/v1/webhook-deliveries/{id}/retry",
                      owner_id="{gdl}")
    retry = rows("delivery-retry", "POST", "/v1/webhook-deliveries/{dl}/retry")
    listing = rows("deliveries", "GET", "/v1/webhook-endpoints/{ep}/deliveries")
    endpoint = rows("endpoint", "DELETE", "/v1/webhook-endpoints/{ep}")
    return [
        *cases,
        retry("redis-key-suffix", 404, path="/v1/webhook-deliveries/{dl}:attempts/retry"),
        retry("endpoint-id", 404, path="/v1/webhook-deliveries/{ep}/retry"),
        retry("no-key", 401, key=None),
        endpoint("delete-no-key", 401, key=None),
        Case("endpoint-rotate-operator-key", "POST", "/v1/webhook-endpoints/{ep}/rotate-secret",
             403, key="admin"),
        listing("cursor-not-digits", path="/v1/webhook-endpoints/{ep}/deliveries?cursor=abc"),
        listing("cursor-too-long", path="/v1/webhook-endpoints/{ep}/deliveries?cursor=" + "9" * 21),
        listing("limit-zero", path="/v1/webhook-endpoints/{ep}/deliveries?limit=0"),
        listing("limit-not-int", path="/v1/webhook-endpoints/{ep}/deliveries?limit=x"),
    ]


def operator_cases() -> list[Case]:
    dead = "/v1/dead-letters"
    replay = rows("dead-letter-replay", "POST", dead + "/{dead}/replay")
    return [
        Case("dead-letters-list-account-key", "GET", dead, 403, code="forbidden"),
        Case("dead-letter-get-account-key", "GET", dead + "/{dead}", 403, code="forbidden"),
        replay("owner-account-key", 403),
        replay("other-account-key", 403, key="globex"),
        replay("no-key", 401, key=None),
        replay("not-dead", 404, key="admin", path=dead + "/{job}/replay"),
        *id_cases("dead-letter-replay", "POST", dead + "/{id}/replay", owner_id=None, key="admin"),
        *id_cases("dead-letter-get", "GET", dead + "/{id}", owner_id=None, key="admin"),
        Case("dead-letters-limit-not-int", "GET", dead + "?limit=x", 422, key="admin"),
        Case("dead-letters-cursor-garbage", "GET", dead + "?cursor=%%%", 422, key="admin"),
        Case("canary-account-key", "POST", "/v1/canaries", 403),
        Case("canary-bad-idempotency-key", "POST", "/v1/canaries", 422, key="admin",
             headers=idem("\x00" * 3)),
        Case("queues-paused-account-key", "GET", "/v1/queues/paused", 403),
        Case("queues-pause-kind-account-key", "POST", "/v1/queues/kinds/export/pause", 403),
        Case("queues-resume-kind-no-key", "POST", "/v1/queues/kinds/export/resume", 401,
             key=None),
        Case("queues-pause-kind-bad-name", "POST", "/v1/queues/kinds/Export%0A/pause", 422,
             key="admin"),
        Case("queues-pause-account-traversal", "POST", "/v1/queues/accounts/..%2F..%2Fx/pause",
             404, key="admin"),
        Case("queues-pause-account-other-key", "POST", "/v1/queues/accounts/acme/pause", 403,
             key="globex"),
        Case("queues-resume-account-bad-name", "POST", "/v1/queues/accounts/a%20b/resume", 422,
             key="admin"),
        Case("usage-operator-key", "GET", "/v1/usage", 403, key="admin"),
        Case("usage-wrong-scheme", "GET", "/v1/usage", 401, key=None,
             headers=(("authorization", f"Basic {ACME_KEY}"),)),
        Case("usage-key-invalid-bytes", "GET", "/v1/usage", 401, key=None,
             headers=(("authorization", "Bearer \xff\xfe\x00"),), counted=True),
    ]


def dashboard_cases() -> list[Case]:
    def d(name: str, method: str, path: str, token: str, status: int = 303, **kw: Any) -> Case:
        cookie = (("cookie", f"{COOKIE}={{{token}}}"),)
        return Case(f"dashboard-{name}", method, path, status, key=None, headers=cookie, **kw)

    def raw_cookie(name: str, path: str, value: str) -> Case:
        return Case(f"dashboard-{name}", "GET", path, 303, key=None,
                    headers=(("cookie", f"{COOKIE}={value}"),))

    form = {"content_type": "application/x-www-form-urlencoded"}
    csrf = {"form": {"csrf": "{csrf}"}, **form}
    bad_csrf = {"code": "csrf_failed", **form}
    login = rows("dashboard-login", "POST", "/dashboard/login", key=None, **form)
    dead = "/dashboard/dead-letters/{dead}"
    return [
        d("overview-forged-cookie", "GET", "/dashboard", "forged"),
        d("overview-expired-cookie", "GET", "/dashboard", "expired"),
        d("overview-foreign-key-cookie", "GET", "/dashboard", "foreign"),
        d("overview-logged-out-session", "GET", "/dashboard", "logged_out"),
        d("overview-removed-key-session", "GET", "/dashboard", "removed", ends="removed"),
        d("overview-old-format-cookie", "GET", "/dashboard", "old_format"),
        d("summary-old-format-cookie", "GET", "/dashboard/summary.json", "old_format"),
        raw_cookie("overview-unsigned-cookie", "/dashboard", "admin.9999999999"),
        raw_cookie("overview-non-ascii-cookie", "/dashboard", "\xe9" * 43),
        raw_cookie("summary-non-ascii-utf8-cookie", "/dashboard/summary.json",
                   "é".encode().decode("latin-1") * 20),
        Case("dashboard-overview-bearer-key-only", "GET", "/dashboard", 303, key="admin"),
        d("summary-forged-cookie", "GET", "/dashboard/summary.json", "forged"),
        d("job-expired-cookie", "GET", "/dashboard/jobs/{job}", "expired"),
        d("webhook-forged-cookie", "GET", "/dashboard/webhooks/{ep}", "forged"),
        d("replay-forged-cookie", "POST", f"{dead}/replay", "forged", **csrf),
        d("replay-logged-out-session", "POST", f"{dead}/replay", "logged_out", **csrf),
        d("purge-expired-cookie", "POST", f"{dead}/purge", "expired", **csrf),
        d("purge-foreign-key-cookie", "POST", f"{dead}/purge", "foreign", **csrf),
        d("retry-forged-cookie", "POST", "/dashboard/deliveries/{dl}/retry", "forged", **csrf),
        d("purge-wrong-csrf", "POST", f"{dead}/purge", "session", 403, form={"csrf": "AAAA"},
          **bad_csrf),
        d("purge-non-ascii-csrf", "POST", f"{dead}/purge", "session", 403,
          form={"csrf": "é" * 43}, **bad_csrf),
        d("replay-csrf-trailing-newline", "POST", f"{dead}/replay", "session", 403,
          form={"csrf": "{csrf}\n"}, **bad_csrf),
        d("replay-missing-csrf", "POST", f"{dead}/replay", "session", 403, **bad_csrf),
        d("retry-wrong-csrf", "POST", "/dashboard/deliveries/{dl}/retry", "session", 403,
          form={"csrf": "{foreign_csrf}"}, **bad_csrf),
        login("account-key", 401, form={"key": ACME_KEY}, html=True, counted=True),
        login("non-ascii-key", 401, form={"key": "clé-ünïcödé"}, html=True, counted=True),
        login("key-too-long", form={"key": "k" * 513}),
    ]


# fmt: on
CORPUS = [
    *doc_cases(),
    *id_cases("document-get", "GET", "/v1/documents/{id}", owner_id="{gdoc}", key="acme"),
    *id_cases("document-delete", "DELETE", "/v1/documents/{id}", owner_id="{gdoc}", key="acme"),
    *analysis_cases(),
    *analysis_batch_cases(),
    *export_cases(),
    *job_cases(),
    *webhook_cases(),
    *operator_cases(),
    *dashboard_cases(),
]


@dataclass
class World:
    app: Any
    redis: Redis
    storage: Any
    settings: Settings
    ids: dict[str, str] = field(default_factory=dict)


async def seed(client: Any, settings: Settings, redis: Redis) -> dict[str, str]:
    """One of every resource kind for acme and for globex, a dead letter, and sessions."""
    ids: dict[str, str] = {}
    store = JobStore(redis, settings, TEST_REGISTRY)
    deliveries = DeliveryLog(store, EndpointStore(redis, settings))
    for prefix, headers, account in (("", ACME, "acme"), ("g", GLOBEX, "globex")):
        doc = await client.post(
            "/v1/documents", headers=headers, json={"user_id": "u1", "text": "t"}
        )
        ids[f"{prefix}doc"] = doc.json()["id"]
        job = await client.post(
            f"/v1/documents/{ids[f'{prefix}doc']}/analyses",
            headers=headers | {"Idempotency-Key": "seed-key"},
            json={"instructions": "seed"},
        )
        ids[f"{prefix}job"] = job.json()["id"]
        export = await client.post(
            "/v1/exports", headers=headers, json={"user_id": "u1", "format": "zip"}
        )
        ids[f"{prefix}export"] = export.json()["id"]
        endpoint = await client.post(
            "/v1/webhook-endpoints",
            headers=headers,
            json={"url": PUBLIC_HOOK, "events": ["export.completed"]},
        )
        ids[f"{prefix}ep"] = endpoint.json()["id"]
        await deliveries.publish(account, "export.completed", f"evt_{prefix}seed", {"n": 1})
        (delivery,), _ = await deliveries.list(ids[f"{prefix}ep"], 1, None)
        ids[f"{prefix}dl"] = delivery.id
    dead = (await store.create(kind="test.broken", account="acme", args={"doc": 1})).job_id
    record = await store.get(dead)
    assert record is not None
    error = {"type": "bad_document", "message": "seeded", "retryable": False}
    assert await fail_job(store, None, record, error, "seeded traceback")
    ids["dead"] = dead
    ids["canary"] = (await client.post("/v1/canaries", headers=ADMIN)).json()["id"]
    return ids | await seed_sessions(settings, redis)


async def seed_sessions(settings: Settings, redis: Redis) -> dict[str, str]:
    """Dashboard sessions in every state a refused one can be in, and the review's cookie."""
    sessions = Sessions(redis, settings)
    operator = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    session = await sessions.open(operator)
    logged_out = await sessions.open(operator)
    await sessions.end(logged_out)
    other_key = base64.b64encode(b"k" * 32).decode()
    foreign = Sessions(redis, settings.model_copy(update={"secrets_key": SecretStr(other_key)}))
    return {
        "session": session,
        "csrf": sessions.csrf_token(session),
        "expired": await sessions.open(operator, now=time.time() - SESSION_SECONDS - 1),
        "forged": secrets.token_urlsafe(32),
        "foreign": await foreign.open(operator),
        "foreign_csrf": foreign.csrf_token(session),
        "logged_out": logged_out,
        "removed": await sessions.open(hashlib.sha256(b"a-retired-operator-key").hexdigest()),
        "old_format": review_cookie(),
    }


@pytest.fixture(scope="module")
async def world(redis_server, s3_server):
    """The app over a Redis and a bucket seeded once for the whole corpus."""
    redis = Redis.from_url(redis_server.url)
    await redis.flushall()
    s3_server.reset()
    settings = make_settings(redis_server.url, s3_server.url)
    async with open_storage(settings) as storage, api_client(settings) as client:
        await storage.ensure_bucket()
        ids = await seed(client, settings, redis)
        yield World(app=client.app, redis=redis, storage=storage, settings=settings, ids=ids)
    await redis.aclose()


async def send(world: World, case: Case) -> RawAnswer:
    fill = lambda text: text.format_map(world.ids)  # noqa: E731
    headers = [(k.encode("latin-1"), fill(v).encode("latin-1")) for k, v in case.headers]
    if case.key:
        headers.append((b"authorization", f"Bearer {KEYS[case.key]}".encode()))
    body = case.body() if callable(case.body) else case.body
    content_type = case.content_type
    if case.json is not NO_JSON:
        body, content_type = json.dumps(case.json).encode(), "application/json"
    elif case.form is not None:
        body = urlencode({k: fill(v) for k, v in case.form.items()}).encode()
    if content_type:
        headers.append((b"content-type", content_type.encode()))
    target = case.path.format_map(world.ids)
    return await raw_request(world.app, case.method, target, headers, body, case.chunked)


def check_refusal(case: Case, answer: RawAnswer) -> None:
    shown = answer.body[:300]
    assert answer.status == case.status, f"{case.name}: {answer.status} {shown!r}"
    assert answer.headers.get("x-request-id"), "every answer goes through the request middleware"
    if answer.status == 303:
        assert answer.headers["location"] == "/dashboard/login"
        return
    if case.html:
        assert answer.content_type.startswith("text/html")
        return
    assert answer.content_type == PROBLEM, f"{case.name}: {answer.content_type} {shown!r}"
    problem = answer.json()
    assert problem["status"] == answer.status
    assert isinstance(problem["title"], str) and problem["title"]
    assert problem["type"].startswith("https://longrun.dev/problems/")
    assert isinstance(problem.get("detail", ""), str)
    assert isinstance(problem.get("instance", ""), str)
    if case.code:
        assert problem["code"] == case.code, problem
    # Never the input echoed back, nor a stack trace.
    assert len(answer.body) < 8192 and b"Traceback" not in answer.body


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
async def test_hostile_request_is_refused_and_changes_nothing(world, case):
    failures = failure_key(CLIENT_ADDRESS)
    redis_before, s3_before = await redis_snapshot(world.redis), await s3_snapshot(world.storage)
    try:
        answer = await send(world, case)
        changes = redis_changes(redis_before, await redis_snapshot(world.redis))
    finally:
        await world.redis.delete(failures)  # each row starts with a clean count
    check_refusal(case, answer)
    allowed = [f"added {failures.encode()!r} (string)"] if case.counted else []
    if case.ends:
        ended = Sessions(world.redis, world.settings).storage_key(world.ids[case.ends])
        allowed += [f"removed {ended.encode()!r}", f"changed {SESSION_INDEX.encode()!r}"]
    assert changes == sorted(allowed)
    assert await s3_snapshot(world.storage) == s3_before


def test_corpus_covers_every_v1_route():
    app = create_app(make_settings("redis://127.0.0.1:1/0", "http://127.0.0.1:1"))
    routes = {(op.method, op.path) for op in operations(app) if op.path.startswith("/v1/")}
    assert len(routes) >= 20
    covered = set()
    for case in CORPUS:
        given = case.path.split("?")[0].split("/")
        for method, template in routes:
            parts = template.split("/")
            if (
                method == case.method
                and len(parts) == len(given)
                and all(p == g or p.startswith("{") for p, g in zip(parts, given, strict=True))
            ):
                covered.add((method, template))
    assert routes - covered == set()
    assert len(CORPUS) == len({c.name for c in CORPUS}), "case names are unique"
