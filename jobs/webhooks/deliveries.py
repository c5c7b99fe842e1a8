"""Deliveries: one event to one endpoint, each a job of the engine (kind `webhook`).

A delivery has a record, a lease, a reconciler and queue health like every other job; its
attempts are the job's attempts, each one HTTP request (`attempt.py`), on
`WEBHOOK_RETRY_SCHEDULE` with ±10 % jitter, honouring the receiver's `retry-after`. Its id
is fixed by the event and the endpoint (`whd_<digest>`), so publishing an event twice
makes one delivery, and its `webhook-id` is the same on every attempt. A delivery that
used up its schedule ends `failed` in the delivery log; it is not a dead letter. A retry by
hand makes a waiting delivery due now (its schedule goes on) or gives an ended one one more
attempt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from dataclasses import dataclass, field
from typing import Any

from jobs import metrics, tracing
from jobs.engine import JobRun
from jobs.engine.presenter import JobPresenter
from jobs.engine.records import JobRecord, JobState, Page, now_ms, rfc3339
from jobs.engine.store import JobStore
from jobs.errors import Conflict, InvalidInput, TransientError
from jobs.logs import JOB_CONTEXT_VAR
from jobs.settings import Settings
from jobs.webhooks.attempt import AttemptOutcome, attempt_delivery
from jobs.webhooks.endpoints import Endpoint, EndpointStore, endpoint_deliveries_key
from jobs.webhooks.transport import WebhookClient

log = logging.getLogger("jobs.webhooks")

KIND = "webhook"
DELIVERY_ID_PATTERN = re.compile(r"whd_[0-9a-f]{26}")
STATES = {
    JobState.QUEUED: "pending",
    JobState.RUNNING: "pending",
    JobState.RETRYING: "pending",
    JobState.SUCCEEDED: "succeeded",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "failed",
}


class EndpointUnavailable(InvalidInput):
    """The delivery's endpoint was deleted or disabled: no attempt is made."""

    type = "endpoint_unavailable"


class EndpointGone(InvalidInput):
    """The endpoint answered 410 Gone: it is disabled, the delivery ends."""

    type = "endpoint_gone"


class DeliveryFailed(TransientError):
    """The receiver did not take the event (an HTTP error, a redirect, no answer)."""

    type = "delivery_failed"


def delivery_id(event_id: str, endpoint_id: str) -> tuple[str, str]:
    """The delivery's id and its `webhook-id`, fixed by the event and the endpoint."""
    digest = hashlib.sha256(f"{event_id}:{endpoint_id}".encode()).hexdigest()[:26]
    return f"whd_{digest}", f"msg_{digest}"


def schedule_backoff(attempt: int, settings: Settings, rng: random.Random) -> tuple[float, float]:
    """The wait before attempt `attempt + 1`: its entry of the schedule, ±10 %."""
    schedule = settings.webhook_retry_schedule
    delay = float(schedule[min(attempt, len(schedule) - 1)])
    return delay * rng.uniform(0.9, 1.1), delay


@dataclass
class Delivery:
    """A delivery as the delivery log shows it (from its job record)."""

    id: str
    endpoint_id: str
    account: str
    event_type: str
    event_id: str
    webhook_id: str
    state: str
    created_at: int
    next_attempt_at: int | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_record(cls, record: JobRecord) -> Delivery:
        args = record.args
        return cls(
            id=record.id,
            endpoint_id=args["endpoint_id"],
            account=record.account,
            event_type=args["event_type"],
            event_id=args["event_id"],
            webhook_id=args["webhook_id"],
            state=STATES[record.state],
            created_at=record.created_at,
            next_attempt_at=record.next_attempt_at,
            attempts=record.attempts,
        )

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
            # Attempts that ended, newest first (one in flight has nothing to show yet).
            "attempts": [_attempt_public(a) for a in reversed(self.attempts) if "outcome" in a],
        }


