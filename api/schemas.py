"""Public shapes shared by several routes: the job resource, pages, and the 202 answer."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from jobs.engine.presenter import JobPresenter, attempt_resource, rfc3339
from jobs.engine.records import Enqueued, JobRecord
from jobs.engine.store import JobStore

__all__ = ["attempt_resource", "rfc3339"]

T = TypeVar("T")


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


async def job_public(record: JobRecord, presenter: JobPresenter) -> JobPublic:
    """The public view of a job record (an export's download URL presigned now)."""
    return JobPublic(**await presenter.resource(record))


def poll_after_seconds(record: JobRecord, now_ms: int) -> int:
    """A polling hint for an unfinished job: its next attempt, else soon."""
    if record.next_attempt_at and record.next_attempt_at > now_ms:
        return max(1, min(60, round((record.next_attempt_at - now_ms) / 1000)))
    return 1 if record.state.value == "running" else 2


async def accepted(store: JobStore, presenter: JobPresenter, enqueued: Enqueued) -> JSONResponse:
    """The 202 answer to an enqueueing POST, flagged when an Idempotency-Key replayed it."""
    # A new job's record comes back from the enqueue; only a replay reads it again.
    record = enqueued.record or await store.get(enqueued.job_id)
    headers = {"Location": f"/v1/jobs/{enqueued.job_id}", "Retry-After": "1"}
    if enqueued.replayed:
        headers["Idempotent-Replayed"] = "true"
    if record is None:
        body: dict[str, Any] = {"id": enqueued.job_id}
    elif enqueued.record is not None:
        # A job made just now: its resource is already plain JSON (no result, no error),
        # so the JobPublic model (the bulk of the answer's CPU) is skipped.
        body = await presenter.resource(record)
    else:
        body = (await job_public(record, presenter)).model_dump(mode="json")
    return JSONResponse(body, status_code=202, headers=headers)
