"""The API's resources as small typed objects.

Each keeps the whole JSON object it was read from in `raw`, so members a newer API adds
are not lost (`job.raw["new_member"]`, or `job.extra` for only those this client does not
know); a member the API leaves out reads as its default instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from longrun_client._fields import (
    Resource,
    integer,
    json_object,
    objects,
    parse_datetime,
    required_text,
    text,
)
from longrun_client.errors import InvalidResponse

T = TypeVar("T")

FINISHED_STATES = frozenset({"succeeded", "failed", "cancelled"})
"""Job states that do not change any more."""


@dataclass(frozen=True)
class JobError(Resource):
    """Why a job failed: `type` (e.g. `claude_bad_request`), `message`, and whether the
    failure was `retryable`."""

    type: str
    message: str
    retryable: bool
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> JobError | None:
        """The error of a job resource, or None."""
        if not isinstance(data, dict):
            return None
        return cls(
            type=text(data, "type") or "",
            message=text(data, "message") or "",
            retryable=bool(data.get("retryable", False)),
            raw=data,
        )


@dataclass(frozen=True)
class Job(Resource):
    """A job: an export, an analysis or any other kind of long-running operation.

    The last three attributes come from the answer rather than the resource:
    `idempotency_key` is the key an enqueueing call sent (the caller's or one the client
    made; send it again to get this same job), `replayed` is True when the API answered
    a repeated key with the job it already had, and `retry_after` is the API's hint of
    when to look again.
    """

    id: str
    kind: str
    state: str
    attempt: int = 0
    max_attempts: int = 0
    progress: float = 0.0
    stage: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    next_attempt_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    result: Any = None
    error: JobError | None = None
    replay_of: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    idempotency_key: str | None = field(default=None, compare=False)
    replayed: bool = field(default=False, compare=False)
    retry_after: float | None = field(default=None, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        """True once the job is `succeeded`, `failed` or `cancelled`."""
        return self.state in FINISHED_STATES

    @property
    def succeeded(self) -> bool:
        """True when the job succeeded."""
        return self.state == "succeeded"

    @classmethod
    def from_json(cls, data: Any) -> Job:
        """A job from its JSON resource."""
        data = json_object(data)
        progress = data.get("progress")
        return cls(
            id=required_text(data, "id"),
            kind=text(data, "kind") or "",
            state=text(data, "state") or "",
            attempt=integer(data, "attempt"),
            max_attempts=integer(data, "max_attempts"),
            progress=float(progress) if isinstance(progress, int | float) else 0.0,
            stage=text(data, "stage"),
            created_at=parse_datetime(data.get("created_at")),
            started_at=parse_datetime(data.get("started_at")),
            finished_at=parse_datetime(data.get("finished_at")),
            next_attempt_at=parse_datetime(data.get("next_attempt_at")),
            cancel_requested_at=parse_datetime(data.get("cancel_requested_at")),
            result=data.get("result"),
            error=JobError.from_json(data.get("error")),
            replay_of=text(data, "replay_of"),
            attempts=objects(data.get("attempts")),
            raw=data,
        )


@dataclass(frozen=True)
class LatestAnalysis(Resource):
    """A document's latest analysis: its job, the job's state, and (once it succeeded)
    the analysis text and the model that wrote it."""

    job_id: str
    state: str
    analysis: str | None = None
    model: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> LatestAnalysis | None:
        """The latest analysis of a document resource, or None."""
        if not isinstance(data, dict):
            return None
        return cls(
            job_id=text(data, "job_id") or "",
            state=text(data, "state") or "",
            analysis=text(data, "analysis"),
            model=text(data, "model"),
            raw=data,
        )


@dataclass(frozen=True)
class Document(Resource):
    """A stored document (its text is not part of the resource)."""

    id: str
    user_id: str
    title: str | None = None
    size_bytes: int = 0
    created_at: datetime | None = None
    latest_analysis: LatestAnalysis | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Document:
        """A document from its JSON resource."""
        data = json_object(data)
        return cls(
            id=required_text(data, "id"),
            user_id=text(data, "user_id") or "",
            title=text(data, "title"),
            size_bytes=integer(data, "size_bytes"),
            created_at=parse_datetime(data.get("created_at")),
            latest_analysis=LatestAnalysis.from_json(data.get("latest_analysis")),
            raw=data,
        )


@dataclass(frozen=True)
class WebhookEndpoint(Resource):
    """A registered webhook endpoint. `secret` (`whsec_...`) is set only in the answers
    that create or rotate it: keep it then, the API never shows it again."""

    id: str
    url: str
    events: list[str] = field(default_factory=list)
    created_at: datetime | None = None
    disabled: bool = False
    disabled_at: datetime | None = None
    disabled_reason: str | None = None
    secret: str | None = field(default=None, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> WebhookEndpoint:
        """An endpoint from its JSON resource."""
        data = json_object(data)
        events = data.get("events")
        return cls(
            id=required_text(data, "id"),
            url=text(data, "url") or "",
            events=[e for e in events if isinstance(e, str)] if isinstance(events, list) else [],
            created_at=parse_datetime(data.get("created_at")),
            disabled=bool(data.get("disabled", False)),
            disabled_at=parse_datetime(data.get("disabled_at")),
            disabled_reason=text(data, "disabled_reason"),
            secret=text(data, "secret"),
            raw=data,
        )


@dataclass(frozen=True)
class DeliveryAttempt(Resource):
    """One attempt to deliver a webhook event: when, the receiver's status (None when it
    did not answer), how long it took, the error, and the start of its answer."""

    at: datetime | None = None
    attempt: int | None = None
    status_code: int | None = None
    latency_ms: int | None = None
    error: str | None = None
    response_excerpt: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeliveryAttempt:
        """An attempt from its JSON object."""
        return cls(
            at=parse_datetime(data.get("at")),
            attempt=integer(data, "attempt", None),
            status_code=integer(data, "status_code", None),
            latency_ms=integer(data, "latency_ms", None),
            error=text(data, "error"),
            response_excerpt=text(data, "response_excerpt"),
            raw=data,
        )


@dataclass(frozen=True)
class WebhookDelivery(Resource):
    """One event to one endpoint, with its attempts, newest first. `webhook_id` is the
    `webhook-id` header the receiver sees on every attempt."""

    id: str
    endpoint_id: str
    event_type: str
    webhook_id: str
    state: str
    event_id: str | None = None
    created_at: datetime | None = None
    next_attempt_at: datetime | None = None
    attempts: list[DeliveryAttempt] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> WebhookDelivery:
        """A delivery from its JSON resource."""
        data = json_object(data)
        return cls(
            id=required_text(data, "id"),
            endpoint_id=text(data, "endpoint_id") or "",
            event_type=text(data, "event_type") or "",
            webhook_id=text(data, "webhook_id") or "",
            state=text(data, "state") or "",
            event_id=text(data, "event_id"),
            created_at=parse_datetime(data.get("created_at")),
            next_attempt_at=parse_datetime(data.get("next_attempt_at")),
            attempts=[DeliveryAttempt.from_json(a) for a in objects(data.get("attempts"))],
            raw=data,
        )


@dataclass(frozen=True)
class DeadLetter(Resource):
    """A job that failed for good (operators only): its arguments, error, traceback and
    every attempt; `replayed_as` is the id of the job that replayed it, if any."""

    id: str
    kind: str
    account: str
    arguments: dict[str, Any] = field(default_factory=dict)
    error: JobError | None = None
    traceback: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    created_at: datetime | None = None
    failed_at: datetime | None = None
    replayed_as: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> DeadLetter:
        """A dead letter from its JSON resource."""
        data = json_object(data)
        arguments = data.get("arguments")
        return cls(
            id=required_text(data, "id"),
            kind=text(data, "kind") or "",
            account=text(data, "account") or "",
            arguments=arguments if isinstance(arguments, dict) else {},
            error=JobError.from_json(data.get("error")),
            traceback=text(data, "traceback"),
            attempts=objects(data.get("attempts")),
            created_at=parse_datetime(data.get("created_at")),
            failed_at=parse_datetime(data.get("failed_at")),
            replayed_as=text(data, "replayed_as"),
            raw=data,
        )


@dataclass(frozen=True)
class ModelUsage(Resource):
    """Claude tokens one account used with one model."""

    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelUsage:
        """Usage from its JSON object."""
        return cls(
            model=text(data, "model") or "",
            input_tokens=integer(data, "input_tokens"),
            output_tokens=integer(data, "output_tokens"),
            cache_read_input_tokens=integer(data, "cache_read_input_tokens"),
            cache_creation_input_tokens=integer(data, "cache_creation_input_tokens"),
            raw=data,
        )


@dataclass(frozen=True)
class Usage(Resource):
    """The account's Claude token usage, one entry per model."""

    data: list[ModelUsage] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Usage:
        """Usage from the answer of `GET /v1/usage`."""
        data = json_object(data)
        return cls(data=[ModelUsage.from_json(m) for m in objects(data.get("data"))], raw=data)