def _attempt_public(entry: dict[str, Any]) -> dict[str, Any]:
    error = entry.get("error")
    return {
        "attempt": entry.get("attempt"),
        "at": rfc3339(entry.get("started_at")),
        "outcome": entry["outcome"],
        "status_code": entry.get("status_code"),
        "latency_ms": entry.get("latency_ms"),
        "error": error.get("message") if isinstance(error, dict) else error,
        "response_excerpt": entry.get("response_excerpt"),
    }


class DeliveryLog:
    """Creates deliveries, reads them back for the log, and retries them by hand."""

    def __init__(self, store: JobStore, endpoints: EndpointStore) -> None:
        self.store = store
        self.endpoints = endpoints
        self.settings = store.settings

    async def create(
        self, endpoint: Endpoint, event_type: str, event_id: str, body: str, request_id: str | None
    ) -> bool:
        """Create the delivery of one event to one endpoint, its first attempt due after the
        schedule's first entry; False when it already exists (the event published again)."""
        job_id, webhook_id = delivery_id(event_id, endpoint.id)
        args = {
            "endpoint_id": endpoint.id,
            "event_type": event_type,
            "event_id": event_id,
            "webhook_id": webhook_id,
            "body": body,
        }
        enqueued = await self.store.create(
            kind=KIND,
            account=endpoint.account,
            args=args,
            job_id=job_id,
            request_id=request_id,
            delay_s=self.settings.webhook_retry_schedule[0],
            listing=endpoint_deliveries_key(endpoint.id),
        )
        return enqueued.record is not None

    async def publish(
        self,
        account: str,
        event_type: str,
        event_id: str,
        data: dict[str, Any],
        request_id: str | None = None,
    ) -> int:
        """Fan an event out to the account's enabled endpoints subscribed to it: one delivery
        each, made once however often the event is published. Returns how many are new."""
        body = json.dumps(
            {"type": event_type, "timestamp": rfc3339(now_ms()), "data": data},
            separators=(",", ":"),
        )
        created = 0
        for endpoint in await self.endpoints.list(account):
            if not endpoint.disabled and event_type in endpoint.events:
                created += await self.create(endpoint, event_type, event_id, body, request_id)
        return created

    async def get(self, delivery_id: str) -> Delivery | None:
        """The delivery with its attempts, or None (also for a string that is not one)."""
        if not DELIVERY_ID_PATTERN.fullmatch(delivery_id):
            return None
        record = await self.store.get(delivery_id)
        if record is None or record.kind != KIND:
            return None
        return Delivery.from_record(record)

    async def list(
        self, endpoint_id: str, limit: int, cursor: str | None
    ) -> tuple[list[Delivery], str | None]:
        """An endpoint's deliveries, newest first."""
        page: Page = await self.store.list_index(
            endpoint_deliveries_key(endpoint_id), limit=limit, cursor=cursor, kind=KIND
        )
        return [Delivery.from_record(r) for r in page.items], page.next_cursor

    async def retry(self, delivery: Delivery) -> None:
        """One more attempt now: a waiting delivery becomes due (its schedule goes on), an
        ended one gets one more attempt. 409 when its endpoint is disabled or deleted, or an
        attempt is running."""
        endpoint = await self.endpoints.get(delivery.endpoint_id)
        if endpoint is None or endpoint.disabled:
            raise Conflict("the delivery's endpoint is disabled or deleted")
        record = await self.store.get(delivery.id)
        if record is None:
            raise Conflict("the delivery has expired")
        if await self.store.run_again_now(record) == "running":
            raise Conflict("an attempt of this delivery is running; try again when it ends")

    async def end_pending(self, delivery_ids: list[str]) -> int:
        """Cancel the deliveries that still wait for an attempt (their endpoint is gone)."""
        ended = 0
        for record in await self.store.get_many(delivery_ids):
            if record.kind == KIND and not record.state.finished:
                ended += (await self.store.cancel(record)) == "cancelled"
        return ended


