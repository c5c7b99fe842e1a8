"""Every API route as a `Call`: what to send and how to read the answer, without I/O.

Both clients turn a `Call` into requests (with retries) and a typed result, so a new route
is one function here and a one-line method on each client. An enqueueing POST gets its
Idempotency-Key here, once, so every retry of that call sends the same key.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx

from longrun_client._retry import parse_retry_after
from longrun_client.models import (
    BatchResult,
    DeadLetter,
    Document,
    Job,
    Page,
    Paused,
    Usage,
    WebhookDelivery,
    WebhookEndpoint,
)

T = TypeVar("T")

ExportFormat = Literal["zip", "ndjson"]
BatchMode = Literal["standard", "economy"]
JobState = Literal["queued", "running", "retrying", "succeeded", "failed", "cancelled"]
EventType = Literal[
    "analysis.completed",
    "analysis.failed",
    "analysis_batch.completed",
    "analysis_batch.failed",
    "export.completed",
    "export.failed",
]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call: the request to send (as often as retries need) and its reader."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: Mapping[str, str | int] = field(default_factory=dict)
    json: Any = None
    data: Mapping[str, str] | None = None
    files: Mapping[str, tuple[str, bytes, str]] | None = None
    idempotency_key: str | None = None

    @property
    def repeatable(self) -> bool:
        """True when sending it twice does what sending it once does: a GET, or a POST
        whose Idempotency-Key the API deduplicates."""
        return self.method == "GET" or self.idempotency_key is not None


def new_idempotency_key() -> str:
    """A fresh Idempotency-Key."""
    return str(uuid.uuid4())


def _segment(value: str) -> str:
    # An id is one path segment, whatever it holds ("../" included).
    return quote(value, safe="")


def _params(**values: str | int | None) -> dict[str, str | int]:
    return {k: v for k, v in values.items() if v is not None}


def read_job(response: httpx.Response) -> Job:
    """A job from an answer, with the answer's hints: the Idempotency-Key that was sent,
    whether the API replayed it (`Idempotent-Replayed`), and `Retry-After`."""
    return dataclasses.replace(
        Job.from_json(response.json()),
        idempotency_key=response.request.headers.get("idempotency-key"),
        replayed=response.headers.get("idempotent-replayed", "").lower() == "true",
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


def _page_of(item: Callable[[Any], T]) -> Callable[[httpx.Response], Page[T]]:
    return lambda response: Page.from_json(response.json(), item)


def _nothing(response: httpx.Response) -> None:
    return None


def _enqueue(path: str, body: Any, idempotency_key: str | None) -> Call[Job]:
    return Call(
        "POST", path, read_job, json=body, idempotency_key=idempotency_key or new_idempotency_key()
    )


# Documents


def create_document(user_id: str, text: str, title: str | None) -> Call[Document]:
    """`POST /v1/documents` with a JSON body."""
    body: dict[str, Any] = {"user_id": user_id, "text": text}
    if title is not None:
        body["title"] = title
    return Call("POST", "/v1/documents", lambda r: Document.from_json(r.json()), json=body)


def upload_document(
    user_id: str, content: bytes, filename: str, title: str | None, content_type: str
) -> Call[Document]:
    """`POST /v1/documents` as a multipart upload (`file` + `user_id`)."""
    fields = {"user_id": user_id} if title is None else {"user_id": user_id, "title": title}
    return Call(
        "POST",
        "/v1/documents",
        lambda r: Document.from_json(r.json()),
        data=fields,
        files={"file": (filename, content, content_type)},
    )


def get_document(document_id: str) -> Call[Document]:
    """`GET /v1/documents/{id}`."""
    path = f"/v1/documents/{_segment(document_id)}"
    return Call("GET", path, lambda r: Document.from_json(r.json()))


def delete_document(document_id: str) -> Call[None]:
    """`DELETE /v1/documents/{id}`."""
    return Call("DELETE", f"/v1/documents/{_segment(document_id)}", _nothing)


def create_analysis(
    document_id: str, instructions: str | None, idempotency_key: str | None
) -> Call[Job]:
    """`POST /v1/documents/{id}/analyses`."""
    body = {} if instructions is None else {"instructions": instructions}
    return _enqueue(f"/v1/documents/{_segment(document_id)}/analyses", body, idempotency_key)


# Analysis batches


def create_analysis_batch(
    document_ids: Sequence[str] | None,
    user_id: str | None,
    instructions: str | None,
    mode: BatchMode,
    idempotency_key: str | None,
) -> Call[Job]:
    """`POST /v1/analysis-batches`: the documents given, or every document of a user."""
    body: dict[str, Any] = {"mode": mode}
    if document_ids is not None:
        body["document_ids"] = list(document_ids)
    if user_id is not None:
        body["user_id"] = user_id
    if instructions is not None:
        body["instructions"] = instructions
    return _enqueue("/v1/analysis-batches", body, idempotency_key)


def list_batch_results(
    job_id: str, limit: int | None, cursor: str | None
) -> Call[Page[BatchResult]]:
    """`GET /v1/analysis-batches/{id}/results`, in the order the documents were given."""
    path = f"/v1/analysis-batches/{_segment(job_id)}/results"
    params = _params(limit=limit, cursor=cursor)
    return Call("GET", path, _page_of(BatchResult.from_json), params=params)


# Exports


def create_export(user_id: str, format: ExportFormat, idempotency_key: str | None) -> Call[Job]:
    """`POST /v1/exports`."""
    return _enqueue("/v1/exports", {"user_id": user_id, "format": format}, idempotency_key)


# Jobs


def get_job(job_id: str) -> Call[Job]:
    """`GET /v1/jobs/{id}`."""
    return Call("GET", f"/v1/jobs/{_segment(job_id)}", read_job)


def list_jobs(
    state: JobState | None, kind: str | None, limit: int | None, cursor: str | None
) -> Call[Page[Job]]:
    """`GET /v1/jobs`, newest first."""
    params = _params(state=state, kind=kind, limit=limit, cursor=cursor)
    return Call("GET", "/v1/jobs", _page_of(Job.from_json), params=params)


def cancel_job(job_id: str) -> Call[Job]:
    """`POST /v1/jobs/{id}/cancel`."""
    return Call("POST", f"/v1/jobs/{_segment(job_id)}/cancel", read_job)


def job_events_path(job_id: str) -> str:
    """The path of `GET /v1/jobs/{id}/events` (read as a stream, not as a `Call`)."""
    return f"/v1/jobs/{_segment(job_id)}/events"


# Webhooks


def create_webhook_endpoint(url: str, events: Sequence[str]) -> Call[WebhookEndpoint]:
    """`POST /v1/webhook-endpoints`."""
    body = {"url": url, "events": list(events)}
    return Call(
        "POST", "/v1/webhook-endpoints", lambda r: WebhookEndpoint.from_json(r.json()), json=body
    )


def list_webhook_endpoints() -> Call[Page[WebhookEndpoint]]:
    """`GET /v1/webhook-endpoints`."""
    return Call("GET", "/v1/webhook-endpoints", _page_of(WebhookEndpoint.from_json))


def get_webhook_endpoint(endpoint_id: str) -> Call[WebhookEndpoint]:
    """`GET /v1/webhook-endpoints/{id}`."""
    path = f"/v1/webhook-endpoints/{_segment(endpoint_id)}"
    return Call("GET", path, lambda r: WebhookEndpoint.from_json(r.json()))


def delete_webhook_endpoint(endpoint_id: str) -> Call[None]:
    """`DELETE /v1/webhook-endpoints/{id}`."""
    return Call("DELETE", f"/v1/webhook-endpoints/{_segment(endpoint_id)}", _nothing)


def rotate_webhook_secret(endpoint_id: str) -> Call[WebhookEndpoint]:
    """`POST /v1/webhook-endpoints/{id}/rotate-secret`."""
    path = f"/v1/webhook-endpoints/{_segment(endpoint_id)}/rotate-secret"
    return Call("POST", path, lambda r: WebhookEndpoint.from_json(r.json()))


def list_deliveries(
    endpoint_id: str, limit: int | None, cursor: str | None
) -> Call[Page[WebhookDelivery]]:
    """`GET /v1/webhook-endpoints/{id}/deliveries`, newest first."""
    path = f"/v1/webhook-endpoints/{_segment(endpoint_id)}/deliveries"
    params = _params(limit=limit, cursor=cursor)
    return Call("GET", path, _page_of(WebhookDelivery.from_json), params=params)


def retry_delivery(delivery_id: str) -> Call[WebhookDelivery]:
    """`POST /v1/webhook-deliveries/{id}/retry`."""
    path = f"/v1/webhook-deliveries/{_segment(delivery_id)}/retry"
    return Call("POST", path, lambda r: WebhookDelivery.from_json(r.json()))


# Usage


def get_usage() -> Call[Usage]:
    """`GET /v1/usage`."""
    return Call("GET", "/v1/usage", lambda r: Usage.from_json(r.json()))


# Operators (an admin key)


def list_dead_letters(
    kind: str | None, account: str | None, limit: int | None, cursor: str | None
) -> Call[Page[DeadLetter]]:
    """`GET /v1/dead-letters`, newest failure first."""
    params = _params(kind=kind, account=account, limit=limit, cursor=cursor)
    return Call("GET", "/v1/dead-letters", _page_of(DeadLetter.from_json), params=params)


def get_dead_letter(job_id: str) -> Call[DeadLetter]:
    """`GET /v1/dead-letters/{id}`."""
    path = f"/v1/dead-letters/{_segment(job_id)}"
    return Call("GET", path, lambda r: DeadLetter.from_json(r.json()))


def replay_dead_letter(job_id: str) -> Call[Job]:
    """`POST /v1/dead-letters/{id}/replay`: a new job (409 once replayed)."""
    return Call("POST", f"/v1/dead-letters/{_segment(job_id)}/replay", read_job)


def create_canary(idempotency_key: str | None) -> Call[Job]:
    """`POST /v1/canaries`."""
    return _enqueue("/v1/canaries", None, idempotency_key)


def _read_paused(response: httpx.Response) -> Paused:
    return Paused.from_json(response.json())


def get_paused() -> Call[Paused]:
    """`GET /v1/queues/paused`."""
    return Call("GET", "/v1/queues/paused", _read_paused)


def queue_action(
    what: Literal["kinds", "accounts"], name: str, action: Literal["pause", "resume"]
) -> Call[Paused]:
    """`POST /v1/queues/{kinds|accounts}/{name}/{pause|resume}`."""
    return Call("POST", f"/v1/queues/{what}/{_segment(name)}/{action}", _read_paused)
