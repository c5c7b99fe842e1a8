"""Public shapes shared by several routes: the job resource, pages, and the 202 answer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from jobs.records import Enqueued, JobRecord, JobStore

T = TypeVar("T")


def rfc3339(ms: int | None) -> str | None:
    """Epoch milliseconds as an RFC 3339 UTC timestamp."""
    if ms is None:
        return None
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class JobError(BaseModel):
    type: str
    message: str
    retryable: bool


class JobPublic(BaseModel):
    """The job resource."""

    id: str
    kind: str
    state: str
    attempt: int
    max_attempts: int
    progress: float
    stage: str | None = None
    created_at: str
    started_at: str | None
    finished_at: str | None
    next_attempt_at: str | None
    result: Any = None
    error: JobError | None = None
    replay_of: str | None = None
    cancel_requested_at: str | None = None
    attempts: list[dict[str, Any]] = []


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None


def attempt_public(entry: dict[str, Any]) -> dict[str, Any]:
    shown = {k: v for k, v in entry.items() if k != "worker"}
    for name in ("started_at", "finished_at"):
        if isinstance(shown.get(name), int):
            shown[name] = rfc3339(shown[name])
    return shown


def job_public(record: JobRecord) -> JobPublic:
    """The public view of a job record."""
    return JobPublic(
        id=record.id,
        kind=record.kind,
        state=record.state.value,
        attempt=record.attempt,
        max_attempts=record.max_attempts,
        progress=record.progress,
        stage=record.stage,
        created_at=rfc3339(record.created_at) or "",
        started_at=rfc3339(record.started_at),
        finished_at=rfc3339(record.finished_at),
        next_attempt_at=rfc3339(record.next_attempt_at),
        result=record.result,
        error=JobError(**record.error) if record.error else None,
        replay_of=record.replay_of,
        cancel_requested_at=rfc3339(record.cancel_requested_at),
        attempts=[attempt_public(a) for a in record.attempts],
    )


def poll_after_seconds(record: JobRecord, now_ms: int) -> int:
    """A polling hint for an unfinished job: its next attempt, else soon."""
    if record.next_attempt_at and record.next_attempt_at > now_ms:
        return max(1, min(60, round((record.next_attempt_at - now_ms) / 1000)))
    return 1 if record.state.value == "running" else 2


async def accepted(store: JobStore, enqueued: Enqueued) -> JSONResponse:
    """The 202 answer to an enqueueing POST, flagged when an Idempotency-Key replayed it."""
    record = await store.get(enqueued.job_id)
    headers = {"Location": f"/v1/jobs/{enqueued.job_id}", "Retry-After": "1"}
    if enqueued.replayed:
        headers["Idempotent-Replayed"] = "true"
    body = job_public(record).model_dump(mode="json") if record else {"id": enqueued.job_id}
    return JSONResponse(body, status_code=202, headers=headers)