@dataclass(frozen=True)
class BatchResult(Resource):
    """One document's outcome in an analysis batch: `succeeded` with its `analysis`,
    `model` and token `usage`, `failed` with its `error`, or `pending` (`cancelled` once
    the batch was)."""

    document_id: str
    state: str
    analysis: str | None = None
    model: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    error: JobError | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> BatchResult:
        """A document's entry of `GET /v1/analysis-batches/{id}/results`."""
        data = json_object(data)
        usage = data.get("usage")
        return cls(
            document_id=required_text(data, "document_id"),
            state=text(data, "state") or "",
            analysis=text(data, "analysis"),
            model=text(data, "model"),
            usage={k: integer(usage, k) for k in usage} if isinstance(usage, dict) else {},
            error=JobError.from_json(data.get("error")),
            raw=data,
        )


@dataclass(frozen=True)
class Paused(Resource):
    """What is paused (operators): job kinds and accounts whose jobs wait, none starting."""

    kinds: list[str] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Paused:
        """The answer of `GET /v1/queues/paused` and of every pause and resume."""
        data = json_object(data)
        return cls(
            kinds=[k for k in data.get("kinds") or [] if isinstance(k, str)],
            accounts=[a for a in data.get("accounts") or [] if isinstance(a, str)],
            raw=data,
        )


@dataclass(frozen=True)
class Page(Resource, Generic[T]):
    """One page of a list: its items and the cursor of the next page (None on the last)."""

    data: list[T]
    next_cursor: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any, item: Callable[[Any], T]) -> Page[T]:
        """A page whose items are read with `item`."""
        data = json_object(data)
        items = data.get("data")
        if not isinstance(items, list):
            raise InvalidResponse("the answer has no 'data' list")
        return cls(data=[item(i) for i in items], next_cursor=text(data, "next_cursor"), raw=data)