async def event_body(stored: str, presenter: JobPresenter) -> str:
    """The body one attempt sends: the stored event with its job presented now (an
    export's URL is presigned for this attempt, never stored)."""
    event = json.loads(stored)
    if not isinstance(event.get("data"), dict):
        return stored
    event["data"] = await presenter.present(event["data"])
    return json.dumps(event, separators=(",", ":"))


def _error_type(outcome: AttemptOutcome) -> str:
    """`error.type` of a failed attempt: the receiver's status, or why there was none."""
    if outcome.status_code is not None:
        return str(outcome.status_code)
    error = outcome.error or ""
    if error.startswith("refused"):
        return "refused"
    return "timeout" if error.startswith("no answer") else error.split(":", 1)[0]


async def deliver(run: JobRun, args: dict[str, Any]) -> dict[str, Any]:
    """One delivery attempt: POST the event, signed, to the endpoint.

    Retries: a failed attempt (an HTTP error, a redirect, a timeout, a refused address)
    is retried on WEBHOOK_RETRY_SCHEDULE, at least after the receiver's retry-after; an
    endpoint that was deleted or disabled, or that answers 410 Gone (which disables it),
    ends the delivery `failed`. An endpoint failing every attempt for
    WEBHOOK_DISABLE_AFTER_SECONDS is disabled.
    """
    deps, settings = run.deps, run.deps.settings
    endpoints = EndpointStore(deps.redis, settings)
    endpoint = await endpoints.get(args["endpoint_id"])
    if endpoint is None or endpoint.disabled:
        raise EndpointUnavailable("the endpoint is disabled or deleted")
    JOB_CONTEXT_VAR.set(
        {
            "delivery_id": run.job_id,
            "account": run.account,
            "endpoint_id": endpoint.id,
            "attempt": run.attempt,
        }
    )
    body = await event_body(args["body"], deps.presenter)
    with tracing.webhook_attempt(
        endpoint.url,
        {
            "longrun.webhook.endpoint_id": endpoint.id,
            "longrun.webhook.event_type": args["event_type"],
            "longrun.webhook.id": args["webhook_id"],
        },
    ) as traced:
        outcome = await attempt_delivery(
            deps.get(WebhookClient),
            endpoint.url,
            endpoints.signing_secrets(endpoint),
            args["webhook_id"],
            body,
            timeout_s=settings.webhook_timeout_seconds,
            allow_private=settings.webhook_allow_private_networks,
        )
        traced.set({"http.response.status_code": outcome.status_code})
        if not outcome.success:
            traced.fail(_error_type(outcome), outcome.error)
    run.note(**outcome.notes())
    log.info(
        "webhook attempt %d: %s",
        run.attempt,
        outcome.error or "delivered",
        extra={"status_code": outcome.status_code},
    )
    result = "succeeded" if outcome.success else "gone" if outcome.gone else "failed"
    metrics.WEBHOOK_ATTEMPTS.labels(result).inc()
    if outcome.latency_ms is not None:
        metrics.WEBHOOK_LATENCY.observe(outcome.latency_ms / 1000)
    if outcome.success:
        await endpoints.delivered(endpoint)
        return {"status_code": outcome.status_code}
    if outcome.gone:
        await endpoints.disable(endpoint, "the endpoint answered 410 Gone")
        raise EndpointGone("the endpoint answered 410 Gone; it is disabled")
    failing_since = await endpoints.failing_since(endpoint)
    if failing_since is None:
        raise EndpointUnavailable("the endpoint was deleted during the attempt")
    if now_ms() - failing_since >= settings.webhook_disable_after_seconds * 1000:
        days = settings.webhook_disable_after_seconds / 86400
        await endpoints.disable(endpoint, f"every attempt failed for {days:g} days")
        raise EndpointUnavailable(f"{outcome.error}; the endpoint failed for {days:g} days")
    raise DeliveryFailed(
        outcome.error or "the receiver refused it", retry_after=outcome.retry_after
    )
