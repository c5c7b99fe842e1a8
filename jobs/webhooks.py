"""Webhooks to customer systems, the way Standard Webhooks, Svix and Stripe do them.

Endpoints have a `whsec_` secret (stored encrypted; shown once), rotated with
the old one still signing for `WEBHOOK_SECRET_OVERLAP_SECONDS`. A job that
finishes puts its id on an outbox in the same Redis step; a publisher loop in
every worker turns it into an event and fans it out, one delivery per
subscribed endpoint (deterministic ids, so a re-publish adds nothing). Each
delivery attempt is its own arq job, scheduled on `WEBHOOK_RETRY_SCHEDULE`
with a little jitter, so the ~27 h schedule is not cut by arq's job expiry.
Every attempt is logged. `410 Gone` disables the endpoint, and so does failing
every attempt for `WEBHOOK_DISABLE_AFTER_SECONDS`.

Keys (under `lr:wh:`): `ep:<id>` (hash), `acct:<account>` (zset of endpoints),
`dl:<id>` (hash), `dl:<id>:attempts` (list), `ep:<id>:deliveries` (zset).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from arq import Retry
from arq.worker import Function, func
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError
from standardwebhooks import Webhook
from ulid import ULID

from jobs import metrics
from jobs.crypto import SecretBox
from jobs.errors import Conflict, InvalidInput
from jobs.logs import JOB_CONTEXT_VAR, REQUEST_ID_VAR
from jobs.records import PREFIX, JobRecord, JobState, now_ms, rfc3339, running_key, waiting_key
from jobs.settings import Settings
from jobs.ssrf import UnsafeURL, resolve_target
from jobs.views import JobPresenter, job_resource

log = logging.getLogger("jobs.webhooks")

EVENT_TYPES = ("analysis.completed", "analysis.failed", "export.completed", "export.failed")
EVENT_KINDS = {"analysis", "export"}
DELIVER = "webhook.deliver"
KIND = "webhook"
OUTBOX_KEY = f"{PREFIX}outbox"
EXCERPT_BYTES = 2048
WH = f"{PREFIX}wh:"
ALL_ENDPOINTS_KEY = f"{WH}all"
# Ids are checked before they become part of a key: `we_<id>:deliveries` names another
# key of the endpoint (a sorted set), which a lookup must not read as an endpoint.
ENDPOINT_ID_PATTERN = re.compile(r"^we_[0-9A-HJKMNP-TV-Z]{26}$")
DELIVERY_ID_PATTERN = re.compile(r"^whd_[0-9a-f]{26}$")


def endpoint_key(endpoint_id: str) -> str:
    return f"{WH}ep:{endpoint_id}"


def account_endpoints_key(account: str) -> str:
    return f"{WH}acct:{account}"


def delivery_key(delivery_id: str) -> str:
    return f"{WH}dl:{delivery_id}"


def delivery_attempts_key(delivery_id: str) -> str:
    return f"{WH}dl:{delivery_id}:attempts"


def endpoint_deliveries_key(endpoint_id: str) -> str:
    return f"{WH}ep:{endpoint_id}:deliveries"


def outbox_processing_key(worker: str) -> str:
    return f"{OUTBOX_KEY}:{worker}"


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes, base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _text(value: bytes | None) -> str | None:
    return value.decode() if value is not None else None


@dataclass
class Endpoint:
    id: str
    account: str
    url: str
    events: list[str]
    created_at: int
    secrets: list[dict[str, Any]] = field(default_factory=list)  # {"sealed", "expires_at"}
    disabled_at: int | None = None
    disabled_reason: str | None = None
    failing_since: int | None = None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "events": self.events,
            "created_at": rfc3339(self.created_at),
            "disabled": self.disabled,
            "disabled_at": rfc3339(self.disabled_at),
            "disabled_reason": self.disabled_reason,
        }


@dataclass
class Delivery:
    id: str
    endpoint_id: str
    account: str
    event_type: str
    event_id: str
    webhook_id: str
    body: str
    state: str
    created_at: int
    attempts: list[dict[str, Any]] = field(default_factory=list)
    next_attempt_at: int | None = None
    request_id: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "endpoint_id": self.endpoint_id,
            "event_type": self.event_type,
            "event_id": self.event_id,
            "webhook_id": self.webhook_id,
            "state": self.state,
            "created_at": rfc3339(self.created_at),
            "next_attempt_at": rfc3339(self.next_attempt_at),
            "attempts": [
                {**a, "at": rfc3339(a["at"])} for a in reversed(self.attempts)
            ],  # newest first
        }


class WebhookStore:
    """Endpoints, deliveries and their attempt logs in Redis."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.box = SecretBox(settings)

    # endpoints

    async def create_endpoint(
        self, account: str, url: str, events: list[str]
    ) -> tuple[Endpoint, str]:
        """Register an endpoint after checking its URL; returns it and its secret."""
        await resolve_target(url, self.settings.webhook_allow_private_networks)
        endpoint_id = f"we_{ULID()}"
        secret = new_secret()
        endpoint = Endpoint(
            id=endpoint_id,
            account=account,
            url=url,
            events=sorted(set(events)),
            created_at=now_ms(),
            secrets=[{"sealed": self.box.seal(secret, endpoint_id), "expires_at": None}],
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(endpoint_key(endpoint_id), mapping=self._endpoint_fields(endpoint))
            pipe.zadd(account_endpoints_key(account), {endpoint_id: endpoint.created_at})
            pipe.zadd(ALL_ENDPOINTS_KEY, {endpoint_id: endpoint.created_at})
            await pipe.execute()
        return endpoint, secret

    @staticmethod
    def _endpoint_fields(endpoint: Endpoint) -> dict[str, str | int]:
        fields: dict[str, str | int] = {
            "id": endpoint.id,
            "account": endpoint.account,
            "url": endpoint.url,
            "events": json.dumps(endpoint.events),
            "created_at": endpoint.created_at,
            "secrets": json.dumps(endpoint.secrets),
        }
        return fields

    async def get_endpoint(self, endpoint_id: str) -> Endpoint | None:
        """The endpoint, or None (also for a string that is not an endpoint id)."""
        if not ENDPOINT_ID_PATTERN.match(endpoint_id):
            return None
        raw = await self.redis.hgetall(endpoint_key(endpoint_id))
        if not raw:
            return None
        h = {k.decode(): v.decode() for k, v in raw.items()}
        return Endpoint(
            id=h["id"],
            account=h["account"],
            url=h["url"],
            events=json.loads(h["events"]),
            created_at=int(h["created_at"]),
            secrets=json.loads(h["secrets"]),
            disabled_at=int(h["disabled_at"]) if h.get("disabled_at") else None,
            disabled_reason=h.get("disabled_reason") or None,
            failing_since=int(h["failing_since"]) if h.get("failing_since") else None,
        )

    async def list_endpoints(self, account: str | None) -> list[Endpoint]:
        """An account's endpoints, newest first (every account's with None)."""
        index = account_endpoints_key(account) if account else ALL_ENDPOINTS_KEY
        ids = [m.decode() for m in await self.redis.zrevrange(index, 0, 999)]
        found = [await self.get_endpoint(i) for i in ids]
        return [e for e in found if e is not None]

    async def delete_endpoint(self, endpoint: Endpoint) -> None:
        """Forget an endpoint; its pending deliveries end `failed` at their next attempt."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(endpoint_key(endpoint.id))
            pipe.zrem(account_endpoints_key(endpoint.account), endpoint.id)
            pipe.zrem(ALL_ENDPOINTS_KEY, endpoint.id)
            await pipe.execute()

    async def rotate_secret(self, endpoint: Endpoint) -> str:
        """A new secret; the old ones keep signing for the overlap period."""
        now = now_ms()
        overlap_ms = self.settings.webhook_secret_overlap_seconds * 1000
        kept = [
            {**s, "expires_at": s["expires_at"] or now + overlap_ms}
            for s in endpoint.secrets
            if s["expires_at"] is None or s["expires_at"] > now
        ][:9]
        secret = new_secret()
        endpoint.secrets = [{"sealed": self.box.seal(secret, endpoint.id), "expires_at": None}]
        endpoint.secrets += kept
        await self.redis.hset(endpoint_key(endpoint.id), "secrets", json.dumps(endpoint.secrets))
        return secret

    def signing_secrets(self, endpoint: Endpoint) -> list[str]:
        """The secrets that sign now: the current one and any still in their overlap."""
        now = now_ms()
        return [
            self.box.open(s["sealed"], endpoint.id)
            for s in endpoint.secrets
            if s["expires_at"] is None or s["expires_at"] > now
        ]

    async def disable(self, endpoint: Endpoint, reason: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                endpoint_key(endpoint.id),
                mapping={"disabled_at": now_ms(), "disabled_reason": reason},
            )
            pipe.incr(f"{WH}disabled-total")
            await pipe.execute()
        metrics.WEBHOOK_ENDPOINTS_DISABLED.inc()
        log.warning(
            "webhook endpoint %s disabled: %s",
            endpoint.id,
            reason,
            extra={"account": endpoint.account, "endpoint_id": endpoint.id},
        )

    # deliveries

    async def create_delivery(
        self,
        endpoint: Endpoint,
        event_type: str,
        event_id: str,
        body: str,
        request_id: str | None,
    ) -> bool:
        """Create the delivery of one event to one endpoint and enqueue its first attempt;
        False when it already exists (the same event published again)."""
        digest = hashlib.sha256(f"{event_id}:{endpoint.id}".encode()).hexdigest()[:26]
        delivery_id = f"whd_{digest}"
        now = now_ms()
        fields = {
            "id": delivery_id,
            "endpoint_id": endpoint.id,
            "account": endpoint.account,
            "event_type": event_type,
            "event_id": event_id,
            "webhook_id": f"msg_{digest}",
            "body": body,
            "state": "pending",
            "created_at": now,
            "request_id": request_id or "",
        }
        retention = self.settings.webhook_log_retention_seconds
        # The delivery and its first attempt are written in one transaction: a worker that
        # dies half-way must not leave a delivery that exists but will never be attempted.
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(delivery_key(delivery_id))
            if await pipe.exists(delivery_key(delivery_id)):
                return False
            pipe.multi()
            pipe.hset(delivery_key(delivery_id), mapping=fields)  # type: ignore[arg-type]
            pipe.expire(delivery_key(delivery_id), retention)
            pipe.zadd(endpoint_deliveries_key(endpoint.id), {delivery_id: now})
            pipe.zremrangebyscore(
                endpoint_deliveries_key(endpoint.id), "-inf", now - retention * 1000
            )
            self._queue_attempt(pipe, delivery_id, 1, self.settings.webhook_retry_schedule[0])
            try:
                await pipe.execute()
            except WatchError:
                if await self.redis.exists(delivery_key(delivery_id)):
                    return False  # published at the same moment by another worker
                raise  # the connection broke under the transaction: the publisher retries
        return True

    async def schedule_attempt(
        self, delivery_id: str, attempt: int, delay_s: float, manual: bool = False
    ) -> None:
        """Enqueue one delivery attempt as its own arq job, due after `delay_s`."""
        async with self.redis.pipeline(transaction=True) as pipe:
            self._queue_attempt(pipe, delivery_id, attempt, delay_s, manual)
            await pipe.execute()

    def _queue_attempt(
        self, pipe: Pipeline, delivery_id: str, attempt: int, delay_s: float, manual: bool = False
    ) -> None:
        due = now_ms() + int(delay_s * 1000)
        job_id = f"{delivery_id}:{'m' if manual else ''}{attempt}"
        payload = json.dumps(
            {"t": None, "f": DELIVER, "a": [delivery_id, attempt, manual], "k": {}, "et": due}
        )
        ttl_ms = (int(delay_s) + 7 * 24 * 3600) * 1000
        pipe.set(f"arq:job:{job_id}", payload, px=ttl_ms)
        pipe.zadd(self.settings.queue_name, {job_id: due})
        pipe.zadd(waiting_key(KIND), {job_id: due})
        pipe.sadd(f"{PREFIX}kinds", KIND)
        pipe.hset(delivery_key(delivery_id), mapping={"next_attempt_at": due, "state": "pending"})

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        """The delivery with its attempts, or None (also for a string that is not a
        delivery id)."""
        if not DELIVERY_ID_PATTERN.match(delivery_id):
            return None
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(delivery_key(delivery_id))
            pipe.lrange(delivery_attempts_key(delivery_id), 0, -1)
            raw, attempts = await pipe.execute()
        if not raw or b"endpoint_id" not in raw:
            return None
        h = {k.decode(): v.decode() for k, v in raw.items()}
        return Delivery(
            id=h["id"],
            endpoint_id=h["endpoint_id"],
            account=h["account"],
            event_type=h["event_type"],
            event_id=h["event_id"],
            webhook_id=h["webhook_id"],
            body=h["body"],
            state=h["state"],
            created_at=int(h["created_at"]),
            attempts=[json.loads(a) for a in attempts],
            next_attempt_at=int(h["next_attempt_at"]) if h.get("next_attempt_at") else None,
            request_id=h.get("request_id") or None,
        )

    async def list_deliveries(
        self, endpoint_id: str, limit: int, before: int | None
    ) -> tuple[list[Delivery], int | None]:
        """Newest first; the cursor is the created time (ms) to list before."""
        hi = f"({before}" if before is not None else "+inf"
        entries = await self.redis.zrevrangebyscore(
            endpoint_deliveries_key(endpoint_id), hi, "-inf", start=0, num=limit + 1,
            withscores=True,
        )  # fmt: skip
        found = [await self.get_delivery(m.decode()) for m, _ in entries[:limit]]
        more = len(entries) > limit
        return [d for d in found if d], int(entries[limit - 1][1]) if more else None

    async def log_attempt(
        self, delivery: Delivery, entry: dict[str, Any], state: str | None
    ) -> None:
        retention = self.settings.webhook_log_retention_seconds
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(delivery_attempts_key(delivery.id), json.dumps(entry))
            pipe.expire(delivery_attempts_key(delivery.id), retention)
            if state is not None:
                pipe.hset(
                    delivery_key(delivery.id), mapping={"state": state, "next_attempt_at": ""}
                )
            await pipe.execute()

    async def retry_delivery(self, delivery: Delivery) -> None:
        """One more attempt now, by hand; 409 when the endpoint is disabled or gone."""
        endpoint = await self.get_endpoint(delivery.endpoint_id)
        if endpoint is None or endpoint.disabled:
            raise Conflict("the delivery's endpoint is disabled or deleted")
        await self.schedule_attempt(delivery.id, len(delivery.attempts) + 1, 0, manual=True)

    async def publish(
        self,
        account: str,
        event_type: str,
        event_id: str,
        data: dict[str, Any],
        request_id: str | None = None,
    ) -> int:
        """Fan an event out to the account's enabled endpoints subscribed to it."""
        if event_type not in EVENT_TYPES:
            raise InvalidInput(f"unknown event type {event_type!r}")
        body = json.dumps(
            {"type": event_type, "timestamp": rfc3339(now_ms()), "data": data},
            separators=(",", ":"),
        )
        created = 0
        for endpoint in await self.list_endpoints(account):
            if endpoint.disabled or event_type not in endpoint.events:
                continue
            created += await self.create_delivery(endpoint, event_type, event_id, body, request_id)
        return created


@dataclass
class AttemptOutcome:
    entry: dict[str, Any]
    success: bool
    gone: bool = False
    retry_after: float | None = None


async def attempt_delivery(
    client: httpx.AsyncClient, store: WebhookStore, endpoint: Endpoint, delivery: Delivery,
    attempt: int, body: str,
) -> AttemptOutcome:  # fmt: skip
    """POST the event once, signed afresh with every signing secret; never raises."""
    settings = store.settings
    entry: dict[str, Any] = {
        "attempt": attempt, "at": now_ms(), "status_code": None, "latency_ms": None,
        "error": None, "response_excerpt": None,
    }  # fmt: skip
    try:
        target = await resolve_target(endpoint.url, settings.webhook_allow_private_networks)
    except UnsafeURL as exc:
        entry["error"] = f"refused: {exc.message}"
        return AttemptOutcome(entry=entry, success=False)
    moment = datetime.now(UTC)
    signature = " ".join(
        Webhook(secret).sign(delivery.webhook_id, moment, body)
        for secret in store.signing_secrets(endpoint)
    )
    headers = {
        "Host": target.host_header,
        "content-type": "application/json",
        "user-agent": "longrun-webhooks/0.1",
        "webhook-id": delivery.webhook_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    request = client.build_request(
        "POST", target.pinned_url(), content=body.encode(), headers=headers,
        extensions=extensions,
    )  # fmt: skip
    clock = time.monotonic()
    try:
        # httpx's timeout bounds each phase; this bounds the attempt (a receiver that
        # dribbles its answer byte by byte).
        async with asyncio.timeout(settings.webhook_timeout_seconds):
            response = await client.send(request, stream=True)
            try:
                excerpt = b""
                async for chunk in response.aiter_bytes():
                    excerpt += chunk
                    if len(excerpt) >= EXCERPT_BYTES:
                        break
            finally:
                await response.aclose()
    except (httpx.TimeoutException, TimeoutError):
        entry["error"] = f"no answer within {settings.webhook_timeout_seconds:g}s"
        entry["latency_ms"] = round((time.monotonic() - clock) * 1000)
        return AttemptOutcome(entry=entry, success=False)
    except httpx.HTTPError as exc:
        entry["error"] = f"{type(exc).__name__}: {exc}"[:500]
        entry["latency_ms"] = round((time.monotonic() - clock) * 1000)
        return AttemptOutcome(entry=entry, success=False)
    status = response.status_code
    entry.update(
        status_code=status,
        latency_ms=round((time.monotonic() - clock) * 1000),
        response_excerpt=excerpt[:EXCERPT_BYTES].decode("utf-8", "replace"),
    )
    if 300 <= status < 400:
        entry["error"] = f"redirect to {response.headers.get('location', '?')} (not followed)"
    elif not 200 <= status < 300:
        entry["error"] = f"HTTP {status}"
    retry_after = response.headers.get("retry-after")
    return AttemptOutcome(
        entry=entry,
        success=200 <= status < 300,
        gone=status == 410,
        retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
    )


async def deliver_webhook(
    ctx: dict[str, Any], delivery_id: str, attempt: int, manual: bool = False
) -> None:
    """One delivery attempt (an arq job). Success ends the delivery; a failure schedules the
    next attempt on WEBHOOK_RETRY_SCHEDULE (at least the receiver's retry-after), or ends
    it `failed` once the schedule is used up or the endpoint is disabled."""
    deps = ctx["deps"]
    redis: Redis = deps.redis
    job_id = ctx["job_id"]
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrem(waiting_key(KIND), job_id)
        pipe.zadd(running_key(KIND), {job_id: now_ms()})
        await pipe.execute()
    try:
        await _deliver(deps, delivery_id, attempt, manual)
    except Exception as exc:
        # Redis trouble mid-attempt: try the same attempt again shortly.
        log.warning("webhook attempt %s failed to run: %s", job_id, exc)
        await redis.zadd(waiting_key(KIND), {job_id: now_ms() + 10_000})
        raise Retry(defer=10) from exc
    finally:
        await redis.zrem(running_key(KIND), job_id)


async def _deliver(deps: Any, delivery_id: str, attempt: int, manual: bool) -> None:
    store: WebhookStore = deps.webhooks
    settings: Settings = deps.settings
    delivery = await store.get_delivery(delivery_id)
    if delivery is None or (delivery.state != "pending" and not manual):
        return
    endpoint = await store.get_endpoint(delivery.endpoint_id)
    if endpoint is None or endpoint.disabled:
        entry = {
            "attempt": attempt, "at": now_ms(), "status_code": None, "latency_ms": None,
            "error": "the endpoint is disabled or deleted", "response_excerpt": None,
        }  # fmt: skip
        await store.log_attempt(delivery, entry, "failed")
        return
    REQUEST_ID_VAR.set(delivery.request_id)
    JOB_CONTEXT_VAR.set({"delivery_id": delivery.id, "account": delivery.account,
                         "endpoint_id": endpoint.id, "attempt": attempt})  # fmt: skip
    body = await event_body(delivery.body, deps.presenter)
    outcome = await attempt_delivery(deps.http, store, endpoint, delivery, attempt, body)
    log.info("webhook attempt %d: %s", attempt, outcome.entry["error"] or "delivered",
             extra={"status_code": outcome.entry["status_code"]})  # fmt: skip
    kind = "succeeded" if outcome.success else "gone" if outcome.gone else "failed"
    metrics.WEBHOOK_ATTEMPTS.labels(kind).inc()
    if outcome.entry["latency_ms"] is not None:
        metrics.WEBHOOK_LATENCY.observe(outcome.entry["latency_ms"] / 1000)
    if delivery.request_id:
        outcome.entry["request_id"] = delivery.request_id
    if outcome.success:
        await store.log_attempt(delivery, outcome.entry, "succeeded")
        if endpoint.failing_since:
            await store.redis.hdel(endpoint_key(endpoint.id), "failing_since")
        return
    now = now_ms()
    if outcome.gone:
        await store.log_attempt(delivery, outcome.entry, "failed")
        await store.disable(endpoint, "the endpoint answered 410 Gone")
        return
    failing_since = endpoint.failing_since or now
    if endpoint.failing_since is None:
        await store.redis.hset(endpoint_key(endpoint.id), "failing_since", now)
    if now - failing_since >= settings.webhook_disable_after_seconds * 1000:
        await store.log_attempt(delivery, outcome.entry, "failed")
        days = settings.webhook_disable_after_seconds / 86400
        await store.disable(endpoint, f"every attempt failed for {days:g} days")
        return
    schedule = settings.webhook_retry_schedule
    if manual or attempt >= len(schedule):
        await store.log_attempt(delivery, outcome.entry, "failed")
        return
    await store.log_attempt(delivery, outcome.entry, None)
    delay = schedule[attempt] * deps.rng.uniform(0.9, 1.1)
    if outcome.retry_after is not None:
        delay = max(delay, min(outcome.retry_after, 24 * 3600))
    await store.schedule_attempt(delivery.id, attempt + 1, delay)


async def publish_job_event(store: WebhookStore, record: JobRecord) -> int:
    """Publish `<kind>.completed` or `<kind>.failed` for a finished job, once."""
    if record.kind not in EVENT_KINDS:
        return 0
    if record.state not in (JobState.SUCCEEDED, JobState.FAILED):
        return 0
    outcome = "completed" if record.state == JobState.SUCCEEDED else "failed"
    # Stored as the record has it; each attempt presents it afresh (`event_body`), so an
    # export's presigned URL is never stored and never stale on a late retry.
    return await store.publish(
        record.account, f"{record.kind}.{outcome}", f"evt_{record.id}", job_resource(record),
        record.request_id,
    )  # fmt: skip


async def event_body(stored: str, presenter: JobPresenter | None) -> str:
    """The body one attempt sends: the stored event with its job presented now."""
    event = json.loads(stored)
    if presenter is None or not isinstance(event.get("data"), dict):
        return stored
    event["data"] = await presenter.present(event["data"])
    return json.dumps(event, separators=(",", ":"))


async def keep_publishing(deps: Any) -> None:
    """Drain the outbox of finished jobs into webhook deliveries (and dead letters into
    failure alerts), until cancelled."""
    redis: Redis = deps.redis
    while True:
        processing = outbox_processing_key(deps.worker_id)
        try:
            member = await redis.blmove(OUTBOX_KEY, processing, 1, "LEFT", "RIGHT")
            if member is None:
                continue
            record = await deps.store.get(member.decode())
            if record is not None:
                await publish_job_event(deps.webhooks, record)
                if record.state == JobState.FAILED and deps.alerter is not None:
                    await deps.alerter.dead_letter(record)
            await redis.lrem(processing, 1, member)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webhook publisher failed; the event goes back to the outbox")
            # Publishing is idempotent per event and endpoint, so trying again is safe.
            with contextlib.suppress(Exception):
                await requeue_outbox(redis, deps.worker_id)
            await asyncio.sleep(1)
            await asyncio.sleep(1)


async def requeue_outbox(redis: Redis, worker: str) -> None:
    """Give a worker's half-published events back to the outbox (a dead worker's, or this
    one's after a failure or at shutdown)."""
    while await redis.lmove(outbox_processing_key(worker), OUTBOX_KEY, "RIGHT", "LEFT"):
        pass


def deliver_function() -> Function:
    """The arq function for delivery attempts."""
    return func(deliver_webhook, name=DELIVER, max_tries=20)
